"""One scheduler and one reaper per database, and a pause no tick undoes.

Several "hosts" (processes with their own ORCHESTRATOR_HOME) share one
PostgreSQL database: a session-level advisory lock elects one scheduler and
one reaper among them, and another process takes over when the leader dies.
Before this, leadership was a file lock in each home, so every host's
scheduler and reaper acted; and a tick that had read a flow as scheduled
re-created the future runs a concurrent `schedule pause` had just deleted.
"""

import os
import random
import signal
import socket
import threading
import time
from datetime import datetime

import pytest
from helpers import register_flows, start_run

from orchestrator import Flow, Parameter, service, task
from orchestrator.schedules import CronSchedule
from orchestrator.daemons.leadership import Leadership
from orchestrator.daemons.scheduler import Scheduler
from orchestrator.store import Store
from orchestrator.store.leadership import ADVISORY_NAMESPACE, ROLE_KEYS

# Runs beat every 0.2 s and are judged dead after 1.5 s of silence; the reaper
# looks every 0.75 s.
CONFIG = "[services]\nheartbeat_interval = 0.2\nheartbeat_timeout = 1.5\n"


@task
def greet(day):
    return f"hello {day}"


def make_flow(name, **settings):
    with Flow(name, schedule=CronSchedule("* * * * *"), **settings) as flow:
        greet(Parameter("day", default="today"))
    return flow


