"""Never twice: each claim mints an attempt, and every write about a run is a
compare-and-set on it. A frozen process resumed after another took its run,
a reaper writing on what it read a moment ago, an agent restarted while its
run process was starting: each ran a flow twice or recorded a finished run as
Failed before attempts fenced the writes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, claim, service_env, start_run

from orchestrator import service
from orchestrator.daemons.reaper import Reaper
from orchestrator.store import TERMINAL_STATES, AttemptLost

FLOWS = '''
import os, sys, time
from orchestrator import Flow, Parameter, task, context
from orchestrator.run_configs import LocalRun
from orchestrator.storage import Script

def mark(out, what):
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{what} {os.getpid()} {context.flow_run_id}\\n".encode())
    finally:
        os.close(fd)

@task
def slow(out, seconds):
    mark(out, "start")
    time.sleep(seconds)
    mark(out, "end")

@task
def quick(out):
    print("the task ran", file=sys.stderr, flush=True)
    mark(out, "end")

with Flow("frozen", storage=Script(__file__), max_restarts=1) as frozen:
    slow(Parameter("out"), Parameter("seconds", default=3))

with Flow("slow-load", storage=Script(__file__)) as slow_load:
    quick(Parameter("out"))

if "execute" in sys.argv and os.environ.get("ORCH_TEST_SLOW_LOAD"):
    time.sleep(float(os.environ["ORCH_TEST_SLOW_LOAD"]))  # heavy imports, a slow disk

@task
def chatty():
    import logging
    log = logging.getLogger("orchestrator.task.chatty")
    while True:
        log.info("a line")

with Flow("chatty", storage=Script(__file__)) as chatty_flow:
    chatty()

with Flow("slow-start", storage=Script(__file__),
          run_config=LocalRun(env={"PYTHONPATH": os.environ["ORCH_TEST_SLOW_START"]})) as ss:
    quick(Parameter("out"))
'''

# Runs beat every 0.2 s and are judged dead after 1.5 s of silence.
CONFIG = "[services]\nheartbeat_interval = 0.2\nheartbeat_timeout = 1.5\n"

# Imported by every process of the slow-start flow: it says who it is at once,
# then takes a second to start, as a process loading heavy libraries does.
SLOW_START = '''
import os, sys, time
if "execute" in sys.argv:
    print(f"starting {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(1.0)
'''


@pytest.fixture
def fencing_flows_store(registered_store, home, tmp_path, monkeypatch):
    """A Store whose project "p" holds the flows of FLOWS, under CONFIG, with
    ORCH_TEST_SLOW_START naming a PYTHONPATH whose sitecustomize is SLOW_START."""
    slow_start = tmp_path / "slow_start"
    slow_start.mkdir()
    (slow_start / "sitecustomize.py").write_text(SLOW_START)
    monkeypatch.setenv("ORCH_TEST_SLOW_START", os.pathsep.join(
        [str(slow_start)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    (home / "config.toml").write_text(CONFIG)
    return registered_store(FLOWS, "fencing_flows.py")


def marks(out):
    """[(what, pid, run id)] of the lines the tasks wrote."""
    if not Path(out).exists():
        return []
    return [(what, int(pid), int(run)) for what, pid, run in
            (line.split() for line in Path(out).read_text().splitlines())]


def wait_for(what, check, timeout=20, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def run_processes(run_id, home):
    """Pids of live `orchestrator execute RUN_ID` processes over `home` (not those of
    another test session on this machine)."""
    found = []
    mine = f"ORCHESTRATOR_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"execute" in cmdline and str(run_id).encode() in cmdline and mine in environ \
                and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def orchestrator(home, *args, log=None):
    """An `orchestrator` subprocess over `home`; stderr to the file `log`."""
    err = open(log, "w") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "orchestrator", *map(str, args)],
                                env=service_env(home), cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    finally:
        if log:
            err.close()


@pytest.fixture
def processes():
    """Processes a test starts (`processes.append(p)`); killed at the end, SIGCONT first."""
    started = []
    yield started
    for proc in started:
        for signum in (signal.SIGCONT, signal.SIGKILL):
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass
        proc.wait(10)


# -- 1. a frozen run process, resumed after its run was restarted -----------------
def test_a_frozen_run_process_is_restarted_and_its_task_body_runs_to_its_end_once(
        fencing_flows_store, home, tmp_path, start_service):
    out = tmp_path / "marks.txt"
    up = start_service("up", "--no-hostname-label", "--poll-interval", "0.1")
    up.wait_for_banner()
    run_id = service.create_flow_run(fencing_flows_store, "frozen", parameters={"out": str(out)},
                                     labels=[])["id"]
    (_, first, _), = wait_for("the first process to start its task", lambda: marks(out))
    os.kill(first, signal.SIGSTOP)  # frozen past the heartbeat timeout
    try:
        run = wait_for("the run to end", lambda: (
            lambda r: r if r["state"] in TERMINAL_STATES else None)(
            fencing_flows_store.get_flow_run(run_id)), timeout=30)
    finally:
        if alive(first):
            os.kill(first, signal.SIGCONT)
    time.sleep(1.0)  # time for a resumed process to do what it would do

    assert run["state"] == "Success", run
    assert (run["restarts"], run["attempt"]) == (1, 2)
    ends = [pid for what, pid, _ in marks(out) if what == "end"]
    assert len(ends) == 1 and ends[0] != first, marks(out)
    assert not alive(first), "the frozen process of attempt 1 is still there"
    moves = [(e["state"], e["message"] or "") for e in fencing_flows_store.state_events(run_id)
             if e["task_slug"] is None]  # the run's own moves, not its tasks'
    assert [s for s, _ in moves] == ["Scheduled", "Submitted", "Running", "Scheduled",
                                     "Submitted", "Running", "Success"], moves
    assert "stopped or hung" in moves[3][1]
    assert fencing_flows_store.get_flow_run(run_id)["state"] == "Success"  # nothing wrote after
    shown = subprocess.run([sys.executable, "-m", "orchestrator", "show", str(run_id)],
                           env=service_env(home), capture_output=True, text=True, timeout=30)
    assert "attempt:    2 (restarted 1 time)" in shown.stdout, shown.stdout + shown.stderr


def test_a_frozen_process_started_by_hand_stops_itself_when_it_resumes(
        fencing_flows_store, home, tmp_path, start_service, processes):
    out = tmp_path / "marks.txt"
    run_id = service.create_flow_run(fencing_flows_store, "frozen", parameters={"out": str(out)},
                                     labels=["by-hand"])["id"]
    stderr = tmp_path / "execute.stderr"
    by_hand = orchestrator(home, "execute", run_id, log=stderr)
    processes.append(by_hand)
    wait_for("the process to start its task", lambda: marks(out))
    by_hand.send_signal(signal.SIGSTOP)
    # The reaper restarts the silent run; an agent with its label runs attempt 2.
    up = start_service("up", "--no-hostname-label", "--label", "by-hand",
                       "--poll-interval", "0.1")
    up.wait_for_banner()
    wait_for("attempt 2 to finish",
             lambda: fencing_flows_store.get_flow_run(run_id)["state"] == "Success", timeout=30)
    by_hand.send_signal(signal.SIGCONT)
    code = by_hand.wait(10)

    assert code == 4, (code, stderr.read_text())
    said = stderr.read_text()
    assert "attempt 2" in said and "owns this run now" in said and "this process stops" in said
    assert "Traceback" not in said
    logged = [row["message"] for row in fencing_flows_store.logs(run_id)]
    assert any("owns this run now" in line and "this process stops" in line
               for line in logged), logged
    ends = [what for what, _, _ in marks(out) if what == "end"]
    assert ends == ["end"], marks(out)
    run = fencing_flows_store.get_flow_run(run_id)
    assert (run["state"], run["attempt"], run["restarts"]) == ("Success", 2, 1)


# -- 2. the reaper writes on what it read: it must not undo what happened since ----
def test_the_reaper_leaves_a_run_that_started_between_its_look_and_its_write(fencing_flows_store):
    run_id = service.create_flow_run(fencing_flows_store, "frozen", parameters={"out": "x"},
                                     labels=[])["id"]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    fencing_flows_store.register_agent("dead-agent", [], socket.gethostname(), gone.pid)
    (claimed,) = fencing_flows_store.claim_runs("dead-agent", [], 1)
    reaper = Reaper(fencing_flows_store, heartbeat_timeout=60)

    (verdict,) = reaper.judge()  # "Submitted, and its agent is gone"
    assert verdict.run["state"] == "Submitted" and "dead-agent" in verdict.why
    # The process starts.
    fencing_flows_store.start_flow_run(run_id, os.getpid(), attempt=claimed[1])
    assert reaper.apply(verdict) is False

    run = fencing_flows_store.get_flow_run(run_id)
    assert (run["state"], run["restarts"], run["attempt"]) == ("Running", 0, 1)
    assert fencing_flows_store.heartbeat(run_id, claimed[1]) == "Running"  # still its process's run


def test_the_reaper_leaves_a_run_that_finished_or_was_claimed_again_after_its_look(
        fencing_flows_store):
    run_id = service.create_flow_run(fencing_flows_store, "frozen", parameters={"out": "x"},
                                     labels=[])["id"]
    fencing_flows_store.register_agent("here", [], socket.gethostname(), os.getpid())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    attempt = start_run(fencing_flows_store, run_id, pid=gone.pid, agent="here")
    reaper = Reaper(fencing_flows_store, heartbeat_timeout=60)

    (verdict,) = reaper.judge()  # "Running, and its process is gone": restart it
    assert verdict.action == "restart"
    fencing_flows_store.finish_flow_run(run_id, attempt, "Success",
                                        "All reference tasks succeeded.")
    assert reaper.apply(verdict) is False
    assert fencing_flows_store.get_flow_run(run_id)["state"] == "Success"

    # Restarted once already and claimed again: a verdict on attempt 1 cannot touch it.
    other = service.create_flow_run(fencing_flows_store, "frozen", parameters={"out": "y"},
                                    labels=[])["id"]
    first = start_run(fencing_flows_store, other, pid=gone.pid, agent="here")
    (stale,) = reaper.judge()
    assert fencing_flows_store.restart_flow_run(other, first, "Running",
                                                "restarted by someone else")
    assert claim(fencing_flows_store, "here") == [other]
    assert reaper.apply(stale) is False
    run = fencing_flows_store.get_flow_run(other)
    assert (run["state"], run["attempt"], run["restarts"]) == ("Submitted", 2, 1)


def test_a_write_of_an_old_attempt_changes_nothing_and_says_who_owns_the_run(fencing_flows_store):
    run_id = service.create_flow_run(fencing_flows_store, "frozen", parameters={"out": "x"},
                                     labels=[])["id"]
    first = start_run(fencing_flows_store, run_id)
    assert fencing_flows_store.restart_flow_run(run_id, first, "Running", "lost")
    assert claim(fencing_flows_store, "b") == [run_id]
    second = fencing_flows_store.start_flow_run(run_id, os.getpid(), attempt=first + 1)
    row = dict(task_slug="slow-1", task_name="slow", map_index=-1, state="Success",
               run_count=1)
    for write in (lambda: fencing_flows_store.heartbeat(run_id, first),
                  lambda: fencing_flows_store.record_task_runs(run_id, first, [row]),
                  lambda: fencing_flows_store.finish_flow_run(run_id, first, "Success", None),
                  lambda: fencing_flows_store.reschedule_flow_run(run_id, first, time.time(),
                                                                  "retry"),
                  lambda: fencing_flows_store.pause_flow_run(run_id, first, "paused")):
        with pytest.raises(AttemptLost, match=f"attempt {second} .*owns this run now"):
            write()
    assert fencing_flows_store.task_runs(run_id) == []
    assert fencing_flows_store.get_flow_run(run_id)["state"] == "Running"
    assert fencing_flows_store.heartbeat(run_id, second) == "Running"


# -- 3. an agent killed while its run process starts, restarted under its name -----
def test_an_agent_restarted_under_its_name_while_its_run_process_starts_runs_it_once(
        fencing_flows_store, home, tmp_path, processes):
    out = tmp_path / "marks.txt"
    run_id = service.create_flow_run(fencing_flows_store, "slow-start",
                                     parameters={"out": str(out)}, labels=[])["id"]
    args = ("agent", "--no-hostname-label", "--poll-interval", "0.05", "--name", "worker")
    first = orchestrator(home, *args)
    processes.append(first)
    started = wait_for("the run's process", lambda: run_processes(run_id, home))
    assert len(started) == 1, f"more than one process for run {run_id}: {started}"
    (orphan,) = started
    first.kill()  # kill -9 while the run's process is still starting
    first.wait(10)
    second = orchestrator(home, *args)  # restarted at once, as systemd would
    processes.append(second)

    run = wait_for("the run to end", lambda: (lambda r: r if r["state"] in TERMINAL_STATES
                                              else None)(fencing_flows_store.get_flow_run(run_id)))
    time.sleep(1.5)  # anything started twice would have shown by now

    assert run["state"] == "Success", run
    assert [what for what, _, _ in marks(out)] == ["end"], marks(out)
    assert [e["state"] for e in fencing_flows_store.state_events(run_id)].count("Running") == 1
    # Every process's stderr is whole: what it printed first is still there.
    files = sorted((home / "logs").glob(f"run-{run_id}*.stderr"))
    ran = marks(out)[0][1]
    texts = {path.name: path.read_bytes() for path in files}
    assert all(b"\0" not in text for text in texts.values()), texts
    assert any(f"starting {ran}".encode() in text and b"the task ran" in text
               for text in texts.values()), texts
    if ran == orphan:  # the orphan ran it: it was left to it, not claimed again
        assert fencing_flows_store.get_flow_run(run_id)["attempt"] == 1


# -- what the review of the change found -----------------------------------------------
def test_a_flow_that_loads_longer_than_the_heartbeat_timeout_is_not_taken_for_dead(
        fencing_flows_store, home, tmp_path, start_service, monkeypatch):
    out = tmp_path / "marks.txt"
    monkeypatch.setenv("ORCH_TEST_SLOW_LOAD", "3")  # twice the 1.5 s timeout
    up = start_service("up", "--no-hostname-label", "--poll-interval", "0.1")
    up.wait_for_banner()
    run_id = service.create_flow_run(fencing_flows_store, "slow-load", parameters={"out": str(out)},
                                     labels=[])["id"]
    run = wait_for("the run to end", lambda: (lambda r: r if r["state"] in TERMINAL_STATES
                                              else None)(fencing_flows_store.get_flow_run(run_id)))
    assert (run["state"], run["restarts"], run["attempt"]) == ("Success", 0, 1), run
    assert [what for what, _, _ in marks(out)] == ["end"]


def test_a_cancelled_run_that_logs_without_pause_ends_on_sigterm_not_sigkill(fencing_flows_store):
    # The SIGTERM handler must not wait on the lock the main thread holds while it
    # logs: the process writes what it reported and exits 143 within the grace.
    from orchestrator.daemons.agent import Agent

    agent = Agent(fencing_flows_store, hostname_label=False, cancel_grace=30.0, poll_interval=0.05)
    for _ in range(3):
        run_id = service.create_flow_run(fencing_flows_store, "chatty", labels=[])["id"]
        wait_for("the run to log", lambda: agent.run_once() is not None
                 and fencing_flows_store.logs(run_id, limit=5)
                 and len(fencing_flows_store.logs(run_id, limit=5)) == 5)
        assert fencing_flows_store.request_cancel(run_id) == "Cancelling"
        started = time.monotonic()
        run = wait_for("the run to end", lambda: agent.run_once() is not None and (
            lambda r: r if r["state"] in TERMINAL_STATES else None)(
                fencing_flows_store.get_flow_run(run_id)))
        assert run["state"] == "Cancelled", run
        assert "exited with code 143" in run["message"], run["message"]
        assert time.monotonic() - started < 20


def test_a_heartbeat_that_meets_the_runs_own_final_state_does_not_stop_it(fencing_flows_store,
                                                                          home):
    # With beats every 2 ms, some beat waits on the final write of most runs.
    (home / "config.toml").write_text(
        "[services]\nheartbeat_interval = 0.002\nheartbeat_timeout = 60\n")
    for _ in range(12):
        done = subprocess.run([sys.executable, "-m", "orchestrator", "run", "slow-start",
                               "--param", "out=/dev/null", "--local"],
                              env=service_env(home), cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Success" in done.stdout and "this process stops" not in done.stderr


def test_run_local_is_not_taken_by_an_agent_that_looks_at_once(fencing_flows_store, home,
                                                               start_service):
    up = start_service("up", "--no-hostname-label", "--poll-interval", "0.05")
    up.wait_for_banner()
    for _ in range(5):
        done = subprocess.run([sys.executable, "-m", "orchestrator", "run", "slow-start",
                               "--param", "out=/dev/null", "--local", "--json"],
                              env=service_env(home), cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        run = fencing_flows_store.get_flow_run(json.loads(done.stdout)["id"])
        assert run["state"] == "Success" and run["agent"].startswith("orchestrator run --local")


SIGTERM_WHILE_REPORTING = """
import sys, time
from orchestrator import service
from orchestrator.service import execution as backend
from orchestrator.store import Store

