"""The doorbell: an agent in another process starts a run created here at once,
not at its next poll (a file beside the SQLite database; LISTEN/NOTIFY on
PostgreSQL)."""

import os
import subprocess
import sys
import time

import peewee
import pytest
from helpers import ROOT, register_flows, service_env

from orchestrator import service
from orchestrator.store import Store
from orchestrator.store.doorbell import Listener, ring

FLOWS = '''
from orchestrator import Flow, task
from orchestrator.storage import Script

@task
def hello():
    return "hello"

with Flow("hello", storage=Script(__file__)) as hello_flow:
    hello()
'''

LONG_POLL = "600"  # the agent would look again in ten minutes: only the bell can wake it


@pytest.fixture(params=["sqlite", "postgres"])
def bell_store(request, home, tmp_path):
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    store = Store.open(url=url)
    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    register_flows(store, path)
    yield store
    store.close()


def test_a_listener_hears_a_ring_and_only_then(bell_store):
    listener = Listener(bell_store.db)
    try:
        assert listener.wait(0.05) is False
        service.create_flow_run(bell_store, "hello")
        assert listener.wait(5.0) is True
        assert listener.wait(0.05) is False  # heard once
        if isinstance(bell_store.db, peewee.SqliteDatabase):
            ring(bell_store.db)  # by hand (PostgreSQL rings from its trigger only)
            assert listener.wait(5.0) is True
    finally:
        listener.close()


def test_an_agent_in_another_process_starts_a_run_created_here_at_once(bell_store, home):
    env = service_env(home)
    if bell_store.url:
        env["ORCHESTRATOR_DATABASE_URL"] = bell_store.url
    agent = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "agent", "--poll-interval", LONG_POLL,
         "--no-hostname-label"], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not bell_store.list_agents():  # registered: its first look is done
            assert agent.poll() is None, agent.stderr.read()
            assert time.monotonic() < deadline, "the agent never registered"
            time.sleep(0.05)
        time.sleep(0.5)  # its doorbell listener is up

        created = time.monotonic()
        run_id = service.create_flow_run(bell_store, "hello")["id"]
        while bell_store.get_flow_run(run_id)["state"] != "Success":
            assert time.monotonic() - created < 20, bell_store.get_flow_run(run_id)
            time.sleep(0.02)
    finally:
        agent.terminate()
        agent.wait(30)


def test_a_run_scheduled_again_rings_too(bell_store):
    run_id = service.create_flow_run(bell_store, "hello")["id"]
    attempt = bell_store.claim_run(run_id, "someone")
    listener = Listener(bell_store.db)
    try:
        assert listener.wait(0.05) is False
        assert bell_store.return_unstarted(run_id, attempt, "Scheduled again: a test")
        assert listener.wait(5.0) is True
    finally:
        listener.close()


def test_the_sqlite_bell_is_a_file_beside_the_database(home):
    store = Store.open()
    try:
        bell = store.db.database + ".due"
        ring(store.db)
        first = os.stat(bell).st_mtime_ns
        time.sleep(0.01)
        ring(store.db)
        assert os.stat(bell).st_mtime_ns > first
    finally:
        store.close()


def test_a_postgresql_database_of_an_earlier_version_gets_its_bell(home, postgres_url):
    from orchestrator.store import db as store_db

    store = Store.open(url=postgres_url)
    store.db.execute_sql('DROP TRIGGER flow_run_due ON "flow_run"')
    store.db.execute_sql("DELETE FROM schema_version WHERE version = 11")
    store.close()
    store_db._open.pop(postgres_url, None)  # as a process that opens it anew

    store = Store.open(url=postgres_url)
    try:
        triggers = store.db.execute_sql(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall()
        assert triggers == [("flow_run_due",)]
    finally:
        store.close()


@pytest.mark.parametrize("kernel", [True, False], ids=["inotify", "looking"])
def test_the_sqlite_listener_is_told_by_the_kernel_or_else_looks(home, monkeypatch, kernel):
    from orchestrator.store import doorbell

    if not kernel:
        monkeypatch.setattr(doorbell, "_watch", lambda path: None)
    store = Store.open()
    listener = Listener(store.db)
    try:
        assert (listener._notify is not None) is (kernel and sys.platform == "linux")
        assert listener.wait(0.05) is False
        ring(store.db)
        assert listener.wait(5.0) is True
        assert listener.wait(0.05) is False
        os.unlink(store.db.database + ".due")  # the file goes (and comes back)
        listener.wait(0.05)
        ring(store.db)
        assert listener.wait(5.0) is True
    finally:
        listener.close()
        store.close()
