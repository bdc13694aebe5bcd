"""Reaper, cancellation, explain and concurrency limits, on a real store with
real processes."""

import contextlib
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import claim, end_run, overlap, start_run

from orchestrator import service
from orchestrator.service.explain import explain_flow_run
from orchestrator.flows.loading import load_flows_from_file
from orchestrator.daemons.agent import Agent
from orchestrator.daemons.reaper import NO_HEARTBEAT, Reaper
from orchestrator.store import Store

# Every test here runs twice: run processes forked warm, and fresh interpreters.
pytestmark = pytest.mark.usefixtures("start_mode")


FLOWS = '''
import os, subprocess, sys, time
from orchestrator import Flow, Parameter, task
from orchestrator.storage import Script

@task
def quick():
    return 1

@task
def long_with_child(pidfile):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(pidfile, "w") as fh:
        fh.write(str(child.pid))
    time.sleep(60)

with Flow("quick", storage=Script(__file__)) as quick_flow:
    quick()

with Flow("limited", storage=Script(__file__), max_concurrent_runs=1, max_restarts=1) as lf:
    quick()

with Flow("long", storage=Script(__file__)) as long_flow:
    long_with_child(Parameter("pidfile"))

with Flow("quiet", storage=Script(__file__), heartbeat=False) as quiet_flow:
    quick()
'''


@pytest.fixture
def service_flows_store(registered_store):
    """A Store whose project "p" holds the flows of FLOWS."""
    return registered_store(FLOWS, "service_flows.py")


def new_run(store, flow="quick", labels=(), **kwargs):
    return service.create_flow_run(store, flow, labels=list(labels), **kwargs)["id"]


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the reaper ----------------------------------------------------------------
def test_a_running_run_whose_process_is_gone_is_failed_at_once_and_says_why(service_flows_store):
    run = new_run(service_flows_store)
    service_flows_store.register_agent("a1", [], socket.gethostname(), os.getpid())
    start_run(service_flows_store, run, pid=dead_pid(), agent="a1")

    assert Reaper(service_flows_store, heartbeat_timeout=3600).run_once() == [run]
    stored = service_flows_store.get_flow_run(run)
    assert stored["state"] == "Failed"
    assert stored["message"].startswith(NO_HEARTBEAT)
    assert "is gone" in stored["message"]


def test_a_run_with_an_old_heartbeat_is_failed_when_its_process_is_unknown(
        service_flows_store, clock):
    run = new_run(service_flows_store)
    start_run(service_flows_store, run)  # started by hand: no agent
    clock.now = time.time()  # the start stamped its heartbeat from the real clock
    reaper = Reaper(service_flows_store, heartbeat_timeout=60)

    assert reaper.run_once(now=clock.advance(30)) == []
    assert reaper.run_once(now=clock.advance(90)) == [run]  # 120 s after that heartbeat
    assert "the last heartbeat was" in service_flows_store.get_flow_run(run)["message"]


def test_the_task_runs_of_a_run_the_reaper_fails_end_failed_saying_why(service_flows_store):
    run = new_run(service_flows_store, "long", parameters={"pidfile": "x"})
    attempt = start_run(service_flows_store, run)  # by hand: judged by its heartbeat
    task = dict(task_slug="long_with_child-1", task_name="long_with_child", map_index=-1,
                state="Running", run_count=1, start_time=time.time())
    service_flows_store.record_task_runs(run, attempt, [task, dict(task, task_slug="done-1",
                                                                   state="Success")])
    reaper = Reaper(service_flows_store, heartbeat_timeout=60)
    assert reaper.run_once(now=time.time() + 120) == [run]
    tasks = {t["task_slug"]: t for t in service_flows_store.task_runs(run)}
    assert tasks["done-1"]["state"] == "Success"
    ended = tasks["long_with_child-1"]
    assert ended["state"] == "Failed" and ended["end_time"] is not None
    assert ended["message"].startswith("The flow run failed before this task ended: "
                                       + NO_HEARTBEAT)
    history = [(e["task_slug"], e["state"]) for e in service_flows_store.state_events(run)]
    assert ("long_with_child-1", "Failed") in history


