"""The Prefect 1 FAQ's authoring snippets, completed and run with our imports.

Each test follows one snippet of /work/shared/seed/prefect1-faq.txt and asserts
what the FAQ says (or, where the README says we differ on purpose, what we do
instead). Snippets about agents, labels, heartbeats and registration are not
here: those parts do not exist yet.
"""

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator import Flow, Parameter, context, get_logger, task
from orchestrator.engine import run_logging
from orchestrator.engine.flow_runner import FlowRunner
from orchestrator.exceptions import ContextError
from orchestrator.executors import DaskExecutor
from orchestrator.results import LocalResult
from orchestrator.signals import FAIL, RETRY
from orchestrator.states import Failed, Pending, Running, Scheduled, Success


def edge_triples(flow):
    return {(e.upstream_task.name, e.downstream_task.name, e.key) for e in flow.edges}


# -- How do I set a task to be an upstream task? -------------------------------------
def make_upstream_tasks(order):
    @task
    def first_task():
        order.append("first")

    @task
    def second_task():
        order.append("second")

    @task
    def third_task(c_inputs):
        order.append("third")
        return c_inputs * 2

    return first_task, second_task, third_task


def test_faq_upstream_tasks_argument_and_set_upstream_build_the_same_graph():
    order_1, order_2 = [], []

    first_task, second_task, third_task = make_upstream_tasks(order_1)
    with Flow("example") as flow_1:  # Method 1: upstream_tasks argument
        a = first_task()
        b = second_task()
        c_1 = third_task(21, upstream_tasks=[a, b])

    first_task, second_task, third_task = make_upstream_tasks(order_2)
    with Flow("example") as flow_2:  # Method 2: set_upstream method
        a = first_task()
        b = second_task()
        c_2 = third_task(21)
        c_2.set_upstream(a)
        c_2.set_upstream(b)

    expected = {("first_task", "third_task", None), ("second_task", "third_task", None)}
    assert edge_triples(flow_1) == edge_triples(flow_2) == expected
    assert flow_1.constants[c_1] == flow_2.constants[c_2] == {"c_inputs": 21}

    state_1, state_2 = flow_1.run(), flow_2.run()
    assert state_1.result[c_1].result == state_2.result[c_2].result == 42
    for order in (order_1, order_2):
        assert sorted(order[:2]) == ["first", "second"]
        assert order[2] == "third"


# -- How do I add things to the context so I can reuse them in other tasks? ----------
def test_faq_adding_to_the_context_in_a_task_fails_and_says_to_use_a_parameter():
    @task
    def stash():
        context.shared_value = 42

    @task
    def stash_item():
        context["shared_value"] = 42

    @task(trigger=lambda upstream_states: True)
    def read():
        return context.get("shared_value", "absent")

    with Flow("context") as flow:
        by_attribute = stash()
        by_item = stash_item()
        reader = read(upstream_tasks=[by_attribute, by_item])

    state = flow.run()
    for t in (by_attribute, by_item):
        task_state = state.result[t]
        assert isinstance(task_state, Failed)
        assert isinstance(task_state.result, ContextError)
        assert isinstance(task_state.result, AttributeError)
        assert "Parameter" in str(task_state.result)
    assert state.result[reader].result == "absent"


def test_faq_context_is_read_only_outside_tasks_too():
    with pytest.raises(ContextError, match="Parameter"):
        context.anything = 1
    with pytest.raises(ContextError):
        context.update(anything=1)


def test_faq_a_parameter_carries_the_value_to_every_task_instead():
    @task
    def double(value):
        return value * 2

    @task
    def describe(value):
        return f"value={value}"

    with Flow("context") as flow:
        shared = Parameter("shared_value", default=21)
        doubled = double(shared)
        described = describe(shared)

    state = flow.run()
    assert state.result[doubled].result == 42
    assert state.result[described].result == "value=21"
    state = flow.run(shared_value=5)
    assert state.result[doubled].result == 10


