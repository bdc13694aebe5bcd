"""Shared fixtures and hooks: a temporary ORCHESTRATOR_HOME (`home`), captured
log records, `orchestrator up` / `orchestrator server` subprocesses, PostgreSQL,
the stores tests start from (`store`, `any_store`, `registered_store`) and a
`clock`. Plain helpers live in helpers.py."""

import logging
import os
import sys

import pytest
from helpers import (Clock, RecordList, ServiceProcess, new_database, private_postgres,
                     register_flows)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fresh ORCHESTRATOR_HOME for every test; no ORCHESTRATOR__* overrides leak in."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(path))
    for name in list(os.environ):
        if name.startswith("ORCHESTRATOR__"):
            monkeypatch.delenv(name)
    from orchestrator.engine import run_logging

    run_logging.configure_logging()
    yield path
    run_logging.configure_logging()


@pytest.fixture
def log_records():
    """Every record that reaches the `orchestrator` logger (and its children)."""
    handler = RecordList()
    root = logging.getLogger("orchestrator")
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


# -- orchestrator processes --------------------------------------------------------
@pytest.fixture
def start_service(tmp_path):
    """`start_service(command, *args, home=None)`: a `ServiceProcess` with its
    output in tmp_path (not yet waited for); all are killed at the end."""
    started = []

    def start(command, *args, home=None):
        process = ServiceProcess(command, *args, log_dir=tmp_path, home=home,
                                 name=f"{command}-{len(started)}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def python():
    """The interpreter running the tests, for subprocesses."""
    return sys.executable


# -- PostgreSQL ---------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server for the session (or ORCHESTRATOR_TEST_POSTGRES_URL).

    scripts/test installs PostgreSQL where it can (as root, with apt-get).
    """
    url = os.environ.get("ORCHESTRATOR_TEST_POSTGRES_URL")
    if url:
        yield url.rstrip("/")
        return
    with private_postgres() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the test server."""
    return new_database(postgres_server)


# -- stores -------------------------------------------------------------------
@pytest.fixture
def store(home):
    """A Store over the test's home with a project "etl"; `any_store` is one on each
    database, and a module that needs flows registered names its own fixture
    (built on `registered_store`) for what it holds."""
    from orchestrator.store import Store

    s = Store.open()
    s.create_project("etl")
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, home):
    """A Store with no project yet, once on each database (SQLite, then
    PostgreSQL): the test runs on both."""
    from orchestrator.store import Store

    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    s = Store.open(url=url)
    yield s
    s.close()


@pytest.fixture
def registered_store(home, tmp_path):
    """`registered_store(source)`: a Store whose project "p" holds every flow
    defined in the flow file `source` (written to tmp_path)."""
    from orchestrator.store import Store

    opened = []

    def make(source, filename="flows_under_test.py"):
        path = tmp_path / filename
        path.write_text(source)
        store = Store.open()
        register_flows(store, path)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


# -- time ---------------------------------------------------------------------------
@pytest.fixture
def clock():
    """A `Clock` at 2024-05-01 06:00 UTC that moves only by `clock.advance(seconds)`:
    pass `now=clock.now` to a component's `run_once`."""
    return Clock()


@pytest.fixture(params=["warm", "fresh"])
def start_mode(request, home):
    """The test runs twice: run processes forked warm (the default), and fresh
    interpreters (`[services] warm_starts = false`); both must behave alike.
    A test file takes it for all its tests with
    `pytestmark = pytest.mark.usefixtures("start_mode")`."""
    if request.param == "fresh":
        with open(home / "config.toml", "a") as fh:
            fh.write("[services]\nwarm_starts = false\n")
    return request.param