store = Store.open()
run_id = service.create_flow_run(store, "chatty", labels=[])["id"]
attempt = store.start_flow_run(run_id, 0)
ownership = backend.RunOwnership(store, run_id, attempt)
reporter = ownership.reporter = backend.StoreReporter(store, run_id, attempt, ownership)
watcher = backend.Heartbeat(store, run_id, attempt, None, ownership)
with backend._run_signals(store, run_id, attempt, ownership, watcher):
    print("reporting", flush=True)
    for _ in range(300_000):  # the main thread holds the reporter's lock much of the time
        reporter.log((run_id, None, None, time.time(), 20, "orchestrator.test", "a line"))
    time.sleep(60)
"""


def test_sigterm_while_the_main_thread_holds_the_reporters_lock_ends_the_process(
        fencing_flows_store, home, tmp_path):
    script = tmp_path / "sigterm_while_reporting.py"
    script.write_text(SIGTERM_WHILE_REPORTING)
    for i in range(5):
        proc = subprocess.Popen([sys.executable, str(script)], env=service_env(home),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline() == "reporting\n", proc.stderr.read()
            time.sleep(0.02 + 0.03 * i)  # while it still reports
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"try {i}: the process hung after SIGTERM") from None
        assert code == 128 + signal.SIGTERM, (code, proc.stderr.read())


def test_a_run_executed_by_hand_stops_itself_when_it_is_cancelled(fencing_flows_store, home,
                                                                  tmp_path, processes):
    # No agent watches `orchestrator execute` by hand (nor `run --local`): its own
    # heartbeat sees the cancel, and it stops and records the run Cancelled.
    out = tmp_path / "marks.txt"
    run_id = service.create_flow_run(fencing_flows_store, "frozen",
                                     parameters={"out": str(out), "seconds": 30})["id"]
    by_hand = orchestrator(home, "execute", run_id, log=tmp_path / "execute.stderr")
    processes.append(by_hand)
    wait_for("the task to start", lambda: marks(out))
    cancel = subprocess.run([sys.executable, "-m", "orchestrator", "cancel", str(run_id),
                             "--wait", "10"], env=service_env(home), cwd=ROOT,
                            capture_output=True, text=True, timeout=30)

    assert cancel.returncode == 0 and "is Cancelled" in cancel.stdout, cancel.stdout
    assert by_hand.wait(10) == 128 + signal.SIGTERM
    run = fencing_flows_store.get_flow_run(run_id)
    assert run["state"] == "Cancelled" and "its process stopped" in run["message"], run
    assert [what for what, _, _ in marks(out)] == ["start"]
    (task,) = [t for t in fencing_flows_store.task_runs(run_id) if t["task_name"] == "slow"]
    assert task["state"] == "Cancelled"
