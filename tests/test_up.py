"""`orchestrator up` as users run it: a real process on a free port, its health
endpoint, runs created from the CLI, signals, a busy port, and runs a crash
left behind."""

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import claim, start_run

from orchestrator import __version__, service
from orchestrator.daemons.reaper import NO_HEARTBEAT
from orchestrator.store import TERMINAL_STATES, Store

# Every test here runs twice: run processes forked warm, and fresh interpreters.
pytestmark = pytest.mark.usefixtures("start_mode")


FLOWS = '''
import time
from orchestrator import Flow, Parameter, task, context

@task
def record(out):
    with open(out, "a") as fh:
        fh.write(f"{context.flow_run_id}\\n")

@task
def nap(out):
    with open(out, "a") as fh:
        fh.write(f"start {context.flow_run_id} {time.time()}\\n")
    time.sleep(1)
    with open(out, "a") as fh:
        fh.write(f"end {context.flow_run_id} {time.time()}\\n")

with Flow("record") as record_flow:      # default storage: Local, host-name label
    record(Parameter("out"))

with Flow("nap") as nap_flow:
    nap(Parameter("out"))
'''


def orchestrator(*args, timeout=60):
    """Run an `orchestrator` command to completion; fails the test if it fails."""
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"orchestrator {' '.join(map(str, args))}:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def up(start_service):
    """`up(*args)`: starts `orchestrator up` (a `ServiceProcess` of helpers.py) over
    the test's home; kills any left at the end."""
    return lambda *args: start_service("up", "--poll-interval", "0.1", *args)


@pytest.fixture
def up_flows_store(registered_store):
    """A Store whose project "p" holds the flows of FLOWS."""
    return registered_store(FLOWS, "up_flows.py")


def wait_for_state(store, run_id, states, timeout):
    deadline = time.monotonic() + timeout
    run = store.get_flow_run(run_id)
    while time.monotonic() < deadline:
        run = store.get_flow_run(run_id)
        if run["state"] in states:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} is {run['state']} ({run['message']}) after "
                         f"{timeout} s, not one of {states}")


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- starting ------------------------------------------------------------------
def test_up_says_where_its_database_flows_and_logs_are(home, up):
    process = up()
    process.wait_for_banner()
    out = process.stdout
    assert str(home / "orchestrator.db") in out
    assert re.search(r"flows:\s+" + re.escape(str(home / "flows")), out)
    assert re.search(r"logs:\s+" + re.escape(str(home / "logs")), out)
    assert "Ctrl-C" in out


def test_the_health_endpoint_reports_version_database_and_live_services(home, up, start_mode):
    process = up()
    process.wait_for_banner()
    deadline = time.monotonic() + 10
    while True:  # the agent's and the scheduler's first ticks may come after the banner
        status, content_type, body = process.health()
        if (body["agent"]["alive"] and body["scheduler"]["alive"]) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200
    assert content_type.startswith("application/json")
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert str(home / "orchestrator.db") in body["database"]
    assert body["agent"]["alive"] is True
    assert body["agent"]["labels"] == [socket.gethostname()]
    assert body["reaper"]["alive"] is True  # it ran once at start-up
    warm = body["agent"]["warm_starts"]
    assert warm["enabled"] is (start_mode == "warm") and warm["problem"] is None
    assert (warm["pid"] is not None) is (start_mode == "warm")  # started with the agent
    # Without the token: alive or not, and the version; not where the data is.
    status, _, public = process.health(token=False)
    assert status == 200
    assert public == {"status": "ok", "version": __version__, "agent": {"alive": True},
                      "scheduler": {"alive": body["scheduler"]["alive"]},
                      "reaper": {"alive": True}}


def test_a_run_created_with_the_cli_runs_to_success_through_up(home, tmp_path, up):
    flows = tmp_path / "cli_flows.py"
    flows.write_text(FLOWS)
    out = tmp_path / "executions.txt"
    orchestrator("project", "create", "demo")
    assert "registered version 1" in orchestrator("register", "-p", "demo", flows)
    process = up()
    process.wait_for_banner()

    created = orchestrator("run", "demo/record", "--param", f"out={out}", "--json")
    run_id = json.loads(created)["id"]

    s = Store.open()
    try:
        run = wait_for_state(s, run_id, TERMINAL_STATES, timeout=10)
    finally:
        s.close()
    assert run["state"] == "Success", run["message"]
    assert out.read_text().split() == [str(run_id)]
    assert process.proc.poll() is None  # up is still serving


NEWCOMER = """
import os
from orchestrator import Flow, Parameter, task
from orchestrator.storage import Script

@task
def hello(out):
    with open(out, "a") as fh:
        fh.write("hello\\n")

with Flow("first", storage=Script(os.path.abspath(__file__))) as flow:
    hello(Parameter("out"))
"""


