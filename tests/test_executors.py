"""The same flows give the same states on every executor.

Each flow here runs on `LocalExecutor`, `LocalDaskExecutor("threads")`,
`LocalDaskExecutor("processes")` and `DaskExecutor` connected to one real
`distributed.LocalCluster` (worker processes), started once for the module.
Tasks are defined at module level: the spawned workers import this module
(its directory is on the `sys.path` they inherit) to unpickle them.
"""

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator import Flow, Parameter, context, flatten, get_logger, task, unmapped
from orchestrator.exceptions import OrchestratorError
from orchestrator.executors import DaskExecutor, LocalDaskExecutor, LocalExecutor
from orchestrator.states import Failed, Mapped, Success, TriggerFailed

EXECUTOR_KINDS = ["local", "threads", "processes", "dask"]

# A second cluster started while the module's one is up finds distributed's default
# HTTP port taken and says so; it then uses another port, which is all we need.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")


# -- tasks (module level, so worker processes can unpickle them) ---------------------
@task
def inc(x):
    return x + 1


@task
def add(x, y):
    return x + y


@task
def total(xs):
    return sum(xs)


@task
def numbers(n):
    return list(range(n))


@task
def nested():
    return [[1, 2], [3], [4, 5, 6]]


@task
def tenfold_unless_two(x):
    if x == 2:
        raise ValueError(f"item {x} is bad")
    return x * 10


@task(max_retries=1, retry_delay=timedelta(seconds=0.05))
def fails_on_first_attempt(x):
    if context.task_run_count == 1:
        raise RuntimeError("first attempt fails")
    return (x, context.task_run_count)


@task(max_retries=1, retry_delay=timedelta(seconds=0.05))
def always_fails():
    raise RuntimeError(f"attempt {context.task_run_count} failed")


@task
def describe_parameters(day, factor):
    return f"{day} x{factor} seen as {context.parameters['day']}"


@task
def log_hello(x):
    get_logger().info("hello from worker %s", x)
    return os.getpid()


@task
def make_lock():
    return threading.Lock()


@task
def use_lock(lock):
    return type(lock).__name__


@task
def count_cluster_workers(n):
    from distributed import get_client

    return len(get_client().scheduler_info()["workers"])


@task
def describe(x):
    return f"got {x!r}"


# -- executors ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """One real distributed cluster with two worker processes, shared by the module."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    yield cluster
    cluster.close()


def make_executor(kind, cluster):
    if kind == "local":
        return LocalExecutor()
    if kind == "threads":
        return LocalDaskExecutor("threads", num_workers=2)
    if kind == "processes":
        return LocalDaskExecutor("processes", num_workers=2)
    if kind == "dask":
        return DaskExecutor(address=cluster.scheduler_address)
    raise AssertionError(kind)


@pytest.fixture(params=EXECUTOR_KINDS)
def executor(request):
    cluster = request.getfixturevalue("cluster") if request.param == "dask" else None
    return make_executor(request.param, cluster)


def summary(flow, state):
    """A flow state's task states as plain comparable data: slug -> (kind, result).

    A failed task's result is an exception, compared by its type and text."""
    def plain(s):
        if isinstance(s.result, BaseException):
            return (type(s).__name__, repr(s.result))
        return (type(s).__name__, s.result)

    out = {}
    for t, s in state.result.items():
        if isinstance(s, Mapped):
            out[flow.slugs[t]] = ("Mapped", [plain(c) for c in s.map_states])
        else:
            out[flow.slugs[t]] = plain(s)
    return out


# -- flows: same states on every executor ---------------------------------------------
def test_a_chain_passes_each_result_to_the_next_task(executor):
    with Flow("chain") as flow:
        a = inc(0)
        b = inc(a)
        c = inc(b)

    state = flow.run(executor=executor)

    assert isinstance(state, Success), state
    assert [state.result[t].result for t in (a, b, c)] == [1, 2, 3]
    assert all(type(state.result[t]) is Success for t in (a, b, c))


def test_a_fan_out_and_reduce_combines_every_branch(executor):
    with Flow("fan-out") as flow:
        root = inc(1)
        branches = [add(root, k) for k in (10, 20, 30)]
        reduced = total(branches)

    state = flow.run(executor=executor)

    assert isinstance(state, Success), state
    assert [state.result[b].result for b in branches] == [12, 22, 32]
    assert state.result[reduced].result == 66


