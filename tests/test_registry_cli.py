"""Registering flows and running them from the store, through the `orchestrator`
command run as a real subprocess against this test's ORCHESTRATOR_HOME.

Exit codes: 0 ok, 1 the run failed (when executed with --local or `execute`),
2 bad input with a one-line message, no traceback and nothing stored.

Most tests start from a home where project 'etl' holds the flows of FLOWS,
registered once per module and copied into each test's home (registering
costs two processes; copying costs nothing).
"""

import datetime as dt
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import assert_bad_input

from orchestrator import Flow, task
from orchestrator.store import Store
from orchestrator.tasks.flow_runs import RenameFlowRun

# A CLI command here takes well under a second; a command that has not
# finished after this long is stuck (e.g. waiting on a database lock).
COMMAND_TIMEOUT = 10

FLOWS = """
    from orchestrator import Flow, Parameter, get_logger, task
    from orchestrator.tasks.flow_runs import RenameFlowRun
    from orchestrator.tasks.secrets import SecretTask

    @task
    def greet(name):
        get_logger().info("hello %s", name)
        get_logger().warning("low disk while greeting %s", name)
        return name

    @task
    def echo(day):
        return day

    @task
    def square(x):
        return x * x

    @task
    def total(xs):
        return sum(xs)

    @task
    def load():
        raise ValueError("warehouse is closed")

    @task
    def keep_token(token, out):
        get_logger().info("connecting with token %s", token)
        with open(out, "w") as f:
            f.write(token)

    @task
    def rename():
        return RenameFlowRun().run(flow_run_name="renamed-x")

    with Flow("hello") as hello:
        greet(Parameter("name", default="world"))

    with Flow("needs-day") as needs_day:
        echo(Parameter("day"))

    with Flow("squares") as squares:
        total(square.map([1, 2, 3]))

    with Flow("broken") as broken:
        load()

    with Flow("uses-secret") as uses_secret:
        keep_token(SecretTask("TOKEN"), Parameter("out"))

    with Flow("renames-itself") as renames_itself:
        rename()
"""
FLOW_NAMES = ["broken", "hello", "needs-day", "renames-itself", "squares", "uses-secret"]

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


def run_command(argv, cwd, env=None, stdin=None):
    """Run argv to completion (stdin text, if given, is piped in)."""
    try:
        return subprocess.run([str(a) for a in argv], check=False, capture_output=True,
                              text=True, cwd=cwd, input=stdin, timeout=COMMAND_TIMEOUT,
                              env=dict(os.environ) if env is None else env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{argv[2:]} did not finish within {COMMAND_TIMEOUT} s; "
                    f"stderr so far: {exc.stderr!r}")


def write_source(path, source):
    path = Path(path)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def cli(tmp_path, home):
    """`cli(*args, stdin=None)` runs `python -m orchestrator ARGS` with this test's home."""
    assert os.environ["ORCHESTRATOR_HOME"] == str(home)

    def run(*args, stdin=None):
        return run_command([sys.executable, "-m", "orchestrator", *args], tmp_path,
                           stdin=stdin)

    return run


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A home with project 'etl' and every flow of FLOWS registered (Local storage)."""
    base = tmp_path_factory.mktemp("template")
    flows_file = write_source(base / "flows.py", FLOWS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR__")}
    env["ORCHESTRATOR_HOME"] = str(base / "home")
    for args in (["project", "create", "etl"], ["register", "-p", "etl", flows_file]):
        result = run_command([sys.executable, "-m", "orchestrator", *args], base, env=env)
        assert result.returncode == 0, result.stderr
    return base / "home", flows_file


@pytest.fixture
def flows_file(template, home):
    """The registered flows' source file, in a home that holds them as version 1."""
    template_home, path = template
    shutil.copytree(template_home, home, dirs_exist_ok=True)
    return path