def test_a_newcomers_script_flow_without_labels_runs_under_up(home, tmp_path, up):
    # Script storage adds no label, and `up`'s agent has the host name: a run
    # without labels goes to any agent (unless it is --strict-labels).
    flows = tmp_path / "first_flow.py"
    flows.write_text(NEWCOMER)
    out = tmp_path / "hello.txt"
    orchestrator("project", "create", "mine")
    assert "labels none" in orchestrator("register", "-p", "mine", flows)
    process = up()
    process.wait_for_banner()

    done = subprocess.run([sys.executable, "-m", "orchestrator", "run", "mine/first",
                           "--param", f"out={out}", "--watch"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
    assert out.read_text() == "hello\n"


def test_a_strict_agent_leaves_a_run_without_labels_and_explain_says_why(home, tmp_path,
                                                                         up):
    flows = tmp_path / "first_flow.py"
    flows.write_text(NEWCOMER)
    orchestrator("project", "create", "mine")
    orchestrator("register", "-p", "mine", flows)
    process = up("--strict-labels")
    process.wait_for_banner()
    assert "(strict)" in process.stdout
    run_id = json.loads(orchestrator("run", "mine/first", "--param", "out=x", "--json"))["id"]
    time.sleep(1.0)  # ten of the agent's looks

    said = orchestrator("explain", run_id)
    assert "is Scheduled" in said and "--strict-labels" in said, said


def test_up_writes_where_it_listens_before_it_says_so_and_a_second_up_leaves_it(home, up):
    first = up()
    first.wait_for_banner()
    assert (home / "api-url").read_text().strip() == first.url  # as the line appears
    second = up("--no-hostname-label")
    second.wait_for_banner()
    assert (home / "api-url").read_text().strip() == first.url
    assert f"ORCHESTRATOR_API_URL={second.url}" in second.stdout

    assert second.stop() == 0
    assert (home / "api-url").read_text().strip() == first.url  # not the second's to remove
    assert first.stop() == 0
    assert not (home / "api-url").exists()


def test_the_home_and_its_database_are_private_to_their_owner(home, tmp_path, up):
    fresh = tmp_path / "new-home"
    process = up_in(fresh)
    try:
        process.wait_for_banner()
        assert fresh.stat().st_mode & 0o777 == 0o700
        for name in ("orchestrator.db", "orchestrator.db-wal", "api-token"):
            assert (fresh / name).stat().st_mode & 0o777 == 0o600, name
        assert "note:" not in process.stdout
    finally:
        process.kill()
    # A home that others can read is said so at start.
    home.chmod(0o755)
    process = up()
    process.wait_for_banner()
    assert f"{home} can be read by other users (mode 755)" in process.stdout
    assert (home / "orchestrator.db").stat().st_mode & 0o777 == 0o600


def test_head_on_the_health_endpoint_answers_200_for_health_checks(home, up):
    import urllib.request

    process = up()
    process.wait_for_banner()
    request = urllib.request.Request(process.url + "/api/health", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
        assert resp.read() == b""


def up_in(home):
    from helpers import ServiceProcess

    return ServiceProcess("up", "--poll-interval", "0.1", home=home, log_dir=home.parent,
                          name="up-fresh")


def test_a_busy_port_is_a_one_line_error_with_exit_code_2(home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "orchestrator", "up", "--port", str(port)],
                              capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: Cannot start: ")
    assert "in use" in lines[0]


# -- stopping ------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_up_cleanly(home, up, signum):
    process = up()
    process.wait_for_banner()
    assert process.stop(signum) == 0
    assert "stopped" in process.stdout
    assert "Traceback" not in process.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_waits_for_a_running_run_within_the_grace_period(up_flows_store, tmp_path, up,
                                                                    signum):
    out = tmp_path / "naps.txt"
    process = up("--grace", "5")
    process.wait_for_banner()
    run_id = service.create_flow_run(up_flows_store, "nap", parameters={"out": str(out)})["id"]
    deadline = time.monotonic() + 10
    while "start" not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < deadline, "the nap task never started"
        time.sleep(0.02)

    assert process.stop(signum) == 0
    stopped_at = time.time()
    run = up_flows_store.get_flow_run(run_id)
    assert run["state"] == "Success", run["message"]
    assert run["end_time"] <= stopped_at  # ended before up exited: it was waited for
    assert "end" in out.read_text()
    assert "stopped" in process.stdout
    assert "still going on" not in process.stdout
    assert "Traceback" not in process.stderr


# -- what a crash left behind --------------------------------------------------
def test_a_run_left_running_by_a_dead_process_is_failed_at_start_up(up_flows_store, tmp_path, up):
    host = socket.gethostname()
    up_flows_store.register_agent("crashed-agent", [host], host, dead_pid())
    out = str(tmp_path / "executions.txt")
    run_id = service.create_flow_run(up_flows_store, "record", parameters={"out": out})["id"]
    start_run(up_flows_store, run_id, pid=dead_pid(), agent="crashed-agent", labels=[host])

    process = up()
    process.wait_for_banner()
    # The periodic reaper first runs 5 s after start; this is the start-up pass.
    run = wait_for_state(up_flows_store, run_id, TERMINAL_STATES, timeout=4)
    assert run["state"] == "Failed"
    assert run["message"].startswith(NO_HEARTBEAT)
    assert "is gone" in run["message"]
    assert run["end_time"] is not None


def test_a_run_a_dead_agent_claimed_but_never_started_is_run_at_start_up(up_flows_store, tmp_path,
                                                                         up):
    host = socket.gethostname()
    up_flows_store.register_agent("crashed-agent", [host], host, dead_pid())
    out = tmp_path / "executions.txt"
    run_id = service.create_flow_run(up_flows_store, "record", parameters={"out": str(out)})["id"]
    assert claim(up_flows_store, "crashed-agent", [host], 1) == [run_id]

    process = up()
    process.wait_for_banner()
    # It never ran, so it is scheduled again (no restart spent) and up's agent runs it.
    run = wait_for_state(up_flows_store, run_id, TERMINAL_STATES, timeout=10)
    assert run["state"] == "Success", run
    assert run["restarts"] == 0 and run["attempt"] == 2
    moves = [(e["state"], e["message"]) for e in up_flows_store.state_events(run_id)]
    assert [state for state, _ in moves] == ["Scheduled", "Submitted", "Scheduled",
                                            "Submitted", "Running", "Success"]
    assert "its agent crashed-agent" in moves[2][1] and "never ran" in moves[2][1]
    assert out.read_text().split() == [str(run_id)]


SCHEDULED = '''
import datetime as dt
from orchestrator import Flow, Parameter, task, context
from orchestrator.schedules import IntervalSchedule

@task
def tick(out):
    with open(out, "a") as fh:
        fh.write(f"{context.flow_run_id}\\n")

with Flow("ticker", schedule=IntervalSchedule(dt.timedelta(seconds=1))) as flow:
    tick(Parameter("out", default=OUT))
'''


def test_a_scheduled_flow_runs_by_itself_under_up(home, tmp_path, up):
    out = tmp_path / "ticks.txt"
    flows = tmp_path / "ticker.py"
    flows.write_text(SCHEDULED.replace("OUT", repr(str(out))))
    orchestrator("project", "create", "demo")
    orchestrator("register", "-p", "demo", flows)
    process = up()
    process.wait_for_banner()

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(out.read_text().split()
                                                 if out.exists() else []) < 2:
        time.sleep(0.2)
    executed = out.read_text().split() if out.exists() else []
    assert len(executed) >= 2, process.stderr
    assert len(set(executed)) == len(executed)  # each scheduled run once
    s = Store.open()
    try:
        assert all(s.get_flow_run(int(r))["auto_scheduled"] for r in executed)
    finally:
        s.close()


def test_split_parts_scheduler_and_agent_run_a_scheduled_flow_without_up(home, tmp_path):
    out = tmp_path / "ticks.txt"
    flows = tmp_path / "ticker.py"
    flows.write_text(SCHEDULED.replace("OUT", repr(str(out))))
    orchestrator("project", "create", "demo")
    orchestrator("register", "-p", "demo", flows)
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("scheduler", "agent")}
    parts = {name: subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args], stdin=subprocess.DEVNULL,
        stdout=logs[name], stderr=subprocess.STDOUT)
        for name, args in (("scheduler", ["scheduler"]),
                           ("agent", ["agent", "--poll-interval", "0.1"]))}
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(out.read_text().split()
                                                     if out.exists() else []) < 2:
            time.sleep(0.2)
        executed = out.read_text().split() if out.exists() else []
        assert len(executed) >= 2, (tmp_path / "scheduler.log").read_text()
        assert len(set(executed)) == len(executed)
        parts["scheduler"].send_signal(signal.SIGTERM)
        assert parts["scheduler"].wait(20) == 0
        said = (tmp_path / "scheduler.log").read_text()
        assert "orchestrator scheduler: stopped." in said and "Traceback" not in said
    finally:
        for process in parts.values():
            if process.poll() is None:
                process.terminate()  # the agent waits for its runs' processes
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for handle in logs.values():
            handle.close()
