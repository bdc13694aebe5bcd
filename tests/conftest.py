"""Shared fixtures: a temporary ORCHESTRATOR_HOME, and captured run log records."""

import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fresh ORCHESTRATOR_HOME for every test; no ORCHESTRATOR__* overrides leak in."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(path))
    for name in list(__import__("os").environ):
        if name.startswith("ORCHESTRATOR__"):
            monkeypatch.delenv(name)
    from orchestrator.engine import run_logging

    run_logging.configure_logging()
    yield path
    run_logging.configure_logging()


class RecordList(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, logger_prefix=""):
        return [r.getMessage() for r in self.records if r.name.startswith(logger_prefix)]


@pytest.fixture
def log_records():
    """Every record that reaches the `orchestrator` logger (and its children)."""
    handler = RecordList()
    root = logging.getLogger("orchestrator")
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture
def python():
    """The interpreter running the tests, for subprocesses."""
    return sys.executable


# -- PostgreSQL ---------------------------------------------------------------
def _postgres_bin():
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server for the session (or ORCHESTRATOR_TEST_POSTGRES_URL).

    scripts/test installs PostgreSQL where it can (as root, with apt-get).
    """
    import os
    import pwd
    import shutil
    import socket
    import subprocess

    url = os.environ.get("ORCHESTRATOR_TEST_POSTGRES_URL")
    if url:
        yield url.rstrip("/")
        return
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed here and cannot be installed without "
                    "root; set ORCHESTRATOR_TEST_POSTGRES_URL to a server to run these")
    import tempfile

    # Its own directory: pytest's temp directories are private to this user,
    # and the server runs as the postgres user.
    base = Path(tempfile.mkdtemp(prefix="orchestrator-test-postgres-"))
    data = base / "data"
    prefix = []
    os.chmod(base, 0o755)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        data.mkdir()
        shutil.chown(data, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(prefix + [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                             "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run(prefix + [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l",
                             str(data / "server.log"), "-o",
                             f"-p {port} -k {data} -c listen_addresses=127.0.0.1 "
                             "-c fsync=off -c synchronous_commit=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(prefix + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                                 "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the test server."""
    import uuid

    import psycopg2

    name = f"test_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(f"{postgres_server}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{postgres_server}/{name}"


@pytest.fixture
def registered_store(home, tmp_path):
    """`registered_store(source)`: a Store whose project "p" holds every flow
    defined in the flow file `source` (written to tmp_path)."""
    from orchestrator import service
    from orchestrator.flow_files import load_flows_from_file
    from orchestrator.store import Store

    opened = []

    def make(source, filename="flows_under_test.py"):
        path = tmp_path / filename
        path.write_text(source)
        store = Store.open()
        store.create_project("p")
        for flow in load_flows_from_file(path).values():
            service.register_flow(store, flow, "p")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
