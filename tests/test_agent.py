"""The agent: atomic claims, labels, child processes, crashes explained, limits."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import claim, overlap

from orchestrator import service
from orchestrator.daemons.agent import Agent

# Every test here runs twice: run processes forked warm, and fresh interpreters.
pytestmark = pytest.mark.usefixtures("start_mode")


FLOWS = '''
import os, sys, time
from orchestrator import Flow, Parameter, task, context
from orchestrator.run_configs import LocalRun
from orchestrator.storage import Script

@task
def record(out):
    with open(out, "a") as fh:
        fh.write(f"{context.flow_run_id}\\n")

@task
def die(how):
    print("about to go down", file=sys.stderr, flush=True)
    if how == "kill":
        os.kill(os.getpid(), 9)
    os._exit(3)

@task
def where():
    return os.environ.get("ORCH_TEST_VALUE"), os.getcwd()

@task
def nap(out):
    with open(out, "a") as fh:
        fh.write(f"start {time.time()}\\n")
    time.sleep(0.4)
    with open(out, "a") as fh:
        fh.write(f"end {time.time()}\\n")

with Flow("record", storage=Script(__file__)) as record_flow:
    record(Parameter("out"))

with Flow("crash", storage=Script(__file__)) as crash_flow:
    die(Parameter("how"))

with Flow("where", storage=Script(__file__),
          run_config=LocalRun(env={"ORCH_TEST_VALUE": "from-run-config"},
                              working_dir=os.environ["ORCH_TEST_WORKDIR"])) as where_flow:
    where()

with Flow("nap", storage=Script(__file__)) as nap_flow:
    nap(Parameter("out"))
'''


@pytest.fixture
def agent_flows_store(registered_store, tmp_path, monkeypatch):
    """A Store whose project "p" holds the flows of FLOWS, with ORCH_TEST_WORKDIR
    (where they write) set to a fresh directory."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.setenv("ORCH_TEST_WORKDIR", str(workdir))
    return registered_store(FLOWS, "agent_flows.py")


def make_run(store, flow, labels=(), **params):
    return service.create_flow_run(store, flow, parameters=params, labels=list(labels))["id"]