def test_mapping_with_unmapped_and_flatten_gives_one_child_per_item(executor):
    with Flow("mapping") as flow:
        plus_ten = add.map(numbers(4), unmapped(10))
        flat = add.map(flatten(nested()), unmapped(100))
        reduced = total(flat)

    state = flow.run(executor=executor)

    assert isinstance(state, Success), state
    assert isinstance(state.result[plus_ten], Mapped)
    assert [c.result for c in state.result[plus_ten].map_states] == [10, 11, 12, 13]
    assert [c.result for c in state.result[flat].map_states] == [101, 102, 103, 104, 105, 106]
    assert all(type(c) is Success for c in state.result[flat].map_states)
    assert state.result[reduced].result == 621


def test_mapping_over_a_mapped_task_feeds_child_i_from_child_i(executor):
    with Flow("map-over-map") as flow:
        first = inc.map(numbers(3))
        second = inc.map(first)
        third = add.map(second, first)
        reduced = total(third)

    state = flow.run(executor=executor)

    assert isinstance(state, Success), state
    assert state.result[first].result == [1, 2, 3]
    assert state.result[second].result == [2, 3, 4]
    assert state.result[third].result == [3, 5, 7]
    assert state.result[reduced].result == 15


def test_a_failing_mapped_child_fails_alone_and_its_reduce_trigger_fails(executor):
    with Flow("failing-child") as flow:
        tens = tenfold_unless_two.map(numbers(4))
        reduced = total(tens)

    state = flow.run(executor=executor)

    assert isinstance(state, Failed), state
    children = state.result[tens].map_states
    assert [type(c) for c in children] == [Success, Success, Failed, Success]
    assert [children[i].result for i in (0, 1, 3)] == [0, 10, 30]
    assert isinstance(children[2].result, ValueError)
    assert "item 2 is bad" in children[2].message
    assert isinstance(state.result[reduced], TriggerFailed)


def test_retries_rerun_a_failed_task_and_give_up_after_max_retries(executor):
    with Flow("retries") as flow:
        recovered = fails_on_first_attempt(7)
        mapped = fails_on_first_attempt.map(numbers(2))
        hopeless = always_fails()

    state = flow.run(executor=executor)

    assert isinstance(state, Failed), state
    assert type(state.result[recovered]) is Success
    assert state.result[recovered].result == (7, 2)
    assert state.result[mapped].result == [(0, 2), (1, 2)]
    assert type(state.result[hopeless]) is Failed
    assert "attempt 2 failed" in state.result[hopeless].message


def test_parameters_reach_tasks_as_inputs_and_through_the_context(executor):
    with Flow("parameters") as flow:
        day = Parameter("day")
        factor = Parameter("factor", default=3)
        described = describe_parameters(day, factor)
        scaled = add.map(numbers(factor), unmapped(factor))

    state = flow.run(executor=executor, day="2024-05-01")

    assert isinstance(state, Success), state
    assert state.result[described].result == "2024-05-01 x3 seen as 2024-05-01"
    assert state.result[scaled].result == [3, 4, 5]


def build_everything_flow():
    with Flow("everything") as flow:
        n = Parameter("n", default=3)
        chained = inc(inc(n))
        fanned = total([add(chained, 1), add(chained, 2)])
        mapped = inc.map(inc.map(numbers(n)))
        flat = add.map(flatten(nested()), unmapped(fanned))
        failing = tenfold_unless_two.map(numbers(n))
        fails_on_first_attempt.map(mapped)
        total(flat)
        reduce_failing = total(failing)
    return flow, reduce_failing


def test_every_executor_gives_the_same_states_and_results_as_the_local_executor(cluster):
    flow, reduce_failing = build_everything_flow()
    summaries = {kind: summary(flow, flow.run(executor=make_executor(kind, cluster), n=4))
                 for kind in EXECUTOR_KINDS}

    expected = summaries["local"]
    assert len(expected) == len(flow.tasks)
    assert expected[flow.slugs[reduce_failing]][0] == "TriggerFailed"
    for kind in EXECUTOR_KINDS[1:]:
        assert summaries[kind] == expected, kind


# -- parallelism ----------------------------------------------------------------------
def test_threads_executor_runs_independent_tasks_at_the_same_time():
    barrier = threading.Barrier(2, timeout=5)

    @task
    def meet(i):
        barrier.wait()  # breaks (and the task fails) unless the other task is running too
        return i

    with Flow("parallel") as flow:
        a = meet(1)
        b = meet(2)

    state = flow.run(executor=LocalDaskExecutor("threads", num_workers=2))

    assert isinstance(state, Success), state.result
    assert (state.result[a].result, state.result[b].result) == (1, 2)