# -- Is there an equivalent to Airflow sensors? ------------------------------------
def test_faq_retry_sensor_runs_again_at_start_time_without_max_retries():
    polls = []

    @task
    def my_sensor(**kwargs):
        polls.append((context.task_run_count, time.monotonic()))
        condition_not_met = len(polls) < 2
        if condition_not_met:
            raise RETRY("Condition not met, retrying in 0.2 seconds.",
                        start_time=datetime.now(timezone.utc)  # noqa: UP017
                        + timedelta(seconds=0.2))
        return "condition met"

    assert my_sensor.max_retries == 0
    with Flow("sensor") as flow:
        sensor = my_sensor()

    state = flow.run()
    assert state.is_successful()
    assert state.result[sensor].result == "condition met"
    assert [count for count, _ in polls] == [1, 2]
    assert polls[1][1] - polls[0][1] >= 0.18


def test_faq_while_loop_sensor_polls_inside_one_task_run():
    checks = []

    def check_condition():
        checks.append(1)
        return len(checks) < 3  # still not met for the first two checks

    @task
    def my_sensor(**kwargs):
        condition_not_met = True
        while condition_not_met:
            condition_not_met = check_condition()
        return context.task_run_count

    with Flow("sensor") as flow:
        sensor = my_sensor()

    state = flow.run()
    assert state.result[sensor].result == 1
    assert len(checks) == 3


# -- How do I set a dynamic default value for a Parameter? --------------------------
def test_faq_callable_parameter_default_is_evaluated_at_each_run():
    days = iter(["2024-05-01", "2024-05-02"])
    calls = []

    def today():
        calls.append(1)
        return next(days)

    @task
    def echo(day):
        return day

    with Flow("example") as flow:
        start_date = Parameter("start_date", default=today)
        out = echo(start_date)

    assert calls == []  # not evaluated when the flow is built
    first, second = flow.run(), flow.run()
    assert first.result[out].result == "2024-05-01"
    assert second.result[out].result == "2024-05-02"
    assert first.result[start_date].result == "2024-05-01"
    assert flow.run(start_date="2000-01-01").result[out].result == "2000-01-01"
    assert len(calls) == 2  # a given value does not call the default


def test_faq_get_date_task_defers_today_to_run_time():
    from datetime import date

    @task
    def get_date(day):
        if day is None:
            return date.today().strftime("%Y-%m-%d")
        return day

    with Flow("example") as flow:
        start_date = Parameter("start_date", default=None)
        new_date = get_date(start_date)

    assert not start_date.required
    before = date.today().strftime("%Y-%m-%d")
    got = flow.run().result[new_date].result
    after = date.today().strftime("%Y-%m-%d")
    assert got in (before, after)
    assert flow.run(start_date="2022-02-22").result[new_date].result == "2022-02-22"


# -- How can I set a custom flow run name? -------------------------------------------
def test_faq_flow_state_handler_sees_running_and_the_given_flow_run_name():
    # RenameFlowRun does not exist here; the run name is given when the run
    # starts instead. The FAQ's handler names its arguments (obj, new_state,
    # old_state), but Prefect 1 (and we) call handler(flow, old_state, new_state).
    seen = []

    def rename_handler(obj, old_state, new_state):
        if new_state.is_running():
            seen.append((obj, type(old_state), context.flow_run_name))
        return new_state

    @task
    def first_task():
        return context.flow_run_name

    with Flow("test-flow", state_handlers=[rename_handler]) as flow:
        name_seen_by_task = first_task()

    state = FlowRunner(flow).run(flow_run_name="nightly-2024-05-01")
    assert state.is_successful()
    # Prefect 1's FlowRunner.run() without a state starts from Pending.
    assert seen == [(flow, Pending, "nightly-2024-05-01")]
    assert state.result[name_seen_by_task].result == "nightly-2024-05-01"


def test_faq_flow_state_handler_sees_every_flow_transition():
    transitions = []

    def handler(flow, old_state, new_state):
        transitions.append((type(old_state), type(new_state)))

    @task
    def first_task():
        return 1

    with Flow("test-flow", state_handlers=[handler]) as flow:
        first_task()

    assert flow.run().is_successful()
    assert transitions == [(Scheduled, Running), (Running, Success)]


def test_faq_without_a_name_the_flow_run_name_defaults_to_the_run_id():
    @task
    def names():
        return context.flow_run_name, context.flow_run_id

    with Flow("test-flow") as flow:
        t = names()

    run_name, run_id = flow.run().result[t].result
    assert run_name == run_id and run_id


