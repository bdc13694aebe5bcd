"""The `orchestrator` command, run as a real subprocess.

Exit codes: 0 the flow succeeded, 1 it failed, 2 bad input with a one-line
message on stderr and no traceback.
"""

import csv
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import assert_bad_input

from orchestrator import __version__

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "data" / "flows" / "hello.py"
SALES = ROOT / "data" / "flows" / "sales_report.py"


def run_command(argv, cwd):
    """Run argv to completion; the exit code is the test's to check."""
    return subprocess.run([str(a) for a in argv], check=False, capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ), timeout=60)


@pytest.fixture
def cli(python, tmp_path, home):
    """Run `python -m orchestrator ARGS` in a temp directory with this test's
    ORCHESTRATOR_HOME (already in os.environ through the `home` fixture)."""
    assert os.environ["ORCHESTRATOR_HOME"] == str(home)
    return lambda *args: run_command([python, "-m", "orchestrator", *args], tmp_path)


@pytest.fixture
def console_script(python, tmp_path, home):
    """Run the installed `orchestrator` console script next to this interpreter."""
    script = Path(python).parent / "orchestrator"
    assert script.is_file(), f"no console script next to {python}"
    return lambda *args: run_command([script, *args], tmp_path)


@pytest.fixture
def flow_file(tmp_path):
    """Write a flow file from source text; returns its path."""

    def write(source, name="flows.py"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


TWO_FLOWS = """
    from orchestrator import Flow, task

    @task
    def one():
        return 1

    with Flow("daily-sales") as daily:
        one()

    with Flow("weekly-report") as weekly:
        one()
"""

REQUIRED_PARAMETER = """
    from orchestrator import Flow, Parameter, task

    @task
    def echo(day):
        return day

    with Flow("needs-day") as flow:
        echo(Parameter("day"))
"""


# -- --version ------------------------------------------------------------------------
def test_version_is_printed_by_python_dash_m(cli):
    result = cli("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"orchestrator, version {__version__}"


def test_version_is_printed_by_the_console_script(console_script):
    result = console_script("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"orchestrator, version {__version__}"


# -- running a flow file -------------------------------------------------------------------
def test_run_file_prints_the_task_table_and_the_flow_state(cli):
    result = cli("run-file", HELLO, "--param", "name=Ada")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TASK", "STATE", "MESSAGE"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:] if line.strip()
            and not line.startswith("Flow ")}
    assert rows == {"name": "Success", "greet-1": "Success", "shout-1": "Success"}
    assert "Flow 'hello': Success" in result.stdout


def test_run_file_logs_the_tasks_info_lines_on_stderr(cli):
    result = cli("run-file", HELLO, "--param", "name=Ada")

    assert result.returncode == 0, result.stderr
    shouted = [line for line in result.stderr.splitlines() if "HELLO, ADA!" in line]
    assert len(shouted) == 1, result.stderr
    assert "INFO" in shouted[0]
    assert "orchestrator.task.shout" in shouted[0]
    assert "HELLO, ADA!" not in result.stdout


def test_the_console_script_runs_a_flow_file_too(console_script):
    result = console_script("run-file", HELLO, "--param", "name=Grace")

    assert result.returncode == 0, result.stderr
    assert "Flow 'hello': Success" in result.stdout
    assert "HELLO, GRACE!" in result.stderr


def test_run_file_json_output_has_the_flow_its_state_and_every_task(cli):
    result = cli("run-file", HELLO, "--param", "name=Ada", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["flow"] == "hello"
    assert data["state"] == "Success"
    assert [(t["task"], t["state"]) for t in data["tasks"]] == [
        ("name", "Success"), ("greet-1", "Success"), ("shout-1", "Success")]
    assert all(t["message"] == "Task run succeeded." for t in data["tasks"])


def test_a_flow_with_a_failing_task_exits_1_and_shows_which_task_failed(cli, flow_file):
    path = flow_file("""
        from orchestrator import Flow, task

        @task
        def load():
            raise ValueError("warehouse is closed")

        @task
        def report(x):
            return x

        with Flow("broken") as flow:
            report(load())
    """)

    result = cli("run-file", path, "--json")

    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == "Failed"
    states = {t["task"]: t for t in data["tasks"]}
    assert states["load-1"]["state"] == "Failed"
    assert "warehouse is closed" in states["load-1"]["message"]
    assert states["report-1"]["state"] == "TriggerFailed"


def test_a_failing_flow_prints_its_failed_state_in_the_table(cli, flow_file):
    path = flow_file("""
        from orchestrator import Flow, task

        @task
        def load():
            raise ValueError("warehouse is closed")

        with Flow("broken") as flow:
            load()
    """)

    result = cli("run-file", path)

    assert result.returncode == 1, result.stderr
    assert "Flow 'broken': Failed" in result.stdout


def test_run_file_with_the_threads_executor_runs_tasks_on_dask_threads(cli, flow_file):
    path = flow_file("""
        import threading
        from orchestrator import Flow, get_logger, task

        @task
        def where():
            get_logger().info("ran on thread %s", threading.current_thread().name)

        with Flow("where") as flow:
            where()
    """)

    result = cli("run-file", path, "--executor", "threads")

    assert result.returncode == 0, result.stderr
    assert "Flow 'where': Success" in result.stdout
    assert "ran on thread orchestrator-dask" in result.stderr


def test_run_file_with_the_threads_executor_runs_the_hello_flow(cli):
    result = cli("run-file", HELLO, "--param", "name=Ada", "--executor", "threads")

    assert result.returncode == 0, result.stderr
    assert "Flow 'hello': Success" in result.stdout
    assert "HELLO, ADA!" in result.stderr


def test_run_file_with_the_processes_executor_runs_tasks_defined_in_the_file(cli, flow_file):
    # The file is run under a made-up module name no worker can import, so its
    # tasks must travel to the worker processes by value.
    path = flow_file("""
        import os
        from orchestrator import Flow, get_logger, task

        get_logger("flowfile").info("loaded in process %s", os.getpid())

        @task
        def square(x):
            get_logger().info("squared %s in process %s", x, os.getpid())
            return x * x

        @task
        def total(xs):
            return sum(xs)

        with Flow("squares") as flow:
            total(square.map([1, 2, 3]))
    """)

    result = cli("run-file", path, "--executor", "processes", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == "Success"
    states = {t["task"]: t["state"] for t in data["tasks"]}
    assert (states["square-1"], states["total-1"]) == ("Mapped", "Success")
    lines = result.stderr.splitlines()
    [main_pid] = [line.rsplit(" ", 1)[1] for line in lines if "loaded in process" in line]
    worker_pids = [line.rsplit(" ", 1)[1] for line in lines if "squared" in line]
    assert len(worker_pids) == 3, result.stderr
    assert main_pid not in worker_pids


def test_sales_report_writes_a_summary_of_every_region(cli, tmp_path):
    out_dir = tmp_path / "out"

    result = cli("run-file", SALES, "--param", "day=2024-05-01", "--param", f"out_dir={out_dir}")

    assert result.returncode == 0, result.stderr
    assert "Flow 'sales-report': Success" in result.stdout
    report = json.loads((out_dir / "sales-2024-05-01.json").read_text())
    assert report["day"] == "2024-05-01"
    assert sorted(r["region"] for r in report["regions"]) == ["east", "north", "south", "west"]
    assert report["total"] == round(sum(r["total"] for r in report["regions"]), 2)
    # Each region's total is the sum of that day's rows in its CSV.
    for region in report["regions"]:
        with open(ROOT / "data" / "sales" / f"{region['region']}.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["day"] == "2024-05-01"]
        assert rows, region
        assert region["total"] == round(sum(float(r["amount"]) for r in rows), 2)


# -- bad input: exit 2, one line, no traceback ----------------------------------------------
def test_a_missing_flow_file_exits_2_with_one_line(cli, tmp_path):
    result = cli("run-file", tmp_path / "nope.py")

    assert_bad_input(result, "nope.py", "does not exist")


def test_a_flow_file_with_a_syntax_error_exits_2_naming_file_and_line(cli, flow_file):
    path = flow_file("from orchestrator import Flow\n\nwith Flow('x') as flow\n    pass\n",
                     name="broken_syntax.py")

    line = assert_bad_input(cli("run-file", path), "syntax error")

    assert f"{path}:3" in line


def test_a_syntax_error_in_a_module_the_flow_file_imports_names_that_module(cli, flow_file):
    helper = flow_file("TOTAL = (\n", name="sales_helpers.py")
    path = flow_file("""
        import os
        import sys

        sys.path.insert(0, os.path.dirname(__file__))
        import sales_helpers
    """, name="uses_helpers.py")

    line = assert_bad_input(cli("run-file", path), "syntax error")

    assert f"{helper}:1" in line  # where the error is, not the file that imported it


def test_a_flow_file_that_calls_sys_exit_while_loading_exits_2_and_says_so(cli, flow_file):
    path = flow_file("import sys\nsys.exit(3)\n", name="exits.py")

    assert_bad_input(cli("run-file", path), "exits.py", "sys.exit(3)", "__main__")


def test_a_flow_file_without_a_flow_exits_2(cli, flow_file):
    path = flow_file("x = 1\n", name="no_flow.py")

    assert_bad_input(cli("run-file", path), "no_flow.py", "defines no Flow")


def test_a_file_with_two_flows_needs_name_and_lists_both(cli, flow_file):
    path = flow_file(TWO_FLOWS)

    assert_bad_input(cli("run-file", path), "daily-sales", "weekly-report", "--name")


def test_name_picks_one_of_several_flows(cli, flow_file):
    path = flow_file(TWO_FLOWS)

    result = cli("run-file", path, "--name", "weekly-report")

    assert result.returncode == 0, result.stderr
    assert "Flow 'weekly-report': Success" in result.stdout


def test_a_misspelt_name_suggests_the_close_one(cli, flow_file):
    path = flow_file(TWO_FLOWS)

    assert_bad_input(cli("run-file", path, "--name", "daily-sale"),
                     "no flow named 'daily-sale'", "Did you mean 'daily-sales'?")


def test_an_unknown_parameter_exits_2_and_names_it(cli):
    assert_bad_input(cli("run-file", HELLO, "--param", "nme=Ada"),
                     "has no parameter", "'nme'", "did you mean 'name'?")


def test_a_missing_required_parameter_exits_2_and_names_it(cli, flow_file):
    path = flow_file(REQUIRED_PARAMETER)

    assert_bad_input(cli("run-file", path), "required parameter", "'day'")


def test_a_required_parameter_given_with_p_runs(cli, flow_file):
    path = flow_file(REQUIRED_PARAMETER)

    result = cli("run-file", path, "--param", "day=2024-05-01")

    assert result.returncode == 0, result.stderr


def test_a_param_without_equals_exits_2(cli):
    assert_bad_input(cli("run-file", HELLO, "--param", "bad"), "'bad'", "name=value")


def test_a_params_file_with_invalid_json_exits_2(cli, tmp_path):
    params = tmp_path / "params.json"
    params.write_text("{name: Ada}")

    assert_bad_input(cli("run-file", HELLO, "--params-file", params),
                     "params.json", "not JSON")


def test_a_params_file_holding_a_list_exits_2(cli, tmp_path):
    params = tmp_path / "params.json"
    params.write_text('["Ada"]')

    assert_bad_input(cli("run-file", HELLO, "--params-file", params),
                     "params.json", "holds a list", "JSON object")


def test_a_params_file_holding_an_object_gives_the_parameters(cli, tmp_path):
    params = tmp_path / "params.json"
    params.write_text('{"name": "Lovelace"}')

    result = cli("run-file", HELLO, "--params-file", params)

    assert result.returncode == 0, result.stderr
    assert "HELLO, LOVELACE!" in result.stderr


def test_a_flow_file_that_raises_on_import_exits_2_naming_the_exception(cli, flow_file):
    path = flow_file("""
        from orchestrator import Flow

        raise RuntimeError("cannot reach the warehouse")
    """, name="raises.py")

    assert_bad_input(cli("run-file", path), "raises.py",
                     "RuntimeError: cannot reach the warehouse")