@task
def meet_by_file(i, folder):
    """Leave a mark, then wait for the other task's mark: fails unless both run at once."""
    folder = Path(folder)
    (folder / f"here-{i}").touch()
    other = folder / f"here-{1 - i}"
    deadline = time.monotonic() + 20
    while not other.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {i} ran alone: the other never started meanwhile")
        time.sleep(0.01)
    return i


def test_processes_executor_runs_independent_tasks_at_the_same_time(tmp_path):
    # Dask's process scheduler batches 6 tasks per submit by default, which ran
    # these two one after the other in one worker.
    with Flow("parallel-processes") as flow:
        a = meet_by_file(0, str(tmp_path))
        b = meet_by_file(1, str(tmp_path))

    state = flow.run(executor=LocalDaskExecutor("processes", num_workers=2))

    assert isinstance(state, Success), [s.result for s in state.result.values()]
    assert (state.result[a].result, state.result[b].result) == (0, 1)


# -- logs from worker threads and processes -----------------------------------------------
@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_worker_log_records_arrive_once_in_this_process_with_run_identity(
        kind, cluster, log_records):
    executor = make_executor(kind, cluster if kind == "dask" else None)
    with Flow("logging-flow") as flow:
        pid = log_hello(41)

    state = flow.run(executor=executor)

    assert isinstance(state, Success), state
    assert state.result[pid].result != os.getpid()  # it really ran elsewhere
    hellos = [r for r in log_records.records if r.getMessage() == "hello from worker 41"]
    assert len(hellos) == 1, [r.getMessage() for r in log_records.records]
    record = hellos[0]
    assert record.task_name == "log_hello"
    assert record.flow_name == "logging-flow"
    assert record.name == "orchestrator.task.log_hello"
    assert record.process == state.result[pid].result


def test_mapped_children_logs_from_worker_processes_carry_their_map_index(cluster, log_records):
    with Flow("mapped-logging") as flow:
        log_hello.map(numbers(3))

    state = flow.run(executor=DaskExecutor(address=cluster.scheduler_address))

    assert isinstance(state, Success), state
    hellos = sorted((r.getMessage(), r.map_index, r.task_name) for r in log_records.records
                    if r.getMessage().startswith("hello from worker"))
    assert hellos == [(f"hello from worker {i}", i, "log_hello") for i in range(3)]


def test_worker_log_records_from_an_in_process_dask_cluster_arrive_once(log_records):
    # Workers are threads of this process here: a record must still reach the
    # handlers on the orchestrator logger once, not when logged and again when shipped.
    executor = DaskExecutor(cluster_kwargs={"n_workers": 1, "processes": False})
    with Flow("in-process-logging") as flow:
        log_hello(43)

    state = flow.run(executor=executor)

    assert isinstance(state, Success), state
    hellos = [r for r in log_records.records if r.getMessage() == "hello from worker 43"]
    assert len(hellos) == 1, [r.getMessage() for r in log_records.records]
    assert hellos[0].task_name == "log_hello"


def runner_lines(log_records):
    return sorted(r.getMessage() for r in log_records.records
                  if r.name == "orchestrator.engine.task_runner")


def test_fresh_worker_processes_ship_every_task_run_line_the_local_executor_logs(log_records):
    with Flow("runner-lines") as flow:
        total(inc.map(numbers(3)))

    flow.run(executor=LocalExecutor())
    local = runner_lines(log_records)
    log_records.records.clear()
    flow.run(executor=LocalDaskExecutor("processes", num_workers=2))
    shipped = runner_lines(log_records)

    assert "Task 'numbers': Starting task run..." in local
    assert shipped == local


def test_runner_log_records_on_worker_threads_carry_the_flow_run(log_records):
    with Flow("stamped") as flow:
        describe(1)

    state = flow.run(executor=LocalDaskExecutor("threads"))
    ids = {getattr(r, "flow_run_id", None) for r in log_records.records
           if r.name == "orchestrator.engine.task_runner"}
    assert state.is_successful()
    assert len(ids) == 1 and None not in ids


