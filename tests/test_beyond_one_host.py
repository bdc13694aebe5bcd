"""The README's "Beyond one host" recipe, run as written: one PostgreSQL
database, `orchestrator up` on one host, an agent on another (each its own
home), a Dask scheduler and worker, a shared results location, and the flow
from the shared folder run to Success by the agent that has its label."""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT

SECTION = "## Beyond one host"
DB_PLACEHOLDER = "postgresql://orchestrator:secret@db-host/orchestrator"
DASK_PLACEHOLDER = "dask-host:8786"

pytest.importorskip("distributed")
pytest.importorskip("psycopg2")


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    (bash,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    (python,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return bash, python


def recipe(bash):
    """The recipe's commands, grouped under the comment that says where they run."""
    parts, where = {}, None
    for line in bash.splitlines():
        line = line.strip()
        if line.startswith("#"):
            where = line.lstrip("# ").split(":")[0]
            parts[where] = []
        elif line:
            parts[where].append(line)
    return parts


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(line, substitutions):
    for old, new in substitutions.items():
        line = line.replace(old, new)
    args = shlex.split(line)
    if args[0] in ("orchestrator", "dask"):
        # The same console scripts, from the interpreter running the tests.
        args = [sys.executable, "-m", "orchestrator", *args[1:]] if args[0] == "orchestrator" \
            else [os.path.join(os.path.dirname(sys.executable), "dask"), *args[1:]]
    return args


class Started:
    def __init__(self):
        self.procs = []

    def start(self, args, env, log):
        out = open(log, "w")
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((proc, out))
        return proc

    def stop(self):
        for proc, _ in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, out in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            out.close()


def wait_for(what, check, timeout=60, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    shown = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs)
    raise AssertionError(f"{what} did not happen within {timeout} s\n{shown}")


def test_the_readme_recipe_runs_a_dask_flow_on_the_agent_of_another_host(
        postgres_url, tmp_path):
    bash, python = readme_blocks()
    parts = recipe(bash)
    assert set(parts) == {"on every host", "host 1", "hosts 2 to n", "the Dask cluster",
                          "anywhere"}, parts

    shared = tmp_path / "shared"
    (shared / "flows").mkdir(parents=True)
    dask_port = free_port()
    substitutions = {DB_PLACEHOLDER: postgres_url, "/mnt/shared": str(shared),
                     DASK_PLACEHOLDER: f"127.0.0.1:{dask_port}", "--port 8786":
                     f"--port {dask_port}"}
    source = python
    for old, new in substitutions.items():
        source = source.replace(old, new)
    flow_file = shared / "flows" / "crunch.py"
    flow_file.write_text(source)

    # "on every host": the install is this test's environment; the exports go to
    # every process below, each "host" with a home of its own.
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("ORCHESTRATOR") and k != "DASK_DISTRIBUTED__SCHEDULER_ADDRESS"}
    exports = [line for line in parts["on every host"] if line.startswith("export ")]
    assert [line for line in parts["on every host"] if not line.startswith("export ")] == [
        "pip install -e '.[postgres,dask]'"]
    for line in exports:
        name, value = line[len("export "):].split("=", 1)
        for old, new in substitutions.items():
            value = value.replace(old, new)
        base[name] = value
    assert base["ORCHESTRATOR_DATABASE_URL"] == postgres_url

    def host(name):
        home = tmp_path / name
        home.mkdir()
        return dict(base, ORCHESTRATOR_HOME=str(home))

    host1, host2, client = host("host1"), host("host2"), host("client")
    started = Started()
    logs = []
    try:
        # The Dask cluster (its dashboard off: tests may run side by side).
        scheduler_line, worker_line = parts["the Dask cluster"]
        log = tmp_path / "dask-scheduler.log"
        logs.append(log)
        started.start(command(scheduler_line, substitutions) + ["--no-dashboard"], base, log)
        wait_for("the Dask scheduler listening", lambda: _listening(dask_port), logs=logs)
        log = tmp_path / "dask-worker.log"
        logs.append(log)
        started.start(command(worker_line, substitutions) + ["--no-dashboard"], base, log)

        # Host 1: up (on an ephemeral port: the suite's own address).
        (up_line,) = parts["host 1"]
        assert up_line == "orchestrator up --expose"
        log = tmp_path / "host1-up.log"
        logs.append(log)
        started.start(command(up_line, substitutions) + ["--port", "0"], host1, log)
        wait_for("up's banner", lambda: "Stop with Ctrl-C." in log.read_text(), logs=logs)

        # Hosts 2..n: an agent for runs labelled etl.
        (agent_line,) = parts["hosts 2 to n"]
        log = tmp_path / "host2-agent.log"
        logs.append(log)
        started.start(command(agent_line, substitutions), host2, log)

        # Anywhere: the limit, the project, the flow, a run watched to its end.
        *setup, run_line = parts["anywhere"]
        for line in setup:
            done = subprocess.run(command(line, substitutions), env=client,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert run_line == "orchestrator run etl/crunch --watch"
        done = subprocess.run(command(run_line, substitutions), env=client,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, (done.stdout, done.stderr,
                                      [log.read_text()[-2000:] for log in logs])

        shown = subprocess.run(
            [sys.executable, "-m", "orchestrator", "runs", "--json"], env=client,
            capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        (run,) = json.loads(shown.stdout)
        assert run["state"] == "Success", run
        agents = subprocess.run([sys.executable, "-m", "orchestrator", "agents", "--json"],
                                env=client, capture_output=True, text=True, timeout=60)
        assert agents.returncode == 0, agents.stderr
        by_name = {a["name"]: a for a in json.loads(agents.stdout)["agents"]}
        # The run went to host 2's agent: the one with the etl label.
        from orchestrator.store import Store

        store = Store.open(home=tmp_path / "client", url=postgres_url)
        try:
            agent = store.get_flow_run(run["id"])["agent"]
        finally:
            store.close()
        assert "etl" in by_name[agent]["labels"], (agent, by_name)
        # Its checkpoints are in the shared location, written by the Dask worker.
        results = shared / "orchestrator-results"
        assert results.is_dir() and any(results.rglob("*")), list(shared.rglob("*"))
    finally:
        started.stop()


def _listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