# -- Why do I get TypeError: cannot pickle ______ object? ------------------------
def test_faq_unpicklable_result_fails_the_checkpointing_task_with_the_fix(tmp_path):
    results = tmp_path / "results"

    @task(result=LocalResult(dir=results))
    def connect():
        return threading.Lock()

    with Flow("pickle") as flow:
        client = connect()

    state = flow.run()
    assert isinstance(state, Failed)
    task_state = state.result[client]
    assert isinstance(task_state, Failed)
    message = task_state.message
    assert "'connect'" in message
    assert type(threading.Lock()).__name__ in message
    assert "checkpoint=False" in message
    assert not results.exists() or list(results.iterdir()) == []


def test_faq_checkpoint_false_lets_a_task_return_an_unpicklable_client(tmp_path):
    results = tmp_path / "results"

    @task(result=LocalResult(dir=results), checkpoint=False)
    def connect():
        return threading.Lock()

    @task
    def use(client):
        with client:
            return "used"

    with Flow("pickle") as flow:
        used = use(connect())

    state = flow.run()
    assert state.is_successful()
    assert state.result[used].result == "used"
    assert not results.exists()


def test_faq_dask_unpicklable_result_fails_the_task_and_not_its_downstream_run():
    pytest.importorskip("distributed")

    @task
    def connect():
        return threading.Lock()

    @task
    def use(client):
        return "used"

    executor = DaskExecutor(cluster_kwargs={"n_workers": 1, "processes": True,
                                            "threads_per_worker": 1})
    with Flow("dask-pickle", executor=executor) as flow:
        client = connect()
        used = use(client)

    state = flow.run()
    connect_state = state.result[client]
    assert isinstance(connect_state, Failed)
    assert "'connect'" in connect_state.message
    assert type(threading.Lock()).__name__ in connect_state.message
    assert "inside the task" in connect_state.message
    # The run reports connect as Failed, so its downstream task (default trigger
    # all_successful) must not be reported as a Success, nor the flow run.
    assert not state.result[used].is_successful()
    assert isinstance(state, Failed)


# -- How can I change the number of DaskExecutor workers based on a Parameter? ---
def test_faq_dask_executor_cluster_class_sized_from_a_parameter():
    pytest.importorskip("distributed")
    made = []

    def dynamic_executor():
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=context.parameters["n_workers"], processes=False,
                               threads_per_worker=1, dashboard_address=None)
        made.append(cluster)
        return cluster

    @task
    def count_workers():
        from distributed import get_client

        return len(get_client().scheduler_info(n_workers=-1)["workers"])

    with Flow("example", executor=DaskExecutor(cluster_class=dynamic_executor)) as flow:
        flow.add_task(Parameter("n_workers", default=5))
        workers = count_workers()

    state = flow.run(n_workers=2)
    assert state.is_successful(), state.result[workers]
    assert state.result[workers].result == 2
    assert len(made) == 1
    assert made[0].status.name == "closed"


# -- How can I force a task to Fail based on a given condition? ------------------
def test_faq_raising_fail_ends_the_task_failed_with_its_message():
    @task
    def my_task(condition: bool = True):
        if condition:
            raise FAIL("this task failed")
        return "all is good"

    with Flow("fail") as flow:
        failing = my_task()
        passing = my_task(False)

    state = flow.run()
    assert isinstance(state, Failed)
    failed = state.result[failing]
    assert isinstance(failed, Failed)
    assert failed.message == "this task failed"
    assert isinstance(failed.result, FAIL)
    assert isinstance(state.result[passing], Success)
    assert state.result[passing].result == "all is good"


def test_faq_fail_is_not_swallowed_by_except_exception():
    @task
    def my_task():
        try:
            raise FAIL("this task failed")
        except Exception:  # noqa: BLE001 - the point: this must not catch FAIL
            return "swallowed"

    with Flow("fail") as flow:
        t = my_task()

    assert flow.run().result[t].message == "this task failed"


# -- How do I attach other loggers? ----------------------------------------------
@pytest.fixture
def mylib_logger():
    """The third-party logger 'mylib', restored afterwards."""
    logger = logging.getLogger("mylib")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def test_faq_extra_loggers_reach_the_run_log_with_the_task_stamped(home, mylib_logger,
                                                                   capsys):
    (home / "config.toml").write_text(
        '[logging]\nextra_loggers = ["mylib"]\n'
        'format = "%(task_name)s|%(name)s|%(message)s"\n'
    )
    run_logging.configure_logging()
    capsys.readouterr()

    @task
    def call_library():
        logging.getLogger("mylib").info("fetched 3 rows")

    with Flow("logs") as flow:
        call_library()

    assert flow.run().is_successful()
    err = capsys.readouterr().err
    assert "call_library|mylib|fetched 3 rows" in err.splitlines()