# -- unpicklable results ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_an_unpicklable_result_fails_its_task_with_a_reason_and_stops_downstream(kind, cluster):
    executor = make_executor(kind, cluster if kind == "dask" else None)
    with Flow("lock-flow") as flow:
        lock = make_lock()
        used = use_lock(lock)

    state = flow.run(executor=executor)  # returns a state: no TypeError escapes

    assert isinstance(state, Failed), state
    lock_state = state.result[lock]
    assert isinstance(lock_state, Failed), lock_state
    assert "'make_lock'" in lock_state.message
    assert "_thread.lock" in lock_state.message
    assert "cannot be pickled" in lock_state.message
    # Even when use_lock runs on the worker that holds the lock, it must not see a success.
    assert isinstance(state.result[used], TriggerFailed), state.result[used]


# -- DaskExecutor(cluster_class=callable) ------------------------------------------------
def test_dask_cluster_class_may_be_a_callable_sized_from_the_run_parameters():
    from distributed import LocalCluster

    executor = DaskExecutor(cluster_class=lambda: LocalCluster(
        n_workers=context.parameters["n"], processes=False, dashboard_address=None))
    with Flow("sized-cluster") as flow:
        workers = count_cluster_workers(Parameter("n"))

    state = flow.run(executor=executor, n=3)

    assert isinstance(state, Success), state
    assert state.result[workers].result == 3


# -- runs sharing an executor or a cluster ---------------------------------------------
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


# -- bad executor arguments -------------------------------------------------------------
def test_local_dask_executor_rejects_an_unknown_scheduler_naming_it():
    with pytest.raises(OrchestratorError, match=r"scheduler='bogus'.*'threads', 'processes'"):
        LocalDaskExecutor(scheduler="bogus")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_local_dask_executor_rejects_a_num_workers_that_is_not_a_positive_int(bad):
    with pytest.raises(OrchestratorError, match=r"num_workers=.*must be a positive int") as info:
        LocalDaskExecutor(num_workers=bad)
    assert repr(bad) in str(info.value)


def test_dask_executor_refuses_both_an_address_and_a_cluster_class():
    from distributed import LocalCluster

    with pytest.raises(OrchestratorError, match="either address=.*or.*cluster_class=.*not both"):
        DaskExecutor(address="tcp://127.0.0.1:8786", cluster_class=LocalCluster)


@pytest.mark.parametrize("bad, problem", [("no.such.Thing", "cannot be imported"),
                                          (42, "is not callable")])
def test_a_bad_dask_cluster_class_fails_the_run_with_a_message_naming_it(bad, problem):
    with Flow("bad-cluster") as flow:
        inc(1)

    state = flow.run(executor=DaskExecutor(cluster_class=bad))

    # The executor starts inside the run, so the error becomes the run's Failed state.
    assert isinstance(state, Failed), state
    assert isinstance(state.result, OrchestratorError)
    assert f"cluster_class={bad!r}" in state.message
    assert problem in state.message
    assert f"cluster_class={bad!r}" in str(state.result)


@pytest.mark.parametrize("executor, fragment", [
    ("local", "is not an executor"), (LocalExecutor, "pass an instance"),
])
def test_a_bad_executor_argument_is_one_clear_error(executor, fragment):
    with Flow("bad-executor") as flow:
        describe(1)
    with pytest.raises(OrchestratorError, match=fragment):
        flow.run(executor=executor)


WITHOUT_DISTRIBUTED = """
import sys
sys.modules["distributed"] = None  # as after a plain install: dask without distributed
import os, threading
from orchestrator import Flow, task
from orchestrator.executors import LocalDaskExecutor

@task
def where(i):
    return i * 10, os.getpid(), threading.get_ident()

with Flow("plain") as flow:
    where.map(list(range(4)))

if __name__ == "__main__":  # (worker processes import this file again)
    for scheduler in ("threads", "processes"):
        state = flow.run(executor=LocalDaskExecutor(scheduler, num_workers=2))
        assert state.is_successful(), state
        (mapped,) = [s for t, s in state.result.items() if t.name == "where"]
        results = [child.result for child in mapped.map_states]
        assert [value for value, _, _ in results] == [0, 10, 20, 30], results
        print(scheduler, len({pid for _, pid, _ in results}), "processes")
    assert "distributed" not in [m for m in sys.modules if sys.modules[m] is not None]
"""


def test_local_dask_executor_runs_without_the_distributed_package(tmp_path):
    # Prefect 1 users ran LocalDaskExecutor after a plain install: dask is a
    # dependency of ours, distributed (for DaskExecutor) an extra.
    import subprocess
    import sys

    script = tmp_path / "without_distributed.py"
    script.write_text(WITHOUT_DISTRIBUTED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "threads 1 processes" in done.stdout
    assert "processes" in done.stdout.splitlines()[1]

