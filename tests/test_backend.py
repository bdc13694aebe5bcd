"""Executing flow runs from the store through the Python API: task runs, state
history, logs, checkpoints and resuming after a RETRY, Flow.register, Script
storage.

    store = Store.open()
    run = service.create_flow_run(store, "squares")
    backend.execute_flow_run(store, run["id"], service.load_flow)   # -> "Success"
"""

import datetime as dt
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest
from helpers import execute

from orchestrator import Flow, Parameter, get_logger, service, signals, task
from orchestrator.service import execution as backend
from orchestrator.flows.loading import load_flows_from_file


def read_result(location):
    """The value checkpointed at `location`: a file, or `file#offset+length` in a packed file."""
    path, _, span = location.rpartition("#") if "#" in location else (location, "", "")
    data = Path(path).read_bytes()
    if span:
        offset, length = (int(n) for n in span.split("+"))
        data = data[offset:offset + length]
    return cloudpickle.loads(data)


def count_line(path):
    """Append one line to `path` (a task's proof that its body ran)."""
    with open(path, "a") as f:
        f.write("ran\n")


@task
def square(x):
    return x * x


@task
def total(xs):
    return sum(xs)


# -- task runs, history, logs -------------------------------------------------------
def test_a_mapped_run_records_each_child_and_the_parent_with_readable_results(store, home):
    with Flow("squares") as flow:
        total(square.map([1, 2, 3]))

    run = execute(store, flow)

    assert run["state"] == "Success", run["message"]
    rows = {(t["task_slug"], t["map_index"]): t for t in store.task_runs(run["id"])}
    children = [rows[("square-1", i)] for i in range(3)]
    assert [c["state"] for c in children] == ["Success"] * 3
    assert [c["run_count"] for c in children] == [1, 1, 1]
    assert all(c["start_time"] <= c["end_time"] for c in children)
    assert abs(children[0]["start_time"] - time.time()) < 300
    parent = rows[("square-1", -1)]
    assert parent["state"] == "Mapped"
    assert sorted(k for k in rows if k[0] == "square-1") == [
        ("square-1", -1), ("square-1", 0), ("square-1", 1), ("square-1", 2)]
    results = home / "results"
    for child, value in zip(children, [1, 4, 9]):
        location = child["result_location"]
        assert Path(location.split("#")[0]).is_file(), location
        assert Path(location.split("#")[0]).resolve().is_relative_to(results.resolve())
        assert read_result(location) == value
    assert read_result(rows[("total-1", -1)]["result_location"]) == 14


def test_the_flow_runs_state_history_is_scheduled_running_success(store):
    with Flow("squares") as flow:
        total(square.map([1, 2]))

    run = execute(store, flow)

    events = [e for e in store.state_events(run["id"]) if e["task_slug"] is None]
    assert [e["state"] for e in events] == ["Scheduled", "Running", "Success"]
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


@task
def chatty(n):
    logger = get_logger()
    for i in range(n):
        logger.info("line %d", i)


def test_two_thousand_log_lines_from_one_task_are_all_stored_in_order(store):
    with Flow("chatty") as flow:
        chatty(Parameter("n"))

    run = execute(store, flow, n=2000)

    assert run["state"] == "Success", run["message"]
    rows, after = [], 0
    while True:
        page = store.logs(run["id"], after_id=after, limit=700)
        if not page:
            break
        rows.extend(page)
        after = page[-1]["id"]
    lines = [r["message"] for r in rows if r["logger"] == "orchestrator.task.chatty"]
    assert lines == [f"line {i}" for i in range(2000)]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


@task
def say_then_wait(go):
    get_logger().info("said while running")
    deadline = time.monotonic() + 30
    while not Path(go).exists():
        assert time.monotonic() < deadline, "the line was never seen in the store"
        time.sleep(0.01)


def test_a_line_logged_is_in_the_store_while_the_run_goes_on(store, tmp_path):
    # A run's writer starts once a line has waited a batch's time (a run that
    # ends sooner writes it with its final state): the line is not held until
    # the run ends.
    import threading

    with Flow("says") as flow:
        say_then_wait(Parameter("go"))
    go = tmp_path / "go"
    done = {}
    runner = threading.Thread(target=lambda: done.update(run=execute(store, flow, go=str(go))))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            runs = store.list_flow_runs()
            lines = [r["message"] for r in store.logs(runs[0]["id"])] if runs else []
            if "said while running" in lines:
                break
            assert time.monotonic() < deadline, lines
            time.sleep(0.01)
        assert store.get_flow_run(runs[0]["id"])["state"] == "Running"
    finally:
        go.touch()
        runner.join(60)
    assert done["run"]["state"] == "Success", done["run"]["message"]


def test_the_runners_own_lines_belong_to_their_task_run(store):
    with Flow("squares-logged") as flow:
        total(square.map([1, 2]))

    run = execute(store, flow)

    assert run["state"] == "Success", run["message"]
    starts = {(r["task_slug"], r["map_index"]): r["message"]
              for r in store.logs(run["id"]) if "Starting task run" in r["message"]}
    assert starts == {("[1, 2]-1", None): "Task '[1, 2]': Starting task run...",
                      ("square-1", 0): "Task 'square[0]': Starting task run...",
                      ("square-1", 1): "Task 'square[1]': Starting task run...",
                      ("total-1", None): "Task 'total': Starting task run..."}
    flow_lines = [r for r in store.logs(run["id"]) if "Flow run" in r["message"]]
    assert flow_lines and all(r["task_slug"] is None for r in flow_lines)