def test_a_heartbeat_keeps_a_run_alive(service_flows_store):
    run = new_run(service_flows_store)
    start_run(service_flows_store, run)
    service_flows_store.db.execute_sql("UPDATE flow_run SET heartbeat = ? WHERE id = ?",
                                       (time.time() + 100, run))
    assert Reaper(service_flows_store, heartbeat_timeout=60).run_once(now=time.time() + 120) == []


def test_a_flow_without_heartbeats_is_not_failed_for_being_silent(service_flows_store):
    run = new_run(service_flows_store, "quiet")
    start_run(service_flows_store, run)
    assert Reaper(service_flows_store, heartbeat_timeout=1).run_once(now=time.time() + 3600) == []
    assert service_flows_store.get_flow_run(run)["state"] == "Running"


@contextlib.contextmanager
def run_process(run_id):
    """A live process that looks like `orchestrator execute RUN_ID` (its command line)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "execute",
                             str(run_id)])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_live_local_process_that_beats_keeps_its_run_alive(service_flows_store):
    run = new_run(service_flows_store)
    service_flows_store.register_agent("a1", [], socket.gethostname(), os.getpid())
    with run_process(run) as proc:
        start_run(service_flows_store, run, pid=proc.pid, agent="a1")
        reaper = Reaper(service_flows_store, heartbeat_timeout=60)
        assert reaper.run_once(now=time.time() + 30) == []
    assert service_flows_store.get_flow_run(run)["state"] == "Running"


def test_a_local_process_that_stopped_beating_loses_its_run_saying_it_is_stopped_or_hung(
        service_flows_store):
    run = new_run(service_flows_store)
    service_flows_store.register_agent("a1", [], socket.gethostname(), os.getpid())
    with run_process(run) as proc:
        start_run(service_flows_store, run, pid=proc.pid, agent="a1")
        reaper = Reaper(service_flows_store, heartbeat_timeout=60)
        assert reaper.run_once(now=time.time() + 120) == [run]
    stored = service_flows_store.get_flow_run(run)
    assert stored["state"] == "Failed"
    assert f"its process (pid {proc.pid}) is still there, stopped or hung" in stored["message"]


def test_a_recycled_pid_is_not_taken_for_the_run_process(service_flows_store):
    run = new_run(service_flows_store)
    service_flows_store.register_agent("a1", [], socket.gethostname(), os.getpid())
    start_run(service_flows_store, run, pid=os.getpid(), agent="a1")  # alive, but not `execute RUN`
    assert Reaper(service_flows_store, heartbeat_timeout=3600).run_once() == [run]
    assert f"its process (pid {os.getpid()}) is gone" in service_flows_store.get_flow_run(run)[
        "message"]


def test_within_max_restarts_a_lost_run_is_scheduled_again_then_failed(service_flows_store):
    run = new_run(service_flows_store, "limited")
    service_flows_store.register_agent("a1", [], socket.gethostname(), os.getpid())
    reaper = Reaper(service_flows_store, heartbeat_timeout=3600)
    for expected in ("Scheduled", "Failed"):
        start_run(service_flows_store, run, pid=dead_pid(), agent="a1")
        reaper.run_once()
        assert service_flows_store.get_flow_run(run)["state"] == expected
    assert service_flows_store.get_flow_run(run)["restarts"] == 1


def test_a_claimed_run_whose_agent_died_before_starting_it_is_scheduled_again(service_flows_store):
    run = new_run(service_flows_store)
    service_flows_store.register_agent("gone", [], socket.gethostname(), dead_pid())
    claim(service_flows_store, "gone", [], 1)
    assert Reaper(service_flows_store).run_once() == [run]
    stored = service_flows_store.get_flow_run(run)
    assert stored["state"] == "Scheduled", stored
    assert "its agent gone" in stored["message"] and "never ran" in stored["message"]
    assert stored["restarts"] == 0 and stored["agent"] is None
    assert claim(service_flows_store, "another", [], 1) == [run]  # and an agent takes it as usual


def test_the_reaper_never_touches_a_finished_run(service_flows_store):
    run = new_run(service_flows_store)
    end_run(service_flows_store, run, "Success")
    assert Reaper(service_flows_store, heartbeat_timeout=0).run_once(now=time.time() + 10**6) == []
    assert service_flows_store.get_flow_run(run)["state"] == "Success"


# -- cancellation ----------------------------------------------------------------
def test_cancelling_a_scheduled_run_ends_it_at_once(service_flows_store):
    run = new_run(service_flows_store)
    assert service_flows_store.request_cancel(run) == "Cancelled"
    assert claim(service_flows_store, "a", [], 5) == []


def test_cancelling_a_finished_run_changes_nothing(service_flows_store):
    run = new_run(service_flows_store)
    end_run(service_flows_store, run, "Success")
    assert service_flows_store.request_cancel(run) == "Success"


def test_cancelling_a_running_run_stops_it_and_its_children(service_flows_store, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    run = new_run(service_flows_store, "long", parameters={"pidfile": str(pidfile)})
    agent = Agent(service_flows_store, hostname_label=False, cancel_grace=1.0)
    deadline = time.monotonic() + 20
    while not pidfile.exists() and time.monotonic() < deadline:
        agent.run_once()
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert service_flows_store.get_flow_run(run)["state"] == "Running"

    assert service_flows_store.request_cancel(run) == "Cancelling"
    while (service_flows_store.get_flow_run(run)["state"] == "Cancelling"
           and time.monotonic() < deadline):
        agent.run_once()
        time.sleep(0.05)

    stored = service_flows_store.get_flow_run(run)
    assert stored["state"] == "Cancelled", stored
    assert "Cancelled on request" in stored["message"]
    (task,) = [t for t in service_flows_store.task_runs(run)  # it was Running: it ends with its run
               if t["task_name"] == "long_with_child"]
    assert (task["state"], task["message"]) == (
        "Cancelled", "The flow run was cancelled before this task ended.")
    assert task["end_time"] is not None
    for _ in range(40):  # the grandchild was in the run's process group
        if not alive(grandchild):
            break
        time.sleep(0.05)
    assert not alive(grandchild)


def test_the_cancel_command_reports_what_happened(service_flows_store, python):
    run = new_run(service_flows_store)
    result = subprocess.run([python, "-m", "orchestrator", "cancel", str(run)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "is Cancelled" in result.stdout
    again = subprocess.run([python, "-m", "orchestrator", "cancel", "999"],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 2 and "No flow run with id 999" in again.stderr


# -- concurrency limits ------------------------------------------------------------
def test_a_flow_limit_lets_one_run_start_at_a_time(service_flows_store):
    first, second = new_run(service_flows_store, "limited"), new_run(service_flows_store, "limited")
    assert claim(service_flows_store, "a", [], 5) == [first]
    assert claim(service_flows_store, "a", [], 5) == []
    end_run(service_flows_store, first, "Success")
    assert claim(service_flows_store, "a", [], 5) == [second]


def test_a_label_limit_holds_runs_with_that_label_across_flows(service_flows_store):
    service_flows_store.set_concurrency_limit("db", 1)
    a = new_run(service_flows_store, "quick", labels=["db"])
    b = new_run(service_flows_store, "limited", labels=["db"])
    other = new_run(service_flows_store, "quick", labels=["web"])
    assert claim(service_flows_store, "x", ["db", "web"], 5) == [a, other]
    assert service_flows_store.get_flow_run(b)["state"] == "Scheduled"
    end_run(service_flows_store, a, "Failed")
    assert claim(service_flows_store, "x", ["db", "web"], 5) == [b]


def test_a_label_limit_of_zero_holds_every_such_run(service_flows_store):
    service_flows_store.set_concurrency_limit("frozen", 0)
    new_run(service_flows_store, labels=["frozen"])
    assert claim(service_flows_store, "x", ["frozen"], 5) == []


def test_a_negative_limit_is_refused(service_flows_store):
    from orchestrator.store import StoreError

    with pytest.raises(StoreError, match="whole number >= 0"):
        service_flows_store.set_concurrency_limit("db", -1)


# -- explain -----------------------------------------------------------------------
def test_explain_says_when_no_agent_is_running(service_flows_store):
    run = new_run(service_flows_store, labels=["gpu"])
    assert any("No agent is running" in r for r in explain_flow_run(service_flows_store, run))


def test_explain_shows_both_label_sets_when_they_do_not_match(service_flows_store):
    run = new_run(service_flows_store, labels=["gpu"])
    service_flows_store.register_agent("cpu-box", ["cpu"], socket.gethostname(), os.getpid())
    reasons = " ".join(explain_flow_run(service_flows_store, run))
    assert "['cpu']" in reasons and "['gpu']" in reasons and "lacks ['gpu']" in reasons


def test_explain_says_a_strict_agent_takes_a_run_without_labels_only_without_labels(
        service_flows_store):
    run = new_run(service_flows_store)
    service_flows_store.register_agent("host-agent", ["vm"], socket.gethostname(), os.getpid(),
                                       strict_labels=True)
    reasons = explain_flow_run(service_flows_store, run)
    assert any("host-agent" in r and "--strict-labels" in r for r in reasons), reasons


def test_explain_says_nothing_holds_a_run_without_labels_back_from_an_agent_with_some(
        service_flows_store):
    run = new_run(service_flows_store)
    service_flows_store.register_agent("host-agent", ["vm"], socket.gethostname(), os.getpid())
    assert explain_flow_run(service_flows_store, run) == [
        "Nothing holds it back: a matching agent should claim it at its next look (within "
        "a second or so)."]


def test_explain_says_when_a_run_is_scheduled_for_later(service_flows_store):
    run = new_run(service_flows_store, scheduled_start_time=time.time() + 3600)
    service_flows_store.register_agent("a", [], socket.gethostname(), os.getpid())
    assert any("scheduled for later" in r for r in explain_flow_run(service_flows_store, run))


def test_explain_names_the_runs_holding_a_full_limit(service_flows_store):
    service_flows_store.set_concurrency_limit("db", 1)
    holder = new_run(service_flows_store, labels=["db"])
    waiting = new_run(service_flows_store, labels=["db"])
    service_flows_store.register_agent("a", ["db"], socket.gethostname(), os.getpid(), limit=5)
    claim(service_flows_store, "a", ["db"], 5)
    reasons = " ".join(explain_flow_run(service_flows_store, waiting))
    assert f"Label 'db' allows 1 concurrent runs, and runs {holder} hold them" in reasons


def test_explain_says_an_agent_is_at_its_limit(service_flows_store):
    running = new_run(service_flows_store)
    waiting = new_run(service_flows_store)
    service_flows_store.register_agent("small", [], socket.gethostname(), os.getpid(), limit=1)
    claim(service_flows_store, "small", [], 1)
    reasons = " ".join(explain_flow_run(service_flows_store, waiting))
    assert f"Agent small is at its limit of 1 runs (running: {running})" in reasons


def test_explain_of_a_finished_run_says_it_will_not_start_again(service_flows_store):
    run = new_run(service_flows_store)
    end_run(service_flows_store, run, "Failed", "boom")
    assert "will not start again" in explain_flow_run(service_flows_store, run)[0]


TAGGED = '''
import time
from orchestrator import Flow, Parameter, task, unmapped
from orchestrator.executors import LocalDaskExecutor
from orchestrator.storage import Script

@task(tags=["db"])
def query(i, out):
    with open(out, "a") as fh:
        fh.write(f"start {time.time()}\\n")
    time.sleep(0.3)
    with open(out, "a") as fh:
        fh.write(f"end {time.time()}\\n")

with Flow("tagged", storage=Script(__file__),
          executor=LocalDaskExecutor("threads", num_workers=4)) as tagged_flow:
    query.map([1, 2, 3], out=unmapped(Parameter("out")))
'''


def test_a_tag_limit_caps_tagged_tasks_across_runs(service_flows_store, tmp_path, python):
    flows = tmp_path / "tagged.py"
    flows.write_text(TAGGED)
    service.register_flow(service_flows_store, load_flows_from_file(flows)["tagged"], "p")
    out = tmp_path / "spans.txt"
    set_limit = subprocess.run([python, "-m", "orchestrator", "concurrency", "set", "db", "2",
                                "--tag"], capture_output=True, text=True, timeout=30)
    assert set_limit.returncode == 0, set_limit.stderr
    runs = [new_run(service_flows_store, "tagged", parameters={"out": str(out)}) for _ in range(2)]

    procs = [subprocess.Popen([python, "-m", "orchestrator", "execute", str(r)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in runs]
    try:
        errors = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errors
    assert overlap(out) == (12, 2)  # 2 runs x 3 tasks, started and ended; 2 at once


TAGGED_PROCESSES = TAGGED.replace('LocalDaskExecutor("threads", num_workers=4)',
                                  'DaskExecutor(cluster_kwargs={"n_workers": 3, '
                                  '"threads_per_worker": 1, "processes": True, '
                                  '"dashboard_address": None})').replace(
    "import LocalDaskExecutor", "import DaskExecutor").replace(
    "    query.map([1, 2, 3], out=unmapped(Parameter(\"out\")))",
    "    out = Parameter(\"out\")\n    for i in range(4):\n        query(i, out)")


def test_a_tag_limit_holds_for_tasks_in_worker_processes(service_flows_store, tmp_path, python):
    # The workers are other processes: they take their slots in the store
    # themselves (the run's reporter does not reach them).
    flows = tmp_path / "tagged_processes.py"
    flows.write_text(TAGGED_PROCESSES)
    service.register_flow(service_flows_store, load_flows_from_file(flows)["tagged"], "p")
    service_flows_store.set_concurrency_limit("db", 1, kind="tag")
    out = tmp_path / "spans.txt"
    run = new_run(service_flows_store, "tagged", parameters={"out": str(out)})
    done = subprocess.run([python, "-m", "orchestrator", "execute", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert service_flows_store.get_flow_run(run)["state"] == "Success"
    assert overlap(out) == (8, 1)


def test_an_agent_leaves_a_late_run_of_a_skip_policy_flow_to_the_scheduler(home, tmp_path):
    path = tmp_path / "late.py"
    path.write_text(
        "from orchestrator import Flow, task\n"
        "from orchestrator.storage import Script\n"
        "@task\n"
        "def noop():\n"
        "    return 1\n"
        "with Flow('skipper', storage=Script(__file__), late_runs='skip') as skipper:\n"
        "    noop()\n"
        "with Flow('runner', storage=Script(__file__)) as runner:\n"
        "    noop()\n")
    store = Store.open()
    store.create_project("late")
    flows = load_flows_from_file(path)
    ids = {}
    for name in ("skipper", "runner"):
        record, _ = service.register_flow(store, flows[name], "late")
        ids[name] = record["id"]
    an_hour_ago = time.time() - 3600
    late = {name: store.create_flow_run(ids[name], labels=[], auto_scheduled=True,
                                        scheduled_start_time=an_hour_ago)["id"]
            for name in ids}
    by_hand = store.create_flow_run(ids["skipper"], labels=[],
                                    scheduled_start_time=an_hour_ago)["id"]

    claimed = claim(store, "a", [], 10)

    assert late["skipper"] not in claimed  # the scheduler will skip it, saying why
    assert sorted(claimed) == sorted([late["runner"], by_hand])