def wait_until_finished(agent, store, run_ids, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agent.run_once()
        states = [store.get_flow_run(r)["state"] for r in run_ids]
        if all(s in ("Success", "Failed", "Cancelled") for s in states) and not agent.children:
            return states
        time.sleep(0.05)
    raise AssertionError(f"runs did not finish: {states}")


# -- labels (the FAQ's "stuck in Scheduled" rules) -------------------------------
def test_a_run_goes_to_an_agent_that_has_all_its_labels(agent_flows_store):
    run = make_run(agent_flows_store, "record", labels=["gpu"], out="x")
    assert claim(agent_flows_store, "cpu-agent", ["cpu"], 5) == []
    assert claim(agent_flows_store, "gpu-agent", ["gpu", "big"], 5) == [run]
    assert agent_flows_store.get_flow_run(run)["state"] == "Submitted"
    assert agent_flows_store.get_flow_run(run)["agent"] == "gpu-agent"


def test_a_run_without_labels_goes_to_any_agent(agent_flows_store):
    run = make_run(agent_flows_store, "record", out="x")
    assert claim(agent_flows_store, "labelled", ["anything"], 5) == [run]


def test_a_strict_agent_takes_a_run_without_labels_only_when_it_has_none(agent_flows_store):
    run = make_run(agent_flows_store, "record", out="x")
    assert claim(agent_flows_store, "labelled", ["anything"], 5, strict_labels=True) == []
    assert claim(agent_flows_store, "bare", [], 5, strict_labels=True) == [run]


def test_a_run_scheduled_later_is_not_claimed_until_it_is_due(agent_flows_store):
    later = time.time() + 3600
    run = service.create_flow_run(agent_flows_store, "record", parameters={"out": "x"}, labels=[],
                                  scheduled_start_time=later)["id"]
    assert claim(agent_flows_store, "a", [], 5, now=time.time()) == []
    assert claim(agent_flows_store, "a", [], 5, now=later + 1) == [run]


def test_a_run_is_claimed_once_however_many_agents_ask(agent_flows_store):
    runs = [make_run(agent_flows_store, "record", out="x") for _ in range(20)]
    claimed = []
    for i in range(5):
        claimed += claim(agent_flows_store, f"agent-{i}", [], 7)
    assert sorted(claimed) == sorted(runs)


def test_an_agent_gets_the_hostname_label_unless_told_not_to(agent_flows_store):
    import socket

    assert socket.gethostname() in Agent(agent_flows_store).labels
    assert Agent(agent_flows_store, labels=["x"], hostname_label=False).labels == ["x"]


# -- executing runs --------------------------------------------------------------
def test_an_agent_runs_claimed_runs_to_success_in_child_processes(agent_flows_store, tmp_path):
    out = tmp_path / "out.txt"
    runs = [make_run(agent_flows_store, "record", out=str(out)) for _ in range(3)]
    agent = Agent(agent_flows_store, hostname_label=False, poll_interval=0.05)

    assert wait_until_finished(agent, agent_flows_store, runs) == ["Success"] * 3
    assert sorted(out.read_text().split()) == sorted(map(str, runs))


def test_the_run_config_gives_the_child_its_env_and_working_directory(agent_flows_store, tmp_path):
    run = make_run(agent_flows_store, "where")
    agent = Agent(agent_flows_store, hostname_label=False)
    assert wait_until_finished(agent, agent_flows_store, [run]) == ["Success"]
    task_run = next(t for t in agent_flows_store.task_runs(run) if t["task_slug"] == "where-1")
    from orchestrator.results import PackedResult

    value = PackedResult(tmp_path).read(task_run["result_location"])
    assert value == ("from-run-config", os.environ["ORCH_TEST_WORKDIR"])


@pytest.mark.parametrize("how, words", [
    ("kill", "killed by signal 9 (SIGKILL), likely out of memory"),
    ("exit", "exited with code 3"),
])
def test_a_child_that_dies_fails_its_run_and_says_why(agent_flows_store, how, words):
    run = make_run(agent_flows_store, "crash", how=how)
    agent = Agent(agent_flows_store, hostname_label=False)

    assert wait_until_finished(agent, agent_flows_store, [run]) == ["Failed"]
    message = agent_flows_store.get_flow_run(run)["message"]
    assert words in message
    assert "about to go down" in message  # the last lines of its stderr


def test_limit_caps_how_many_runs_an_agent_runs_at_once(agent_flows_store, tmp_path):
    out = tmp_path / "naps.txt"
    runs = [make_run(agent_flows_store, "nap", out=str(out)) for _ in range(3)]
    agent = Agent(agent_flows_store, hostname_label=False, limit=1)

    assert wait_until_finished(agent, agent_flows_store, runs) == ["Success"] * 3
    assert overlap(out)[1] == 1


def test_four_agent_processes_run_each_of_300_runs_exactly_once(agent_flows_store, home, tmp_path):
    out = tmp_path / "executions.txt"
    runs = [make_run(agent_flows_store, "record", out=str(out)) for _ in range(300)]
    agents = [subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "agent", "--no-hostname-label",
         "--poll-interval", "0.05", "--limit", "4", "--name", f"agent-{i}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = agent_flows_store.list_flow_runs(state=["Success", "Failed"], limit=1000)
            if len(done) == len(runs):
                break
            time.sleep(0.5)
    finally:
        for a in agents:
            a.send_signal(signal.SIGTERM)
        outputs = [a.communicate(timeout=60) for a in agents]
    states = [agent_flows_store.get_flow_run(r)["state"] for r in runs]
    assert states == ["Success"] * len(runs), [
        agent_flows_store.get_flow_run(r)["message"] for r in runs
        if agent_flows_store.get_flow_run(r)["state"] != "Success"][:3]
    executions = out.read_text().split()
    assert sorted(executions) == sorted(map(str, runs))  # each exactly once
    claimers = {agent_flows_store.get_flow_run(r)["agent"] for r in runs}
    assert len(claimers) > 1  # the agents really competed
    for stdout, stderr in outputs:
        assert "database is locked" not in stdout + stderr
    for path in (home / "logs").glob("*.stderr"):
        assert "database is locked" not in path.read_text()
