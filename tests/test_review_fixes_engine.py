"""Regression tests for engine defects found in review: each failed before its fix."""

import threading
import time
from datetime import timedelta

import pytest

from orchestrator import Flow, Parameter, case, context, flatten, task, unmapped
from orchestrator.executors import DaskExecutor, LocalDaskExecutor, LocalExecutor
from orchestrator.exceptions import OrchestratorError
from orchestrator.states import Failed, Mapped, Paused, Pending, Skipped, Success, TriggerFailed
from orchestrator.triggers import manual_only


@task
def fail_on_two(x):
    if x == 2:
        raise ValueError("bad")
    return x


@task
def describe(x):
    return f"got {x!r}"


def test_two_runs_sharing_a_dask_cluster_get_their_own_results():
    from distributed import LocalCluster

    @task
    def tagged(tag):
        time.sleep(0.3)
        return tag

    with Flow("keys") as flow:
        result = tagged(Parameter("tag"))

    got = {}
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        def run(tag):
            state = flow.run(executor=DaskExecutor(address=cluster.scheduler_address), tag=tag)
            got[tag] = state.result[result].result

        threads = [threading.Thread(target=run, args=(t,)) for t in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert got == {"A": "A", "B": "B"}


def test_a_run_started_inside_a_task_can_share_the_outer_runs_local_dask_executor():
    shared = LocalDaskExecutor("threads", num_workers=2)

    @task
    def forty_two():
        return 42

    with Flow("inner") as inner:
        answer = forty_two()

    @task
    def run_inner():
        return inner.run(executor=shared).result[answer].result

    with Flow("outer") as outer:
        got = run_inner()

    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("state", outer.run(executor=shared)))
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "nested run deadlocked"
    assert done["state"].result[got].result == 42


def test_resuming_with_a_mapped_state_keeps_each_childs_own_state():
    with Flow("resume-mapped") as flow:
        first = fail_on_two.map([1, 2, 3])
        second = describe.map(first)

    state = flow.run()
    again = flow.run(task_states={first: state.result[first]})

    children = again.result[second].map_states
    assert [type(c) for c in children] == [Success, TriggerFailed, Success]
    assert again.is_failed()


def test_manual_only_resumes_on_a_threads_executor_too():
    @task
    def step():
        return "ok"

    @task(trigger=manual_only)
    def approve(x):
        return x

    with Flow("approve") as flow:
        done = approve(step())

    executor = LocalDaskExecutor("threads")
    state = flow.run(executor=executor)
    assert isinstance(state.result[done], Paused)
    resumed = flow.run(executor=executor, task_states=state.result, context={"resume": True})
    assert resumed.result[done].result == "ok"


def test_runner_log_records_on_worker_threads_carry_the_flow_run(log_records):
    with Flow("stamped") as flow:
        describe(1)

    state = flow.run(executor=LocalDaskExecutor("threads"))
    ids = {getattr(r, "flow_run_id", None) for r in log_records.records
           if r.name == "orchestrator.engine.task_runner"}
    assert state.is_successful()
    assert len(ids) == 1 and None not in ids


def test_values_given_in_the_run_context_win_for_backfills():
    @task
    def when():
        return context.today, context.flow_run_name

    with Flow("backfill") as flow:
        seen = when()

    state = flow.run(context={"today": "2021-01-01", "flow_run_name": "backfill-1"})
    assert state.result[seen].result == ("2021-01-01", "backfill-1")


def test_a_handler_that_turns_a_failure_into_success_means_no_retry():
    calls = []

    def forgive(task, old, new):
        return Success("forgiven") if new.is_failed() else new

    @task(max_retries=2, retry_delay=timedelta(seconds=0), state_handlers=[forgive])
    def flaky():
        calls.append(1)
        raise ValueError("x")

    with Flow("forgive") as flow:
        t = flaky()

    state = flow.run()
    assert len(calls) == 1
    assert state.result[t].message == "forgiven"