def json_of(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def store_dump(home):
    """Every row of the store, as SQL text: equal dumps mean nothing was stored."""
    path = home / "orchestrator.db"
    if not path.exists():
        return None
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def created_run_id(result):
    """The run id from 'Created flow run N (...)'."""
    match = re.search(r"Created flow run (\d+) ", result.stdout + result.stderr)
    assert match, (result.stdout, result.stderr)
    return match.group(1)


def table_rows(text, header):
    """Rows (lists of cells split on 2+ spaces) of the table whose header starts `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start + 1:] if line.strip()]


# -- projects and registration ------------------------------------------------------
def test_project_create_makes_a_project_and_leaves_an_existing_one_alone(cli):
    first = cli("project", "create", "etl")
    again = cli("project", "create", "etl")

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Created project 'etl'."
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "Project 'etl' already exists."


def test_register_registers_every_flow_of_the_file_as_version_1(cli, tmp_path):
    path = write_source(tmp_path / "two.py", TWO_FLOWS)
    cli("project", "create", "etl")

    result = cli("register", "-p", "etl", path)

    assert result.returncode == 0, result.stderr
    assert "Flow etl/daily-sales: registered version 1" in result.stdout
    assert "Flow etl/weekly-report: registered version 1" in result.stdout
    flows = json_of(cli("flows", "--json"))
    assert [(f["project"], f["name"], f["version"]) for f in flows] == [
        ("etl", "daily-sales", 1), ("etl", "weekly-report", 1)]


def test_registering_an_unchanged_file_again_keeps_version_1(cli, flows_file):
    result = cli("register", "-p", "etl", flows_file)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(FLOW_NAMES)
    assert all("unchanged, kept version 1" in line for line in lines), lines
    flows = json_of(cli("flows", "--all", "--json"))
    assert sorted((f["name"], f["version"]) for f in flows) == [(n, 1) for n in FLOW_NAMES]


def test_editing_a_task_body_gives_version_2_and_archives_version_1(cli, flows_file,
                                                                    tmp_path):
    edited = flows_file.read_text().replace("return x * x", "return x * x * x")
    assert edited != flows_file.read_text()
    path = tmp_path / "flows.py"
    path.write_text(edited)

    result = cli("register", "-p", "etl", path)

    assert result.returncode == 0, result.stderr
    assert "Flow etl/squares: registered version 2" in result.stdout
    assert "Flow etl/hello: unchanged, kept version 1" in result.stdout
    squares = [(f["version"], f["archived"]) for f in json_of(cli("flows", "--all", "--json"))
               if f["name"] == "squares"]
    assert sorted(squares) == [(1, True), (2, False)]


def test_register_name_registers_only_the_named_flow(cli, flows_file, tmp_path):
    path = write_source(tmp_path / "two.py", TWO_FLOWS)

    result = cli("register", "-p", "etl", path, "--name", "weekly-report")

    assert result.returncode == 0, result.stderr
    assert "weekly-report" in result.stdout
    assert "daily-sales" not in result.stdout
    names = {f["name"] for f in json_of(cli("flows", "--json"))}
    assert "weekly-report" in names
    assert "daily-sales" not in names


def test_register_label_adds_labels_beside_the_hostname_label(cli, flows_file, tmp_path):
    path = write_source(tmp_path / "two.py", TWO_FLOWS)

    result = cli("register", "-p", "etl", path, "--label", "gpu", "--label", "eu")

    assert result.returncode == 0, result.stderr
    labels = {f["name"]: f["labels"] for f in json_of(cli("flows", "--json"))}
    assert labels["daily-sales"] == sorted(["eu", "gpu", socket.gethostname()])
    assert labels["weekly-report"] == sorted(["eu", "gpu", socket.gethostname()])


def test_local_storage_labels_every_flow_with_the_hostname(cli, flows_file):
    flows = json_of(cli("flows", "--json"))

    assert sorted(f["name"] for f in flows) == FLOW_NAMES
    assert all(f["labels"] == [socket.gethostname()] for f in flows), flows


# -- running -------------------------------------------------------------------------
def test_run_local_with_a_param_exits_0_and_prints_success(cli, flows_file):
    result = cli("run", "hello", "--param", "name=Ada", "--local")

    assert result.returncode == 0, result.stderr
    assert re.search(r"Flow run \d+ \(.+\): Success", result.stdout), result.stdout
    assert "hello Ada" in result.stderr  # the run's log goes to the console too


def test_run_local_of_a_flow_with_a_failing_task_exits_1(cli, flows_file):
    result = cli("run", "broken", "--local")

    assert result.returncode == 1, result.stderr
    assert re.search(r"Flow run \d+ \(.+\): Failed", result.stdout), result.stdout
    assert "Traceback" not in result.stdout


def test_run_without_local_is_scheduled_and_execute_runs_it_to_success(cli, flows_file):
    created = cli("run", "hello", "--param", "name=Ada")

    assert created.returncode == 0, created.stderr
    assert "It is Scheduled" in created.stdout
    run_id = created_run_id(created)
    [listed] = json_of(cli("runs", "--json"))
    assert (str(listed["id"]), listed["state"]) == (run_id, "Scheduled")

    executed = cli("execute", run_id)

    assert executed.returncode == 0, executed.stderr
    assert f"Flow run {run_id}: Success" in executed.stdout
    [listed] = json_of(cli("runs", "--json"))
    assert listed["state"] == "Success"


def test_run_watch_prints_the_runs_log_and_exits_with_its_outcome(cli, flows_file, tmp_path):
    watcher = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "hello", "--param", "name=Ada",
         "--watch"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        runs = []
        while not runs and time.monotonic() < deadline:
            runs = json_of(cli("runs", "--json"))
        assert runs, "the watched run was never created"
        assert cli("execute", runs[0]["id"]).returncode == 0
        out, err = watcher.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    assert "hello Ada" in out
    assert f"Flow run {runs[0]['id']}" in out and "Success" in out


def test_executing_a_finished_run_again_exits_2_saying_it_already_finished(cli, flows_file,
                                                                            home):
    run_id = created_run_id(cli("run", "hello", "--local"))
    before = store_dump(home)

    result = cli("execute", run_id)

    assert_bad_input(result, f"Flow run {run_id}", "already finished", "Success")
    assert store_dump(home) == before


def test_run_name_names_the_run_in_runs_and_show(cli, flows_file):
    run_id = created_run_id(cli("run", "hello", "--name", "my-name"))

    [listed] = json_of(cli("runs", "--json"))
    shown = cli("show", run_id)

    assert listed["name"] == "my-name"
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith(f"Flow run {run_id} (my-name) of etl/hello")


def test_an_idempotency_key_used_twice_gives_one_run_and_says_so(cli, flows_file):
    first = cli("run", "hello", "--idempotency-key", "k")
    second = cli("run", "hello", "--idempotency-key", "k")

    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    run_id = created_run_id(first)
    assert "Created" not in second.stdout
    assert (f"Flow run {run_id} (" in second.stdout and "already exists for idempotency key "
            "'k'; it is Scheduled. Nothing new was created." in second.stdout), second.stdout
    assert len(json_of(cli("runs", "--json"))) == 1


def test_a_params_file_gives_the_runs_parameters(cli, flows_file, tmp_path):
    params = tmp_path / "params.json"
    params.write_text('{"name": "Lovelace"}')

    result = cli("run", "hello", "--params-file", params, "--local", "--json")

    data = json_of(result)
    assert data["parameters"] == {"name": "Lovelace"}
    assert data["state"] == "Success"
    assert "hello Lovelace" in result.stderr


# -- listing runs ----------------------------------------------------------------------
def test_runs_json_has_the_run_fields_with_iso_times_carrying_an_offset(cli, flows_file):
    run_id = created_run_id(cli("run", "hello", "--local"))

    [run] = json_of(cli("runs", "--json"))

    assert {"id", "flow", "name", "state", "scheduled_start_time", "start_time",
            "end_time"} <= set(run)
    assert (str(run["id"]), run["flow"], run["state"]) == (run_id, "etl/hello", "Success")
    times = [dt.datetime.fromisoformat(run[key])
             for key in ("scheduled_start_time", "start_time", "end_time")]
    assert all(t.utcoffset() is not None for t in times), times
    assert times[0] <= times[1] <= times[2]
    assert abs(times[2] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)


def test_runs_filters_by_state_and_flow_and_limits_the_count(cli, flows_file):
    succeeded = created_run_id(cli("run", "hello", "--local"))
    failed = created_run_id(cli("run", "broken", "--local"))
    scheduled = created_run_id(cli("run", "hello"))

    by_state = json_of(cli("runs", "--state", "Success", "--json"))
    by_flow = json_of(cli("runs", "--flow", "broken", "--json"))
    limited = json_of(cli("runs", "--limit", "2", "--json"))

    assert [str(r["id"]) for r in by_state] == [succeeded]
    assert [(str(r["id"]), r["state"]) for r in by_flow] == [(failed, "Failed")]
    assert [str(r["id"]) for r in limited] == [scheduled, failed]  # newest first


def test_runs_with_an_unknown_state_exits_2_naming_the_valid_states(cli, flows_file):
    assert_bad_input(cli("runs", "--state", "Bogus"), "'Bogus'", "Success", "Failed",
                     "Scheduled")


# -- one run ---------------------------------------------------------------------------
def test_show_lists_task_runs_with_states_and_durations(cli, flows_file):
    run_id = created_run_id(cli("run", "squares", "--local"))

    result = cli("show", run_id)

    assert result.returncode == 0, result.stderr
    assert "state:      Success" in result.stdout
    rows = {row[0]: row for row in table_rows(result.stdout, "TASK")}
    for child in ("square-1[0]", "square-1[1]", "square-1[2]", "total-1"):
        assert rows[child][1] == "Success", rows
        assert re.fullmatch(r"\d+ms|\d+\.\ds|\d+\.\dm", rows[child][2]), rows[child]
    assert rows["square-1"][1] == "Mapped"


def test_show_json_has_a_task_run_per_mapped_child_with_its_map_index(cli, flows_file):
    run_id = created_run_id(cli("run", "squares", "--local"))

    data = json_of(cli("show", run_id, "--json"))

    squares = sorted(((t["map_index"] is None, t["map_index"]), t["state"])
                     for t in data["task_runs"] if t["task"] == "square-1")
    assert squares == [((False, 0), "Success"), ((False, 1), "Success"),
                       ((False, 2), "Success"), ((True, None), "Mapped")]
    assert data["state"] == "Success"


def test_show_of_an_unknown_run_id_exits_2(cli, flows_file):
    assert_bad_input(cli("show", "999"), "No flow run with id 999")


def test_show_of_a_non_numeric_run_id_exits_2(cli, flows_file):
    assert_bad_input(cli("show", "abc"), "'abc'", "not a flow run id")


# -- logs ------------------------------------------------------------------------------
def test_logs_prints_the_tasks_own_log_line(cli, flows_file):
    run_id = created_run_id(cli("run", "hello", "--param", "name=Ada", "--local"))

    result = cli("logs", run_id)

    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "hello Ada" in line]
    assert "INFO" in line and "orchestrator.task.greet" in line


def test_logs_level_warning_hides_info_lines(cli, flows_file):
    run_id = created_run_id(cli("run", "hello", "--param", "name=Ada", "--local"))

    result = cli("logs", run_id, "--level", "WARNING")

    assert result.returncode == 0, result.stderr
    assert "low disk while greeting Ada" in result.stdout
    assert "hello Ada" not in result.stdout
    assert all(" INFO " not in line for line in result.stdout.splitlines())


def test_logs_json_prints_one_json_object_per_line(cli, flows_file):
    run_id = created_run_id(cli("run", "hello", "--param", "name=Ada", "--local"))

    result = cli("logs", run_id, "--json")

    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) >= 3
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    [hello] = [r for r in rows if r["message"] == "hello Ada"]
    assert (hello["level"], hello["logger"]) == ("INFO", "orchestrator.task.greet")
    assert dt.datetime.fromisoformat(hello["time"]).utcoffset() is not None


def test_logs_json_names_the_task_that_logged_each_task_line(cli, flows_file):
    run_id = created_run_id(cli("run", "hello", "--param", "name=Ada", "--local"))

    rows = [json.loads(line) for line in cli("logs", run_id, "--json").stdout.splitlines()]

    [hello] = [r for r in rows if r["message"] == "hello Ada"]
    assert hello["task"] == "greet-1", hello


def test_logs_follow_on_a_finished_run_prints_the_log_and_ends(cli, flows_file):
    run_id = created_run_id(cli("run", "hello", "--param", "name=Ada", "--local"))

    result = cli("logs", run_id, "-f")  # run_command fails the test if this hangs

    assert result.returncode == 0, result.stderr
    assert "hello Ada" in result.stdout


# -- configuration ---------------------------------------------------------------------
def test_config_shows_the_defaults_and_their_source(cli, home):
    text = cli("config")
    data = json_of(cli("config", "--json"))

    assert text.returncode == 0, text.stderr
    assert f"ORCHESTRATOR_HOME: {home}" in text.stdout
    [row] = [r for r in table_rows(text.stdout, "SETTING") if r[0] == "logging.level"]
    assert row == ["logging.level", '"INFO"', "default"]
    assert data["home"] == str(home)
    settings = {s["setting"]: s for s in data["settings"]}
    assert settings["logging.level"]["value"] == '"INFO"'
    assert settings["flows.checkpointing"]["value"] == "false"
    assert {s["source"] for s in data["settings"]} == {"default"}


def test_config_names_the_environment_variable_a_value_came_from(cli, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR__LOGGING__LEVEL", "WARNING")

    data = json_of(cli("config", "--json"))

    settings = {s["setting"]: s for s in data["settings"]}
    assert settings["logging.level"]["value"] == '"WARNING"'
    assert settings["logging.level"]["source"] == "ORCHESTRATOR__LOGGING__LEVEL"
    assert settings["logging.format"]["source"] == "default"


def test_config_names_the_config_file_a_value_came_from(cli, home):
    (home / "config.toml").write_text('[logging]\nlevel = "ERROR"\n')

    data = json_of(cli("config", "--json"))

    settings = {s["setting"]: s for s in data["settings"]}
    assert settings["logging.level"]["value"] == '"ERROR"'
    assert settings["logging.level"]["source"] == str(home / "config.toml")


# -- secrets ---------------------------------------------------------------------------
def test_secret_set_reads_the_value_from_stdin_and_list_shows_only_the_name(cli):
    stored = cli("secret", "set", "DB_PASSWORD", stdin="s3cr3t-value\n")
    listed = cli("secret", "list")

    assert stored.returncode == 0, stored.stderr
    assert "s3cr3t-value" not in stored.stdout + stored.stderr
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["DB_PASSWORD"]
    assert "s3cr3t-value" not in listed.stdout
    store = Store.open()
    try:
        assert store.get_secret("DB_PASSWORD") == "s3cr3t-value"  # stdin's newline dropped
    finally:
        store.close()


def test_secret_delete_removes_the_secret(cli):
    cli("secret", "set", "DB_PASSWORD", stdin="s3cr3t-value")

    deleted = cli("secret", "delete", "DB_PASSWORD")

    assert deleted.returncode == 0, deleted.stderr
    assert "DB_PASSWORD" in deleted.stdout
    assert cli("secret", "list").stdout.strip() == ""


def test_a_local_run_reads_the_secret_from_the_store(cli, flows_file, tmp_path):
    cli("secret", "set", "TOKEN", stdin="tok-from-store\n")
    out = tmp_path / "token.txt"

    result = cli("run", "uses-secret", "--param", f"out={out}", "--local")

    assert out.read_text() == "tok-from-store"
    assert result.returncode == 0, result.stderr
    assert re.search(r"Flow run \d+ \(.+\): Success", result.stdout), result.stdout


def test_a_secret_value_logged_by_a_task_is_hidden_in_the_stored_log(cli, flows_file,
                                                                     home, tmp_path):
    # Local secrets, so the run reads the value without opening the store again.
    (home / "config.toml").write_text(
        '[flows]\nuse_local_secrets = true\n\n[local_secrets]\nTOKEN = "tok-local-42"\n')
    out = tmp_path / "token.txt"
    run = cli("run", "uses-secret", "--param", f"out={out}", "--local")
    assert run.returncode == 0, run.stderr
    assert out.read_text() == "tok-local-42"

    result = cli("logs", created_run_id(run))

    assert result.returncode == 0, result.stderr
    assert "connecting with token ********" in result.stdout
    assert "tok-local-42" not in result.stdout


# -- renaming a run ----------------------------------------------------------------------
def test_rename_flow_run_in_a_task_of_a_local_run_renames_the_stored_run(cli, flows_file):
    run = cli("run", "renames-itself", "--local")
    run_id = created_run_id(run)

    shown = cli("show", run_id)

    assert shown.stdout.splitlines()[0].startswith(f"Flow run {run_id} (renamed-x) of ")
    assert run.returncode == 0, run.stderr
    assert "state:      Success" in shown.stdout


def test_rename_flow_run_in_plain_flow_run_warns_and_returns_false(log_records):
    @task
    def rename():
        return RenameFlowRun().run(flow_run_name="renamed-x")

    with Flow("plain") as flow:
        renamed = rename()

    state = flow.run()

    assert state.is_successful(), state
    assert state.result[renamed].result is False
    warnings = [r.getMessage() for r in log_records.records if r.levelname == "WARNING"]
    assert any("Not renaming to 'renamed-x'" in m for m in warnings), warnings


# -- bad input: exit 2, one line, no traceback, nothing stored ----------------------------
CYCLE = """
    from orchestrator import Flow, task

    @task
    def extract():
        return 1

    @task
    def load():
        return 2

    flow = Flow("cyclic")
    flow.add_edge(extract, load)
    flow.add_edge(load, extract)
"""


@pytest.mark.parametrize("case, files, argv, fragments", [
    ("missing file", {}, ["register", "-p", "etl", "{tmp}/nope.py"],
     ["nope.py", "does not exist"]),
    ("syntax error", {"bad.py": "from orchestrator import Flow\nwith Flow('x') as flow\n"},
     ["register", "-p", "etl", "{tmp}/bad.py"], ["bad.py:2", "syntax error"]),
    ("cycle", {"cyclic.py": CYCLE}, ["register", "-p", "etl", "{tmp}/cyclic.py"],
     ["'cyclic'", "cycle", "'extract'", "'load'"]),
    ("unknown flow", {}, ["run", "helo"], ["No flow named 'helo'", "Did you mean 'hello'?"]),
    ("unknown project", {"two.py": TWO_FLOWS}, ["register", "-p", "etk", "{tmp}/two.py"],
     ["No project named 'etk'", "Did you mean 'etl'?"]),
    ("params file not JSON", {"params.json": "{name: Ada}"},
     ["run", "hello", "--params-file", "{tmp}/params.json"], ["params.json", "not JSON"]),
    ("unknown parameter", {}, ["run", "hello", "--param", "nme=Ada"],
     ["no parameter 'nme'", "did you mean 'name'?"]),
    ("missing required parameter", {}, ["run", "needs-day", "--local"],
     ["required parameter", "'day'"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_exits_2_with_one_line_and_stores_nothing(cli, flows_file, home, tmp_path,
                                                            case, files, argv, fragments):
    for name, source in files.items():
        write_source(tmp_path / name, source)
    before = store_dump(home)

    result = cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv])

    assert_bad_input(result, *fragments)
    assert result.stdout == ""
    assert store_dump(home) == before


@pytest.mark.parametrize("argv", [["runs"], ["flows"], ["project", "create", "etl"],
                                  ["run", "hello", "--local"], ["secret", "list"]])
def test_a_database_file_that_is_not_sqlite_is_refused_and_left_unchanged(cli, home, argv):
    database = home / "orchestrator.db"
    garbage = b"this is not a database, just some text\n" * 10
    database.write_bytes(garbage)

    result = cli(*argv)

    assert_bad_input(result, str(database), "not an SQLite database")
    assert database.read_bytes() == garbage


def test_a_corrupt_flow_pickle_fails_the_run_saying_to_register_again(cli, flows_file, home):
    [pickle] = home.glob("flows/**/hello/v1.pkl")
    pickle.write_bytes(b"garbage, not a pickle")

    result = cli("run", "hello", "--local")

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert re.search(r"Flow run \d+ \(.+\): Failed: Could not load the flow", result.stdout)
    assert "corrupt" in result.stdout
    assert str(pickle) in result.stdout
    assert "register the flow again" in result.stdout
    [run] = json_of(cli("runs", "--json"))
    assert run["state"] == "Failed"
    assert "corrupt" in run["message"]


def test_orchestrator_home_under_a_regular_file_exits_2(tmp_path, monkeypatch):
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(regular / "home"))

    result = run_command([sys.executable, "-m", "orchestrator", "runs"], tmp_path)

    assert_bad_input(result, "Cannot create ORCHESTRATOR_HOME", str(regular / "home"))
    assert regular.read_text() == "not a directory"
