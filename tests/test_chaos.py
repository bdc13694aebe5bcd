"""kill -9 at random points: agents and flow-run processes die mid-work, again
and again. Afterwards every run is terminal or re-runnable, none is Running
without a live process, none ran twice, and every killed run says why."""

import collections
import os
import random
import signal
import socket
import subprocess
import sys
import time

from helpers import claim, is_run_process

from orchestrator import service
from orchestrator.flows.loading import load_flows_from_file
from orchestrator.daemons.agent import Agent
from orchestrator.daemons.reaper import NO_HEARTBEAT, Reaper, process_alive
from orchestrator.store import TERMINAL_STATES, Store

FLOWS = '''
import os, random, time
from orchestrator import Flow, Parameter, task, context
from orchestrator.storage import Script

@task
def record_and_nap(out):
    run_id = context.flow_run_id
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{run_id}\\n".encode())
    finally:
        os.close(fd)
    time.sleep(random.Random(int(run_id)).uniform(0, 0.4))

with Flow("chaos", storage=Script(__file__)) as chaos_flow:
    record_and_nap(Parameter("out"))
'''

SEED = 20240501
ACTIVE = ("Submitted", "Running", "Cancelling")
# What a run that lost its process may say, from the agent or the reaper.
EXPLANATIONS = ("killed by signal 9", "is gone", NO_HEARTBEAT)
# Runs beat every 0.5 s so that a 2 s timeout never fails a live run.
SERVICE_ENV = {"ORCHESTRATOR__SERVICES__HEARTBEAT_INTERVAL": "0.5",
               "ORCHESTRATOR__SERVICES__HEARTBEAT_TIMEOUT": "2"}


def start_agent(name, log_dir):
    with open(log_dir / f"{name}.stderr", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "agent", "--no-hostname-label",
             "--poll-interval", "0.05", "--limit", "3", "--name", name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            env=dict(os.environ, **SERVICE_ENV))


def running_runs(store):
    return [r for r in store.list_flow_runs(state="Running", limit=10000)
            if r["pid"] and is_run_process(r["pid"], r["id"])]


def kill_run_processes_left(store, run_ids):
    """Flow-run processes outlive a killed agent; end any still there."""
    for run_id in run_ids:
        pid = store.get_flow_run(run_id)["pid"]
        if pid and is_run_process(pid, run_id):
            os.kill(pid, signal.SIGKILL)


