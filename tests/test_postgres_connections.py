"""Connections and migrations on PostgreSQL: hosts starting together on an empty
database, a run process on one connection, a server with fewer connections than
runs, and the agent's default limit.

Each "host" is a process with its own ORCHESTRATOR_HOME; the server is the
suite's private PostgreSQL, or one of this module's with a small
max_connections.
"""

import json
import subprocess
import sys
import time

import pytest
from helpers import ROOT, new_database, private_postgres, service_env

psycopg2 = pytest.importorskip("psycopg2")

OPEN_STORE_WHEN_TOLD = """
import os, sys, time
from pathlib import Path
from orchestrator.store import Store
Path(sys.argv[1]).write_text("ready")
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
Store.open()
"""

WAITING_FLOW = """
import os, time
from pathlib import Path
from orchestrator import Flow, task, get_logger

@task
def wait_for_go():
    get_logger().info("waiting for go")
    Path(os.environ["READY_FILE"]).write_text("ready")
    while not Path(os.environ["GO_FILE"]).exists():
        time.sleep(0.02)
    return 1

with Flow("waiter") as flow:
    wait_for_go()
"""

WORK_FLOW = """
import time
from orchestrator import Flow, task, get_logger

@task
def work():
    get_logger().info("working")
    time.sleep(1.0)
    return 42

with Flow("work") as flow:
    work()
"""


def _env(home, url, **extra):
    env = service_env(home)
    env["ORCHESTRATOR_DATABASE_URL"] = url
    env.update(extra)
    return env


def _orchestrator(home, url, *args, timeout=60, **extra):
    result = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                            env=_env(home, url, **extra), cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def _query(url, sql, params=()):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def _wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- a server with few connections ---------------------------------------------------
SMALL_MAX_CONNECTIONS = 12


@pytest.fixture(scope="module")
def small_postgres():
    """A private PostgreSQL with max_connections = SMALL_MAX_CONNECTIONS (and the
    default 3 of them reserved for superusers)."""
    with private_postgres(f"max_connections={SMALL_MAX_CONNECTIONS}",
                          prefix="orchestrator-test-small-postgres-") as url:
        yield url


@pytest.fixture
def small_postgres_url(small_postgres):
    return new_database(small_postgres)


# -- tests ------------------------------------------------------------------------------
def test_thirty_hosts_starting_together_on_an_empty_database_all_start(postgres_url,
                                                                       tmp_path):
    from orchestrator.store.db import MIGRATIONS

    go = tmp_path / "go"
    hosts = []
    for number in range(30):
        home = tmp_path / f"host-{number}"
        home.mkdir()
        ready = tmp_path / f"ready-{number}"
        hosts.append((ready, subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE_WHEN_TOLD, str(ready), str(go)],
            env=_env(home, postgres_url), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)))
    try:
        _wait_for(lambda: all(ready.exists() or proc.poll() is not None
                              for ready, proc in hosts), "30 processes to be ready")
        go.write_text("go")
        results = [(proc.wait(60), proc.stderr.read()) for _, proc in hosts]
    finally:
        for _, proc in hosts:
            if proc.poll() is None:
                proc.kill()

    failed = [(code, err) for code, err in results if code != 0 or "Traceback" in err]
    assert not failed, f"{len(failed)} of 30 failed; the first: {failed[0]}"
    rows = _query(postgres_url, "SELECT version, count(*) FROM schema_version "
                                "GROUP BY version ORDER BY version")
    assert rows == [(version, 1) for version, _ in MIGRATIONS]


def test_a_run_process_holds_one_connection(postgres_url, tmp_path):
    home = tmp_path / "host"
    home.mkdir()
    flows = tmp_path / "waiter.py"
    flows.write_text(WAITING_FLOW)
    _orchestrator(home, postgres_url, "project", "create", "p")
    _orchestrator(home, postgres_url, "register", "-p", "p", flows)
    run_id = json.loads(_orchestrator(home, postgres_url, "run", "p/waiter", "--json"))["id"]
    ready, go = tmp_path / "ready", tmp_path / "go"
    execute = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "execute", str(run_id)],
        env=_env(home, postgres_url, READY_FILE=str(ready), GO_FILE=str(go),
                 ORCHESTRATOR__SERVICES__HEARTBEAT_INTERVAL="0.1"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: ready.exists() or execute.poll() is not None, "the task to start")
        # Every thread of the run has used the store: the writer (the task's log
        # line is stored) and the heartbeat (a beat after the start).
        _wait_for(lambda: _query(postgres_url, "SELECT count(*) FROM log WHERE message = "
                                 "'waiting for go'")[0][0] == 1, "the log line")
        _wait_for(lambda: _query(postgres_url, "SELECT heartbeat > start_time FROM flow_run "
                                 "WHERE id = %s", (run_id,))[0][0], "a heartbeat")
        connections = _query(postgres_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                             "datname = current_database() AND pid <> pg_backend_pid()")
        go.write_text("go")
        out, err = execute.communicate(timeout=60)
    finally:
        if execute.poll() is None:
            execute.kill()
    assert execute.returncode == 0, (out, err)
    assert connections == [(1,)]