def test_a_bad_target_fails_only_its_task(tmp_path):
    from orchestrator.results import LocalResult

    @task(result=LocalResult(dir=tmp_path), target="{no_such_name}.out")
    def targeted():
        return 1

    with Flow("bad-target") as flow:
        bad = targeted()
        good = describe(2)

    state = flow.run()
    assert isinstance(state.result[bad], Failed)
    assert "no_such_name" in state.result[bad].message
    assert state.result[good].result == "got 2"


def test_a_callable_target_names_the_file(tmp_path):
    from orchestrator.results import LocalResult

    @task(result=LocalResult(dir=tmp_path), target=lambda **v: f"{v['task_name']}.bin")
    def produce():
        return 5

    with Flow("callable-target") as flow:
        produce()

    assert flow.run().is_successful()
    assert (tmp_path / "produce.bin").is_file()


def test_a_paused_mapped_child_leaves_downstream_pending_not_failed():
    @task
    def maybe_pause(x):
        if x == 2 and not context.get("resume"):
            from orchestrator.signals import PAUSE
            raise PAUSE("wait")
        return x

    @task
    def total(xs):
        return sum(xs)

    with Flow("pause-child") as flow:
        s = total(maybe_pause.map([1, 2, 3]))

    state = flow.run()
    assert isinstance(state.result[s], Pending)
    assert state.is_running()


def test_flatten_keeps_a_failed_child_as_one_failed_input():
    @task
    def pair(x):
        if x == 2:
            raise ValueError("no pair")
        return [x, x]

    @task
    def inc(x):
        return x + 1

    with Flow("flatten-failed") as flow:
        out = inc.map(flatten(pair.map([1, 2, 3])))

    children = flow.run().result[out].map_states
    assert [type(c) for c in children] == [Success, Success, TriggerFailed, Success, Success]
    assert [c.result for c in children if c.is_successful()] == [2, 2, 4, 4]


def test_flatten_in_a_plain_call_passes_the_flattened_list():
    @task
    def nested():
        return [[1, 2], [3]]

    @task
    def total(xs):
        return sum(xs)

    with Flow("flatten-plain") as flow:
        s = total(flatten(nested()))

    assert flow.run().result[s].result == 6


def test_a_skipped_branch_skips_a_mapped_task_with_nothing_to_map():
    @task
    def empty():
        return []

    @task
    def report(xs):
        return f"report of {xs}"

    with Flow("case-map") as flow:
        with case(Parameter("go", default=False), True):
            mapped = describe.map(empty())
            r = report(mapped)

    state = flow.run()
    assert isinstance(state.result[mapped], Skipped)
    assert isinstance(state.result[r], Skipped)


def test_terminal_state_handler_decides_the_final_state():
    def acceptable(flow, state, reference_states):
        return Success("failure is acceptable here")

    with Flow("terminal", terminal_state_handler=acceptable) as flow:
        fail_on_two(2)

    state = flow.run()
    assert state.is_successful() and state.message == "failure is acceptable here"


@pytest.mark.parametrize("executor, fragment", [
    ("local", "is not an executor"), (LocalExecutor, "pass an instance"),
])
def test_a_bad_executor_argument_is_one_clear_error(executor, fragment):
    with Flow("bad-executor") as flow:
        describe(1)
    with pytest.raises(OrchestratorError, match=fragment):
        flow.run(executor=executor)


def test_many_children_reading_an_unmapped_mapped_parent_all_succeed():
    @task
    def sum_with(x, all_items):
        return x + sum(all_items)

    with Flow("unmapped-parent") as flow:
        items = describe.map(list(range(50)))
        lengths = sum_with.map(list(range(50)), unmapped(fail_on_two.map([1, 3])))

    state = flow.run()
    assert isinstance(state.result[items], Mapped)
    assert [c.result for c in state.result[lengths].map_states] == [x + 4 for x in range(50)]