def wait_for_progress(store, runs, finished, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = store.list_flow_runs(state=TERMINAL_STATES, limit=len(runs))
        if len(done) >= finished:
            return
        time.sleep(0.02)


def wait_for_running_run(store, rng, timeout):
    """A random run in its live process, or None when none turns up in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        candidates = running_runs(store)
        if candidates:
            return rng.choice(candidates)
        time.sleep(0.02)
    return None


def chaos(store, home, tmp_path, monkeypatch, n_runs, n_agents, agent_kills, run_kills,
          seconds):
    """Runs `n_runs` runs under `n_agents` agents, kills `agent_kills` agents and
    `run_kills` flow-run processes spread over the work (waiting at most
    `seconds` in all for it to progress), then lets a clean agent and the
    reaper finish. Returns what it saw."""
    rng = random.Random(SEED)
    out = tmp_path / "executions.txt"
    runs = [service.create_flow_run(store, "chaos", parameters={"out": str(out)})["id"]
            for _ in range(n_runs)]
    agents = {}
    killed_runs = set()
    killed_agents = []
    clean = None
    try:
        for i in range(n_agents):
            name = f"chaos-agent-{i}"
            agents[name] = start_agent(name, tmp_path)
        actions = ["agent"] * agent_kills + ["run"] * run_kills
        rng.shuffle(actions)
        # Spread the kills over the work: the k-th waits until about k/(n+1)
        # of the runs have finished (or a few seconds have passed).
        for k, action in enumerate(actions, 1):
            wait_for_progress(store, runs, k * len(runs) // (len(actions) + 1),
                              timeout=seconds / len(actions))
            if action == "agent":
                busy = {r["agent"] for r in store.active_runs()} & set(agents)
                name = rng.choice(sorted(busy or agents))
                agents[name].kill()
                agents[name].wait(10)
                killed_agents.append(name)
                del agents[name]
                new_name = f"chaos-agent-{n_agents + len(killed_agents) - 1}"
                agents[new_name] = start_agent(new_name, tmp_path)
            else:
                victim = wait_for_running_run(store, rng, timeout=5)
                if victim is not None:
                    try:
                        os.kill(victim["pid"], signal.SIGKILL)
                        killed_runs.add(victim["id"])
                    except ProcessLookupError:
                        pass  # it ended in the meantime

        # The storm ends with a last kill -9 of every agent still there; then
        # one clean agent (in this process) and the reaper finish what is left.
        for proc in agents.values():
            proc.kill()
            proc.wait(10)
        killed_agents.extend(agents)
        agents.clear()
        for name, value in SERVICE_ENV.items():  # for the clean agent's children
            monkeypatch.setenv(name, value)
        clean = Agent(store, name="clean-agent", hostname_label=False, limit=4,
                      poll_interval=0.05)
        reaper = Reaper(store, heartbeat_timeout=2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            clean.run_once()
            reaper.run_once()
            left = store.list_flow_runs(state=("Scheduled",) + ACTIVE, limit=10000)
            if not left and not clean.children:
                break
            time.sleep(0.05)
        states = {r: store.get_flow_run(r) for r in runs}
    finally:
        for proc in agents.values():
            proc.kill()
            proc.wait(10)
        if clean is not None:
            for child in clean.children.values():
                child.process.kill()
                child.process.wait(10)
        kill_run_processes_left(store, runs)
    executions = out.read_text().split() if out.exists() else []
    agent_logs = "".join(p.read_text() for p in tmp_path.glob("chaos-agent-*.stderr"))
    run_logs = "".join(p.read_text(errors="replace")
                       for p in (home / "logs").glob("*.stderr"))
    return runs, states, executions, killed_runs, killed_agents, agent_logs + run_logs


def check_truthful_end(runs, states, executions, killed_runs):
    for run_id, run in states.items():
        # Terminal, or Scheduled (it will run again); never held by a dead process.
        assert run["state"] in TERMINAL_STATES + ("Scheduled",), (run_id, run)
        assert run["state"] not in ACTIVE or (run["pid"] and process_alive(run["pid"])), run
        if run["state"] == "Failed":
            assert any(words in (run["message"] or "") for words in EXPLANATIONS), run
    counts = collections.Counter(executions)
    twice = {run_id: n for run_id, n in counts.items() if n > 1}
    assert not twice, f"runs executed more than once: {twice}"
    assert set(counts) <= set(map(str, runs))
    for run_id, run in states.items():
        if run["state"] == "Success":
            assert counts[str(run_id)] == 1, run
    for run_id in killed_runs:
        run = states[run_id]
        # A kill that lands as the run records Success is truthfully a Success.
        assert run["state"] in ("Failed", "Success"), run
        if run["state"] == "Failed":
            assert any(words in run["message"] for words in EXPLANATIONS), run


def make_store(tmp_path):
    path = tmp_path / "chaos_flows.py"
    path.write_text(FLOWS)
    s = Store.open()
    s.create_project("p")
    for flow in load_flows_from_file(path).values():
        service.register_flow(s, flow, "p")
    return s


def test_kill_9_of_agents_and_run_processes_leaves_every_run_truthful(home, tmp_path,
                                                                      monkeypatch):
    store = make_store(tmp_path)
    try:
        runs, states, executions, killed_runs, killed_agents, logs = chaos(
            store, home, tmp_path, monkeypatch, n_runs=40, n_agents=3, agent_kills=4,
            run_kills=5, seconds=10)
        check_truthful_end(runs, states, executions, killed_runs)
        assert killed_runs, "no flow-run process was killed: the test proved nothing"
        assert len(killed_agents) >= 4
        assert any(s["state"] == "Failed" for s in states.values())
        assert "database is locked" not in logs
    finally:
        store.close()


def test_one_agent_kill_and_one_run_kill_leave_every_run_truthful(home, tmp_path,
                                                                 monkeypatch):
    store = make_store(tmp_path)
    try:
        runs, states, executions, killed_runs, _, _ = chaos(
            store, home, tmp_path, monkeypatch, n_runs=8, n_agents=2, agent_kills=1,
            run_kills=1, seconds=1.5)
        check_truthful_end(runs, states, executions, killed_runs)
        assert killed_runs
    finally:
        store.close()


def test_a_claim_left_by_a_killed_agent_is_not_stuck_when_it_restarts_under_its_name(
        home, tmp_path):
    # What kill -9 between claiming a run and starting its process leaves: a
    # Submitted run of agent "worker", whose process is gone. Then "worker" is
    # started again under the same name (as a service manager restarts it).
    store = make_store(tmp_path)
    agent = None
    try:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        store.register_agent("worker", [], socket.gethostname(), gone.pid)
        out = tmp_path / "executions.txt"
        run_id = service.create_flow_run(store, "chaos", parameters={"out": str(out)})["id"]
        assert claim(store, "worker", [], 1) == [run_id]
        agent = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "agent", "--no-hostname-label",
             "--poll-interval", "0.05", "--name", "worker"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, **SERVICE_ENV))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(a["name"] == "worker" and a["pid"] == agent.pid
                   for a in store.list_agents()):
                break
            time.sleep(0.05)
        claimed = store.get_flow_run(run_id)
        reaper = Reaper(store, heartbeat_timeout=2)
        deadline = time.monotonic() + 8  # four times the timeout
        run = claimed
        while time.monotonic() < deadline:
            reaper.run_once()
            run = store.get_flow_run(run_id)
            if run["state"] in TERMINAL_STATES:
                break
            time.sleep(0.1)
        # Failed and explained (max_restarts is 0), or put back and run by the
        # live agent: not left Submitted to a process that no longer exists.
        assert run["state"] in TERMINAL_STATES, (
            f"run {run_id} is still {run['state']} ({run['message']}) "
            f"{time.time() - claimed['updated']:.0f} s after a claim by a process "
            "that no longer exists")
        if run["state"] == "Failed":
            assert any(words in run["message"] for words in EXPLANATIONS), run
        else:
            assert run["state"] == "Success", run
            assert out.read_text().split() == [str(run_id)]
    finally:
        if agent is not None:
            agent.kill()
            agent.wait(10)
        store.close()