def test_more_runs_than_connections_all_succeed_and_the_shortage_is_said(
        small_postgres_url, tmp_path):
    home = tmp_path / "host"
    home.mkdir()
    flows = tmp_path / "work.py"
    flows.write_text(WORK_FLOW)
    url = small_postgres_url
    _orchestrator(home, url, "project", "create", "p")
    _orchestrator(home, url, "register", "-p", "p", flows)
    runs = 14
    ids = [json.loads(_orchestrator(home, url, "run", "p/work", "--json"))["id"]
           for _ in range(runs)]
    # The test's own connection, taken before the runs take the rest.
    watcher = psycopg2.connect(url)
    watcher.autocommit = True
    agent_log = tmp_path / "agent.stderr"
    with open(agent_log, "w") as err:
        agent = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "agent", "--limit", str(runs),
             "--poll-interval", "0.2"],
            env=_env(home, url), cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err)
    try:
        def states():
            with watcher.cursor() as cur:
                cur.execute("SELECT id, state FROM flow_run")
                return dict(cur.fetchall())

        _wait_for(lambda: all(s in ("Success", "Failed", "Cancelled", "TimedOut")
                              for s in states().values()), "every run to end", timeout=120)
    finally:
        agent.terminate()
        agent.wait(30)
    ended = states()
    with watcher.cursor() as cur:
        cur.execute("SELECT id, message FROM flow_run WHERE state <> 'Success'")
        why = cur.fetchall()
    watcher.close()
    assert ended == {run_id: "Success" for run_id in ids}, why
    # More run processes than the server had connections: some waited, and said why.
    said = agent_log.read_text() + "".join(
        p.read_text() for p in (home / "logs").glob("run-*.stderr"))
    assert "too many clients" in said
    assert "Traceback" not in said


def test_an_agent_without_a_limit_runs_what_the_database_has_connections_for(
        small_postgres_url, log_records):
    from orchestrator.daemons.agent import Agent
    from orchestrator.store import Store

    store = Store.open(url=small_postgres_url)
    agent = Agent(store, name="fits")
    agent.run_once()

    limit = agent.fitting_limit()
    (max_connections,), = _query(small_postgres_url, "SHOW max_connections")
    (reserved,), = _query(small_postgres_url, "SHOW superuser_reserved_connections")
    assert int(max_connections) == SMALL_MAX_CONNECTIONS
    # This process's one connection and the query's are in use; room is kept for
    # other clients (the CLI, another agent).
    assert 1 <= limit < SMALL_MAX_CONNECTIONS - int(reserved) - 1
    said = [m for m in log_records.messages("orchestrator.daemons.agent")
            if "max_connections" in m]
    assert len(said) == 1 and f"at most {limit} flow runs at once" in said[0], said
    agent.run_once()
    assert len([m for m in log_records.messages("orchestrator.daemons.agent")
                if "max_connections" in m]) == 1
    store.close()


def test_an_agent_on_sqlite_keeps_its_default(home):
    from orchestrator.daemons.agent import Agent
    from orchestrator.store import Store

    store = Store.open()
    assert Agent(store, name="local").fitting_limit() is None
    store.close()


def test_an_agent_started_without_a_limit_says_the_one_it_took(small_postgres_url,
                                                               tmp_path):
    home = tmp_path / "host"
    home.mkdir()
    err_path = tmp_path / "agent.stderr"
    with open(err_path, "w") as err:
        agent = subprocess.Popen([sys.executable, "-m", "orchestrator", "agent"],
                                 env=_env(home, small_postgres_url), cwd=ROOT,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err)
    try:
        _wait_for(lambda: "started" in err_path.read_text() or agent.poll() is not None,
                  "the agent's banner")
    finally:
        agent.terminate()
        agent.wait(30)
    said = err_path.read_text()
    assert said.count("(what the database has connections for)") == 1, said
    assert "Traceback" not in said


def test_a_command_on_a_server_with_no_free_connection_says_so_and_exits_3(
        small_postgres_url, tmp_path):
    home = tmp_path / "host"
    home.mkdir()
    _orchestrator(home, small_postgres_url, "project", "create", "p")
    taken = []
    try:
        while True:  # every connection the server has, superusers' too
            try:
                taken.append(psycopg2.connect(small_postgres_url))
            except psycopg2.OperationalError:
                break
        result = subprocess.run([sys.executable, "-m", "orchestrator", "flows"],
                                env=_env(home, small_postgres_url), cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        for conn in taken:
            conn.close()
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no free connection" in lines[0], result.stderr
    assert "max_connections" in lines[0]