# -- RETRY far in the future: back to Scheduled, then resumed ------------------------
@task
def extract(calls):
    count_line(calls)
    return 41


@task
def wait_for_data(x, marker, calls):
    count_line(calls)
    if not Path(marker).exists():
        Path(marker).touch()
        raise signals.RETRY("data not there yet",
                            start_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    return x + 1


def test_a_retry_an_hour_ahead_reschedules_the_run_and_resuming_reuses_finished_tasks(
        store, tmp_path):
    with Flow("sensor") as flow:
        result = wait_for_data(extract(Parameter("extract_calls")), Parameter("marker"),
                               Parameter("wait_calls"))
    extract_calls, wait_calls = tmp_path / "extract.calls", tmp_path / "wait.calls"
    service.register_flow(store, flow, "etl")
    run = service.create_flow_run(store, "sensor", parameters={
        "extract_calls": str(extract_calls), "wait_calls": str(wait_calls),
        "marker": str(tmp_path / "marker")})
    retry_at = time.time() + 3600

    first = backend.execute_flow_run(store, run["id"], service.load_flow)

    after_first = store.get_flow_run(run["id"])
    assert first == after_first["state"] == "Scheduled"
    assert abs(after_first["scheduled_start_time"] - retry_at) < 120
    assert "retry" in after_first["message"].lower()
    assert after_first["end_time"] is None

    second = backend.execute_flow_run(store, run["id"], service.load_flow)

    assert second == store.get_flow_run(run["id"])["state"] == "Success"
    assert extract_calls.read_text().count("ran") == 1  # restored, not run again
    assert wait_calls.read_text().count("ran") == 2
    [waited] = [t for t in store.task_runs(run["id"])
                if t["task_slug"] == flow.slugs[result] and t["map_index"] == -1]
    assert waited["state"] == "Success"
    assert read_result(waited["result_location"]) == 42
    history = [e["state"] for e in store.state_events(run["id"]) if e["task_slug"] is None]
    assert history == ["Scheduled", "Running", "Scheduled", "Running", "Success"]


# -- Flow.register ---------------------------------------------------------------------
def test_flow_register_returns_the_version_kept_when_unchanged_and_bumped_for_new_labels(
        store):
    with Flow("squares") as flow:
        total(square.map([1, 2, 3]))

    first = flow.register("etl")
    again = flow.register("etl")
    relabelled = flow.register("etl", labels=["gpu"])

    assert (first, again, relabelled) == (1, 1, 2)
    current = store.get_flow("etl/squares")
    assert current["version"] == 2
    assert "gpu" in current["labels"]


def test_a_flow_with_explicit_local_storage_registered_twice_keeps_its_version(store):
    from orchestrator.storage import Local

    with Flow("squares", storage=Local()) as flow:
        total(square.map([1, 2, 3]))

    # Registering records where the flow went in its storage: that is not a change.
    assert [flow.register("etl") for _ in range(3)] == [1, 1, 1]


# -- Script storage ----------------------------------------------------------------------
SCRIPTED = """
    from orchestrator import Flow, Parameter, task
    from orchestrator.storage import Script

    @task
    def stamp(out):
        with open(out, "w") as f:
            f.write("{stamp}")

    with Flow("scripted", storage=Script(__file__)) as flow:
        stamp(Parameter("out"))
"""


@pytest.fixture
def script_flow(tmp_path, monkeypatch):
    """Write the 'scripted' flow file (stamping `stamp`); returns (path, write)."""
    monkeypatch.syspath_prepend(str(tmp_path))  # loading adds the folder; undo it after
    path = tmp_path / "scripted.py"

    def write(stamp):
        path.write_text(textwrap.dedent(SCRIPTED).replace("{stamp}", stamp))
        return load_flows_from_file(path)["scripted"]

    return path, write


def test_script_storage_runs_an_edited_file_without_registering_again(store, script_flow,
                                                                      tmp_path):
    _, write = script_flow
    flow = write("first edition")
    out = tmp_path / "out.txt"
    assert execute(store, flow, out=str(out))["state"] == "Success"
    assert out.read_text() == "first edition"

    write("second edition")
    run = service.create_flow_run(store, "scripted", parameters={"out": str(out)})
    state = backend.execute_flow_run(store, run["id"], service.load_flow)

    assert state == "Success"
    assert out.read_text() == "second edition"
    assert [f["version"] for f in store.list_flows(include_archived=True)] == [1]


def test_a_run_whose_script_file_was_deleted_fails_saying_it_could_not_load_the_flow(
        store, script_flow, tmp_path):
    path, write = script_flow
    service.register_flow(store, write("first edition"), "etl")
    run = service.create_flow_run(store, "scripted", parameters={"out": str(tmp_path / "o")})
    path.unlink()

    state = backend.execute_flow_run(store, run["id"], service.load_flow)

    failed = store.get_flow_run(run["id"])
    assert state == failed["state"] == "Failed"
    assert failed["message"].startswith("Could not load the flow")
    assert str(path) in failed["message"]
    assert failed["end_time"] is not None