def test_faq_extra_logger_lines_are_not_duplicated_by_reconfiguring(home, mylib_logger,
                                                                    capsys):
    (home / "config.toml").write_text(
        '[logging]\nextra_loggers = ["mylib"]\nformat = "%(name)s|%(message)s"\n'
    )
    run_logging.configure_logging()
    run_logging.configure_logging()
    capsys.readouterr()

    @task
    def call_library():
        logging.getLogger("mylib").info("once")

    with Flow("logs") as flow:
        call_library()

    flow.run()
    assert capsys.readouterr().err.splitlines().count("mylib|once") == 1


# -- Why are the Dask logs not being shown? --------------------------------------
def test_faq_dask_worker_logs_arrive_in_the_flow_process(log_records):
    pytest.importorskip("distributed")

    @task
    def noisy():
        get_logger().info("hello from a dask worker")
        import os

        return os.getpid()

    executor = DaskExecutor(cluster_kwargs={"n_workers": 1, "processes": True,
                                            "threads_per_worker": 1})
    with Flow("dask-logs", executor=executor) as flow:
        t = noisy()

    state = flow.run()
    assert state.is_successful(), state.result[t]
    import os

    assert state.result[t].result != os.getpid()  # it did run in another process
    records = [r for r in log_records.records
               if r.getMessage() == "hello from a dask worker"]
    assert len(records) == 1
    assert records[0].task_name == "noisy"
    assert records[0].flow_name == "dask-logs"
    assert records[0].name == "orchestrator.task.noisy"


def test_faq_dask_task_runner_records_of_the_first_task_on_a_worker_arrive(log_records):
    pytest.importorskip("distributed")

    @task
    def first():
        return 1

    executor = DaskExecutor(cluster_kwargs={"n_workers": 1, "processes": True,
                                            "threads_per_worker": 1})
    with Flow("dask-logs", executor=executor) as flow:
        first()

    assert flow.run().is_successful()
    messages = log_records.messages("orchestrator.engine.task_runner")
    assert "Task 'first': Starting task run..." in messages
    assert ("Task 'first': Finished task run for task with final state: 'Success'"
            in messages)


def test_faq_rename_flow_run_from_a_flow_level_state_handler_in_a_stored_run(tmp_path):
    """The FAQ's RenameFlowRun handler, completed, renaming a run in the store."""
    from orchestrator import service
    from orchestrator.service import execution as backend
    from orchestrator.storage import Script
    from orchestrator.store import Store

    flow_file = tmp_path / "rename_flow.py"
    flow_file.write_text(
        "from orchestrator import Flow, task, context\n"
        "from orchestrator.tasks.flow_runs import RenameFlowRun\n"
        "\n"
        "def rename_handler(obj, old_state, new_state):\n"
        "    if new_state.is_running():\n"
        "        RenameFlowRun().run(flow_run_name=f\"report-{context.parameters['day']}\")\n"
        "    return new_state\n"
        "\n"
        "@task\n"
        "def first_task():\n"
        "    return 1\n"
        "\n"
        "with Flow('test-flow', state_handlers=[rename_handler]) as flow:\n"
        "    from orchestrator import Parameter\n"
        "    first_task(upstream_tasks=[Parameter('day')])\n"
        "flow.storage = __import__('orchestrator.storage', fromlist=['Script']).Script(__file__)\n")
    store = Store.open()
    store.create_project("faq")
    from orchestrator.flows.loading import load_flows_from_file

    flow = load_flows_from_file(flow_file)["test-flow"]
    assert isinstance(flow.storage, Script)
    service.register_flow(store, flow, "faq")
    run = service.create_flow_run(store, "test-flow", parameters={"day": "2024-05-01"})

    final = backend.execute_flow_run(store, run["id"], service.load_flow)

    assert final == "Success"
    assert store.get_flow_run(run["id"])["name"] == "report-2024-05-01"
