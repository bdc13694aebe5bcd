"""The whole path on PostgreSQL: ORCHESTRATOR_DATABASE_URL, CLI, a run with
mapped tasks, stored task runs and logs."""

import json
import os
import subprocess
import sys

from helpers import ROOT

HELLO = ROOT / "data" / "flows" / "hello.py"
MAPPED = """
from orchestrator import Flow, task, get_logger

@task
def square(x):
    get_logger().info("squaring %s", x)
    return x * x

with Flow("squares") as flow:
    square.map([1, 2, 3])
"""


def orchestrator(*args, env):
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_register_run_and_inspect_a_flow_with_the_store_on_postgresql(postgres_url, home,
                                                                      tmp_path):
    env = dict(os.environ, ORCHESTRATOR_DATABASE_URL=postgres_url)
    flows = tmp_path / "squares.py"
    flows.write_text(MAPPED)
    for args in (["project", "create", "pg"], ["register", "-p", "pg", flows]):
        result = orchestrator(*args, env=env)
        assert result.returncode == 0, result.stderr

    ran = orchestrator("run", "squares", "--local", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert run["state"] == "Success"

    shown = json.loads(orchestrator("show", run["id"], "--json", env=env).stdout)
    children = sorted((t["map_index"], t["state"]) for t in shown["task_runs"]
                      if t["map_index"] is not None)
    assert children == [(0, "Success"), (1, "Success"), (2, "Success")]
    logs = orchestrator("logs", run["id"], env=env).stdout
    assert "squaring 3" in logs
    # Nothing went to a SQLite file: the store is the PostgreSQL database.
    assert not (home / "orchestrator.db").exists()


def test_bad_parameters_leave_the_postgresql_store_unchanged(postgres_url, home):
    env = dict(os.environ, ORCHESTRATOR_DATABASE_URL=postgres_url)
    assert orchestrator("project", "create", "pg", env=env).returncode == 0
    assert orchestrator("register", "-p", "pg", HELLO, env=env).returncode == 0

    bad = orchestrator("run", "hello", "--param", "nme=Ada", env=env)

    assert bad.returncode == 2
    assert "did you mean 'name'" in bad.stderr and "Traceback" not in bad.stderr
    assert json.loads(orchestrator("runs", "--json", env=env).stdout) == []