def wait_for(what, check, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def run_when(store, run_id, check, what):
    """The run, once `check(run)` holds."""
    def looked():
        run = store.get_flow_run(run_id)
        return run if check(run) else None
    return wait_for(what, looked)


@pytest.fixture
def pg(postgres_url, home, monkeypatch):
    """A Store on a fresh PostgreSQL database (the URL in the environment, so the
    `orchestrator` processes the test starts use it too), with project "etl"."""
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", postgres_url)
    store = Store.open(url=postgres_url)
    store.create_project("etl")
    yield store
    store.close()


def host_home(tmp_path, name):
    """The ORCHESTRATOR_HOME of a simulated host, with fast heartbeats."""
    path = tmp_path / name
    path.mkdir(mode=0o700)
    (path / "config.toml").write_text(CONFIG)
    return path


def roles(process):
    """{"scheduler": leads?, "reaper": leads?} from a process's /api/health."""
    _, _, health = process.health()
    return {part: health[part]["leader"] for part in ("scheduler", "reaper")}


# -- leadership -------------------------------------------------------------------------
def test_two_ups_on_one_database_one_leads_and_the_other_takes_over_when_it_is_killed(
        pg, tmp_path, start_service):
    ups = [start_service("up", "--no-hostname-label", home=host_home(tmp_path, f"host{i}"))
           for i in range(2)]
    for up in ups:
        up.wait_for_banner()

    def one_leader():
        seen = [roles(up) for up in ups]
        both = all(sum(r[part] for r in seen) == 1 for part in ("scheduler", "reaper"))
        return seen if both else None

    seen = wait_for("one process to lead the scheduler and one the reaper", one_leader)
    # (Two locks: the two roles may well be led by two processes.)
    leader = next(i for i, r in enumerate(seen) if r["scheduler"])
    # Held, not just taken once: both still say so after more ticks.
    time.sleep(1.0)
    assert [roles(up) for up in ups] == seen

    ups[leader].proc.kill()  # SIGKILL, by its pid: its database session ends
    ups[leader].proc.wait(10)
    follower = ups[1 - leader]
    wait_for("the other process to take both over",
             lambda: roles(follower) == {"scheduler": True, "reaper": True})
    assert "Traceback" not in follower.stderr


def test_leadership_on_postgresql_is_per_database_and_a_lost_session_steps_down(
        pg, postgres_url, tmp_path, log_records):
    # Two homes, one database: the advisory lock is the database's, not a home's.
    first = Leadership(pg, "scheduler")
    other_store = Store.open(home=tmp_path / "elsewhere", url=postgres_url)
    second = Leadership(other_store, "scheduler")
    try:
        assert first.is_leader() is True
        assert second.is_leader() is False
        assert Leadership(pg, "reaper").is_leader() is True  # another role, another lock
        assert first.is_leader() is True and second.is_leader() is False

        # The leader's session ends (a restarted server, a dropped connection): it
        # notices at its next check and steps down; another process takes over.
        holder = ("SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a "
                  "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND "
                  "l.classid = %s AND l.objid = %s")
        (name, pid), = pg.db.execute_sql(holder, (ADVISORY_NAMESPACE,
                                                  ROLE_KEYS["scheduler"])).fetchall()
        assert name.startswith(f"orchestrator scheduler {socket.gethostname()}:{os.getpid()}")
        pg.db.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
        assert second.is_leader() is True
        assert first.is_leader() is False
        assert first.leading is False and second.leading is True
        said = " ".join(log_records.messages("orchestrator.daemons.leadership"))
        assert "lost" in said and "scheduler" in said, said

        second.release()
        assert first.is_leader() is True
    finally:
        first.release()
        second.release()
        other_store.close()


def test_on_sqlite_the_lock_is_next_to_the_database_file_so_homes_sharing_it_share_it(
        home, tmp_path):
    database = tmp_path / "shared.db"
    url = f"sqlite:///{database}"
    homes = [tmp_path / "a", tmp_path / "b"]
    stores = [Store.open(home=h, url=url) for h in homes]
    leaders = [Leadership(s, "scheduler") for s in stores]
    try:
        assert [ld.is_leader() for ld in leaders] == [True, False]
        assert leaders[0].where == f"{database}.scheduler.lock"
        leaders[0].release()
        assert leaders[1].is_leader() is True
    finally:
        for ld in leaders:
            ld.release()
        for s in stores:
            s.close()


# -- the reaper -------------------------------------------------------------------------
def test_a_crashed_hosts_run_is_restarted_once_when_two_processes_watch_it(
        pg, tmp_path, start_service):
    service.register_flow(pg, make_flow("nightly", max_restarts=1), "etl")
    pg.set_schedule_active("nightly", False)
    # A run that a host which then crashed had started: Running, silent. Its
    # label keeps the agents of the two `up` processes from running it again.
    run_id = service.create_flow_run(pg, "nightly", labels=["crashed-host"])["id"]
    start_run(pg, run_id, pid=2 ** 22 + 7)
    ups = [start_service("up", "--no-hostname-label", home=host_home(tmp_path, f"host{i}"))
           for i in range(2)]
    for up in ups:
        up.wait_for_banner()

    run_when(pg, run_id, lambda run: run["restarts"], "the run to be restarted")
    # Both reapers' timers have fired twice more since (0.75 s apart).
    since = time.time() + 2 * 0.75
    wait_for("both reapers to look again", lambda: all(
        _epoch(up.health()[2]["reaper"]["last_tick"]) > since for up in ups))

    run = pg.get_flow_run(run_id)
    assert (run["state"], run["restarts"]) == ("Scheduled", 1), run
    moves = [e["message"] for e in pg.state_events(run_id)
             if e["task_slug"] is None and (e["message"] or "").startswith("Restarted")]
    assert len(moves) == 1, moves
    # One process restarted it (and said so): the one whose reaper leads.
    acted = [up for up in ups if f"Flow run {run_id}:" in up.stderr]
    assert len(acted) == 1 and roles(acted[0])["reaper"], [up.stderr for up in ups]


LONG_FLOW = """
import time
from orchestrator import Flow, task
from orchestrator.storage import Script

@task
def wait():
    time.sleep(300)

with Flow("long", storage=Script(__file__)) as flow:
    wait()
"""


def test_on_sqlite_the_leading_reaper_judges_the_runs_of_another_up_on_its_host(
        home, tmp_path, start_service):
    """Several `up` on one SQLite database: only the leader reaps, and it still
    sees that a run process of another `up` is gone (the default 60 s heartbeat
    timeout is far off: only the process check can say so)."""
    flows = tmp_path / "long_flow.py"
    flows.write_text(LONG_FLOW)
    store = Store.open()
    register_flows(store, flows)
    leader = start_service("up", "--no-hostname-label")
    leader.wait_for_banner()
    wait_for("the first up to lead", lambda: roles(leader) == {"scheduler": True,
                                                                "reaper": True})
    other = start_service("up", "--no-hostname-label", "--label", "only-other")
    other.wait_for_banner()
    assert roles(other) == {"scheduler": False, "reaper": False}
    run_id = service.create_flow_run(store, "long", labels=["only-other"])["id"]
    run = run_when(store, run_id, lambda run: run["state"] == "Running" and run["pid"],
                   "the other up to start the run")

    other.proc.kill()  # the other `up` and then its run process die (SIGKILL, by pid)
    other.proc.wait(10)
    os.kill(run["pid"], signal.SIGKILL)

    ended = run_when(store, run_id, lambda run: run["state"] == "Failed",
                     "the leader's reaper to end the run")
    assert f"its process (pid {run['pid']}) is gone" in ended["message"], ended
    store.close()


# -- pausing ----------------------------------------------------------------------------
def test_a_pause_racing_ticks_never_leaves_future_runs_of_the_paused_flow(any_store, home):
    store = any_store
    store.create_project("etl")
    # Flows ahead of the paused one make each tick take a while between reading
    # which flows are scheduled and creating the paused flow's runs.
    for i in range(12):
        service.register_flow(store, make_flow(f"flow{i:02d}"), "etl")
    service.register_flow(store, make_flow("paused"), "etl")
    flow_id = store.get_flow("paused")["id"]
    scheduler = Scheduler(store, lock_path=home / "unused.lock")
    scheduler.run_once()
    random.seed(12)

    def tick_until(stop, ticks):
        while not stop.is_set():
            scheduler.run_once()
            ticks.append(1)

    left = []
    for iteration in range(40):
        store.set_schedule_active("paused", True)
        stop, ticks = threading.Event(), []
        ticker = threading.Thread(target=tick_until, args=(stop, ticks))
        ticker.start()
        try:
            wait_for("a tick", ticks.__len__, interval=0.001)
            time.sleep(random.uniform(0, 0.02))  # somewhere inside a later tick
            _, deleted = store.set_schedule_active("paused", False)
            paused_at = time.time()
        finally:
            stop.set()
            ticker.join(60)
        future = store.db.execute_sql(
            "SELECT COUNT(*) FROM flow_run WHERE flow_id = %s AND auto_scheduled = %s "
            "AND state = 'Scheduled' AND scheduled_start_time > %s".replace(
                "%s", "?" if store.url.startswith("sqlite") else "%s"),
            (flow_id, True, paused_at)).fetchone()[0]
        if future:
            left.append((iteration, future, deleted))

    assert left == [], f"future runs of the paused flow after (iteration, runs, deleted): {left}"


def _epoch(iso):
    return 0 if iso is None else datetime.fromisoformat(iso).timestamp()
