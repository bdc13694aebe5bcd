"""Prefect 1's utilities and behaviours that real Prefect 1 flows rely on.

Each test states the outcome Prefect 1.4.1 gives for the same code (checked by
running it under Prefect 1.4.1), and checks ours against it: apply_map,
resource_manager, pause_task, as_task, defaults_from_attrs, tags, Context,
raise_on_exception, Task.logger, Flow.replace, FlowRunner and TaskRunner as
Prefect 1 users call them, and the behaviour gaps closed for "real Prefect 1
flows run unchanged".
"""

import datetime as dt
import inspect
import pickle
import uuid

import pytest

import orchestrator
from orchestrator import (Context, Edge, Flow, FlowRunner, Parameter, Task, TaskRunner,
                          apply_map, as_task, case, context, defaults_from_attrs,
                          flatten, get_logger, merge, pause_task, raise_on_exception,
                          resource_manager, service, signals, tags, task, unmapped)
from orchestrator.service import execution as backend
from orchestrator.core.task import Constant
from orchestrator.executors import LocalExecutor
from orchestrator.schedules import IntervalSchedule
from orchestrator.states import (Cached, Failed, Mapped, Paused, Pending, Resume, Retrying,
                                 Running, Scheduled, Skipped, Success, TriggerFailed)
from orchestrator.store import Store

UTC = dt.timezone.utc


def unique(name):
    """A flow name no other test uses (result caches are keyed by flow name)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def by_name(state):
    """{task name: state class name} of a flow state's result (names unique in the flow)."""
    return {t.name: type(s).__name__ for t, s in state.result.items()}


@task
def one():
    return 1


@task
def inc(x):
    return x + 1


@task
def add(x, y=10):
    return x + y


# -- the public names ---------------------------------------------------------------
def test_prefect_1_root_and_utility_names_import_from_the_package_root():
    # prefect.{apply_map, resource_manager, tags}, prefect.utilities.tasks.{as_task,
    # pause_task, defaults_from_attrs}, prefect.utilities.context.Context,
    # prefect.utilities.debug.raise_on_exception, prefect.engine.{FlowRunner, TaskRunner}
    for name in ("apply_map", "resource_manager", "tags", "as_task", "pause_task",
                 "defaults_from_attrs", "Context", "raise_on_exception", "FlowRunner",
                 "TaskRunner", "get_logger", "case", "unmapped", "mapped", "flatten"):
        assert name in orchestrator.__all__
        assert getattr(orchestrator, name) is not None
    assert orchestrator.signals.ENDRUN(Success()).state == Success()  # prefect.engine.runner.ENDRUN


def test_import_orchestrator_does_not_import_the_engine_runners(python):
    import subprocess

    out = subprocess.run(
        [python, "-c", "import sys, orchestrator; print(sorted(m for m in sys.modules "
                       "if m.startswith('orchestrator.engine.') and 'runner' in m))"],
        capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_prefect_1_state_class_exists_with_prefect_1s_predicates():
    # prefect.engine.state in 1.4.1 (ClientFailed, a Cloud-only meta state, aside)
    for name in ("State", "Pending", "Scheduled", "Paused", "Submitted", "Queued", "Resume",
                 "Retrying", "Running", "Cancelling", "Finished", "Looped", "Success",
                 "Cached", "Mapped", "Cancelled", "Failed", "TimedOut", "TriggerFailed",
                 "ValidationFailed", "Skipped"):
        assert isinstance(getattr(orchestrator.states, name), type)
    assert Resume().is_scheduled() and Resume().is_pending()


def test_flow_get_tasks_has_prefect_1s_signature():
    assert list(inspect.signature(Flow.get_tasks).parameters) == [
        "self", "name", "slug", "tags", "task_type"]
    with Flow("f") as flow:
        a = add(one(), y=2)
    assert flow.get_tasks(name="add") == [a]
    assert flow.get_tasks(task_type=Task, name="one", tags=[]) == [flow.get_tasks("one")[0]]


def test_runner_signatures_take_prefect_1s_arguments_in_prefect_1s_order():
    assert list(inspect.signature(FlowRunner.__init__).parameters)[:4] == [
        "self", "flow", "task_runner_cls", "state_handlers"]
    assert list(inspect.signature(FlowRunner.run).parameters)[:9] == [
        "self", "state", "task_states", "return_tasks", "parameters",
        "task_runner_state_handlers", "executor", "context", "task_contexts"]
    assert list(inspect.signature(TaskRunner.__init__).parameters) == [
        "self", "task", "state_handlers", "flow_result"]
    assert list(inspect.signature(TaskRunner.run).parameters) == [
        "self", "state", "upstream_states", "context", "is_mapped_parent"]


# -- defaults_from_attrs, as_task, tags -----------------------------------------------
class Greet(Task):
    def __init__(self, greeting="hello", name=None, **kwargs):
        self.greeting = greeting
        self.who = name
        super().__init__(**kwargs)

    @defaults_from_attrs("greeting")
    def run(self, who, greeting=None):
        return f"{greeting} {who}"


def test_defaults_from_attrs_fills_arguments_not_given_from_the_task():
    # Prefect 1: MyTask(a=1).run() uses self.a; run(a=99) wins; run(a=None) keeps None.
    template = Greet(greeting="hi")
    assert template.run("ada") == "hi ada"
    assert template.run("ada", greeting="yo") == "yo ada"
    assert template.run("ada", greeting=None) == "None ada"
    with Flow("greet") as flow:
        g = template("ada")
    assert flow.run().result[g].result == "hi ada"


def test_as_task_wraps_values_as_prefect_1_does():
    t = Task(name="t")
    assert as_task(t) is t
    assert isinstance(as_task(5), Constant) and as_task(5).value == 5
    assert as_task([1, 2]).value == [1, 2]          # a list of constants is one Constant
    assert as_task(unmapped(t)) is t                # prefect: as_task(x.value)
    with Flow("f") as flow:
        gathered = as_task([one(), 2])
    assert flow.run().result[gathered].result == [1, 2]


def test_tags_tag_every_task_made_in_the_block():
    # prefect.tags("math", "function"): result.tags == {"function", "math"}
    with Flow("tagged"):
        with tags("math", "function"):
            a = add(1, 5)
            with tags("inner"):
                b = inc(a)
        c = inc(b)
    assert a.tags == {"math", "function"}
    assert b.tags == {"math", "function", "inner"}
    assert c.tags == set()


# -- pause_task -------------------------------------------------------------------------
@task
def wait_for_approval():
    pause_task("wait for me")
    return "approved"


def test_pause_task_pauses_until_resumed_by_resume_state_or_context():
    # Prefect 1: Paused("wait for me") with start_time None; Resume() or
    # context resume=True run it to Success.
    with Flow(unique("approve")) as flow:
        t = wait_for_approval()

    first = flow.run()
    assert isinstance(first, Running)
    assert type(first.result[t]) is Paused
    assert first.result[t].message == "wait for me"
    assert first.result[t].start_time is None

    resumed = flow.run(task_states={t: Resume()})
    assert resumed.is_successful() and resumed.result[t].result == "approved"
    assert flow.run(context={"resume": True}).result[t].result == "approved"


def test_pause_task_with_a_duration_resumes_by_itself_at_that_time():
    @task
    def pause_briefly():
        pause_task(duration=dt.timedelta(seconds=30))

    with Flow(unique("pause-30")) as flow:
        t = pause_briefly()
    before = dt.datetime.now(UTC)
    state = flow.run().result[t]

    assert type(state) is Paused
    assert state.message == "Pause signal raised during task execution."
    assert before + dt.timedelta(seconds=29) < state.start_time < \
        dt.datetime.now(UTC) + dt.timedelta(seconds=31)


# -- apply_map ---------------------------------------------------------------------------
@task
def is_even(x):
    return x % 2 == 0


def inc_if_even(x):
    with case(is_even(x), True):
        x2 = inc(x)
    return merge(x2, x)


def test_apply_map_maps_a_whole_branch_per_item():
    # Prefect 1's docstring example (merge of the branch that ran, else x).
    with Flow("apply-map") as flow:
        result = apply_map(inc_if_even, range(4))
    state = flow.run()
    assert state.is_successful()
    assert type(state.result[result]) is Mapped
    assert state.result[result].result == [1, 1, 3, 3]


def test_apply_map_takes_unmapped_flatten_and_tasks():
    # Prefect 1: [12, 13, 14], [2, 3, 4] and [3, 4, 5]
    @task
    def numbers():
        return [1, 2, 3]

    with Flow("apply-map-inputs") as flow:
        a = apply_map(lambda x, y: add(inc(x), y), [1, 2, 3], unmapped(10))
        b = apply_map(lambda x: inc(x), flatten([[1, 2], [3]]))
        c = apply_map(lambda x: add(inc(x), 1), numbers())
    state = flow.run()
    assert [state.result[t].result for t in (a, b, c)] == [[12, 13, 14], [2, 3, 4], [3, 4, 5]]


def test_apply_map_with_flow_passes_the_flow_to_the_function():
    flow = Flow("apply-map-imperative")
    result = apply_map(lambda x, flow: inc.copy().bind(x, flow=flow), [1, 2], flow=flow)
    assert flow.run().result[result].result == [2, 3]


def test_apply_map_refuses_what_prefect_1_refuses():
    with pytest.raises(ValueError, match="outside a `with Flow"):
        apply_map(inc, [1])
    with Flow("apply-map-bad"):
        with pytest.raises(TypeError, match="cannot map over 5"):
            apply_map(inc, 5)
        with pytest.raises(ValueError, match=r"call the task plainly there \(not .map\(\)\)"):
            apply_map(lambda x: inc.map(x), [1, 2])


# -- resource_manager --------------------------------------------------------------------
calls = []


@resource_manager
class Connection:
    def __init__(self, dsn, fail_setup=False):
        self.dsn = dsn
        self.fail_setup = fail_setup

    def setup(self):
        calls.append(("setup", self.dsn))
        if self.fail_setup:
            raise RuntimeError("no connection")
        return {"dsn": self.dsn}

    def cleanup(self, conn):
        calls.append(("cleanup", conn))


@task
def query(conn, n=0):
    calls.append(("query", conn["dsn"], n))
    return n


@task
def broken_query(conn):
    raise ValueError("bad query")


@pytest.fixture
def resource_calls():
    calls.clear()
    yield calls
    calls.clear()


def test_a_resource_is_set_up_before_its_block_and_cleaned_up_after(resource_calls):
    with Flow("resource") as flow:
        with Connection(Parameter("dsn", default="db1")) as conn:
            q1 = query(conn, 1)
            q2 = query(conn, 2)

    names = {(e.upstream_task.name, e.downstream_task.name, e.key) for e in flow.edges}
    # Prefect 1's graph: init -> setup -> block tasks -> cleanup (init and setup feed cleanup).
    assert {("Connection", "Connection.setup", "mgr"), ("Connection", "Connection.cleanup", "mgr"),
            ("Connection.setup", "Connection.cleanup", "resource"),
            ("Connection.setup", "query", "conn"), ("query", "Connection.cleanup", None),
            ("dsn", "Connection", "dsn")} == names
    assert flow.reference_tasks() == {q1, q2}  # setup and cleanup do not decide
    state = flow.run()
    assert state.is_successful()
    assert resource_calls[0] == ("setup", "db1")
    assert sorted(resource_calls[1:3]) == [("query", "db1", 1), ("query", "db1", 2)]
    assert resource_calls[3] == ("cleanup", {"dsn": "db1"})


def test_a_failed_setup_skips_the_cleanup_and_fails_the_block(resource_calls):
    # Prefect 1: Connection.setup Failed, query TriggerFailed, cleanup Skipped
    # ("Resource manager setup failed"), flow Failed.
    with Flow("resource-setup-fails") as flow:
        with Connection("db1", fail_setup=True) as conn:
            query(conn)
    state = flow.run()
    assert isinstance(state, Failed)
    assert by_name(state) == {"Connection": "Success", "Connection.setup": "Failed",
                              "query": "TriggerFailed", "Connection.cleanup": "Skipped"}
    cleanup = flow.get_tasks(name="Connection.cleanup")[0]
    assert state.result[cleanup].message == "Resource manager setup failed"


def test_a_failed_task_in_the_block_still_gets_its_resource_cleaned_up(resource_calls):
    with Flow("resource-task-fails") as flow:
        with Connection("db1") as conn:
            broken_query(conn)
    state = flow.run()
    assert isinstance(state, Failed)
    assert by_name(state)["Connection.cleanup"] == "Success"
    assert resource_calls[-1] == ("cleanup", {"dsn": "db1"})


def test_a_failed_cleanup_does_not_fail_the_flow():
    @resource_manager
    class BadCleanup:
        def setup(self):
            return {"dsn": "x"}

        def cleanup(self, conn):
            raise RuntimeError("cleanup failed")

    with Flow("resource-cleanup-fails") as flow:
        with BadCleanup() as conn:
            query(conn)
    state = flow.run()
    assert state.is_successful()
    assert by_name(state)["BadCleanup.cleanup"] == "Failed"


def test_the_imperative_resource_form_and_a_manager_without_setup(resource_calls):
    flow = Flow("resource-imperative")
    block = Connection("db7", flow=flow)
    with block as conn:
        q = query.copy()
        q.bind(conn=conn, n=1, flow=flow)
    assert flow.run().is_successful()
    assert resource_calls == [("setup", "db7"), ("query", "db7", 1),
                              ("cleanup", {"dsn": "db7"})]

    @resource_manager(name="Plain", cleanup_task_kwargs={"tags": ["cleanup"]})
    class Plain:
        def cleanup(self, resource):
            calls.append(("plain cleanup", resource))

    with Flow("resource-no-setup") as flow2:
        with Plain() as nothing:
            query({"dsn": "x"})
    assert nothing is None
    assert flow2.get_tasks(name="Plain.cleanup")[0].tags == {"cleanup"}
    assert flow2.run().is_successful()
    assert resource_calls[-1] == ("plain cleanup", None)


def test_a_resource_used_outside_a_flow_is_a_value_error():
    # Prefect 1: ValueError("Could not infer an active Flow context.")
    with pytest.raises(ValueError, match="outside a `with Flow"):
        Connection("db1")


# -- Context, raise_on_exception, get_logger, Task.logger -----------------------------------
def test_context_class_makes_a_read_only_mapping_of_its_own():
    ctx = Context({"a": 1}, b=2)
    assert (ctx.a, ctx["b"], ctx.get("zz", 3), ctx.to_dict()) == (1, 2, 3, {"a": 1, "b": 2})
    assert isinstance(context, Context)
    with pytest.raises(AttributeError, match="read-only"):
        ctx.a = 5
    with context(ctx):
        assert context.a == 1
    assert "a" not in context
    assert pickle.loads(pickle.dumps(ctx)).to_dict() == {"a": 1, "b": 2}
    assert pickle.loads(pickle.dumps(context)) is context


@task
def divide(x):
    return 1 / x


def test_raise_on_exception_lets_a_task_error_out_of_flow_run():
    # Prefect 1: ZeroDivisionError out of f.run(); FAIL/SKIP still become states.
    with Flow("raise") as flow:
        divide(0)
    with raise_on_exception():
        with pytest.raises(ZeroDivisionError):
            flow.run()
    assert isinstance(flow.run(), Failed)

    @task
    def fails():
        raise signals.FAIL("failed!")

    with Flow("raise-signal") as flow2:
        t = fails()
    with raise_on_exception():
        assert flow2.run().result[t].message == "failed!"


def test_raise_on_exception_raises_a_state_handler_error_too():
    def handler(task, old, new):
        raise KeyError("handler")

    with Flow("raise-handler") as flow:
        one.copy(state_handlers=[handler])()
    with raise_on_exception(), pytest.raises(KeyError):
        flow.run()


def test_get_logger_has_prefect_1s_signature():
    assert list(inspect.signature(get_logger).parameters) == ["name"]
    assert get_logger("x").name == "orchestrator.x"


class Chatty(Task):
    def run(self):
        self.logger.info("from run of %s", context.task_name)
        return self.logger.name


def log_transition(task, old_state, new_state):
    task.logger.info("%s -> %s", type(old_state).__name__, type(new_state).__name__)


def test_task_logger_logs_as_get_logger_does_in_run_and_in_state_handlers(log_records):
    with Flow("chatty") as flow:
        t = Chatty(name="chatty", state_handlers=[log_transition])()
    state = flow.run()

    assert state.result[t].result == "orchestrator.task.chatty"
    mine = [r for r in log_records.records if r.name == "orchestrator.task.chatty"]
    assert [r.getMessage() for r in mine] == [
        "Pending -> Running", "from run of chatty", "Running -> Success"]
    assert {(r.flow_name, r.task_name, r.task_slug) for r in mine} == {
        ("chatty", "chatty", "chatty-1")}
    assert Task(name="x").logger.name == "orchestrator.task.x"


def test_a_task_may_set_its_own_logger_as_prefect_1_subclasses_do():
    class Custom(Task):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.logger = get_logger("custom")

    assert Custom().logger.name == "orchestrator.custom"


def test_task_logger_records_reach_a_stored_runs_log(home):
    store = Store.open()
    try:
        store.create_project("etl")
        with Flow(unique("chatty-stored")) as flow:
            Chatty(name="chatty", state_handlers=[log_transition])()
        service.register_flow(store, flow, "etl")
        run = service.create_flow_run(store, flow.name)
        assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success"
        rows = [r for r in store.logs(run["id"]) if r["logger"] == "orchestrator.task.chatty"]
    finally:
        store.close()
    assert [r["message"] for r in rows] == [
        "Pending -> Running", "from run of chatty", "Running -> Success"]
    assert {r["task_slug"] for r in rows} == {"chatty-1"}


# -- Flow.replace -------------------------------------------------------------------------
def test_flow_replace_moves_edges_constants_and_reference_tasks():
    # Prefect 1: [('c', 10), ('b', 15)], reference tasks {c}.
    @task
    def ten():
        return 10

    with Flow("replace") as flow:
        a = one()
        add(a, y=5)
    flow.set_reference_tasks([a])
    c = ten.copy()
    flow.replace(a, c)

    assert a not in flow and c in flow
    assert flow.reference_tasks() == {c}
    state = flow.run()
    assert {t.name: s.result for t, s in state.result.items()} == {"ten": 10, "add": 15}


def test_flow_replace_with_a_value_and_a_foreign_task():
    with Flow("replace-value") as flow:
        a = one()
        b = add(a, y=1)
    flow.replace(a, 99)  # Prefect 1: a Constant task named '99'
    assert flow.run().result[b].result == 100
    with pytest.raises(ValueError, match="is not in flow 'replace-value'"):
        flow.replace(Task(name="stranger"), one)


def test_flow_replace_keeps_the_replaced_tasks_constant_inputs():
    # Prefect 1 leaves them on the old task (b then fails, missing x); edges and
    # constants are both inputs here, so both move.
    with Flow("replace-constants") as flow:
        b = add(1, y=5)
    new = add.copy()
    flow.replace(b, new)
    assert flow.run().result[new].result == 6


# -- FlowRunner and TaskRunner as Prefect 1 users call them ------------------------------------
@pytest.fixture
def small_flow():
    with Flow("runner") as flow:
        a = one()
        b = add(a)
        p = Parameter("p", default=3)
        c = add(p, y=1)
    return flow, a, b, c


def test_flow_runner_run_with_prefect_1s_arguments(small_flow):
    flow, a, b, c = small_flow
    state = FlowRunner(flow=flow).run(parameters={"p": 5}, task_states={a: Success(result=100)},
                                      return_tasks=[b, c], executor=LocalExecutor(),
                                      context={"today": "2024-05-01"})
    assert state.is_successful()
    assert set(state.result) == {b, c}       # only return_tasks, as in Prefect 1
    assert (state.result[b].result, state.result[c].result) == (110, 6)


def test_flow_runner_without_return_tasks_returns_every_tasks_state(small_flow):
    # Prefect 1 returns {} here; every task's state, as flow.run() gives, is more useful.
    flow, a, b, c = small_flow
    assert set(FlowRunner(flow).run().result) == set(flow.tasks)


def test_flow_runner_keeps_finished_and_future_states_and_refuses_foreign_return_tasks(small_flow):
    flow = small_flow[0]
    done = Success(result=5)
    assert FlowRunner(flow).run(state=done) is done
    later = Scheduled(start_time=dt.datetime.now(UTC) + dt.timedelta(hours=1))
    assert FlowRunner(flow).run(state=later) is later
    # Prefect 1: Failed with ValueError("Some tasks in return_tasks were not found ...")
    state = FlowRunner(flow).run(return_tasks=[Task(name="stranger")])
    assert isinstance(state, Failed) and isinstance(state.result, ValueError)
    assert "'stranger'" in state.message


def test_flow_runner_handlers_get_the_runners_and_task_contexts_reach_their_task():
    seen = []

    def record(runner, old, new):
        seen.append((type(runner).__name__, type(old).__name__, type(new).__name__))

    @task
    def read_context():
        return context.get("zz")

    with Flow("runner-handlers") as flow:
        r = read_context()
    state = FlowRunner(flow, state_handlers=[record]).run(
        task_runner_state_handlers=[record], task_contexts={r: {"zz": 7}})

    assert state.result[r].result == 7
    # Prefect 1's order: Pending -> Running for the flow, then the task's own.
    assert seen == [("FlowRunner", "Pending", "Running"), ("TaskRunner", "Pending", "Running"),
                    ("TaskRunner", "Running", "Success"), ("FlowRunner", "Running", "Success")]
    with pytest.raises(Exception, match="task_runner_cls"):
        FlowRunner(flow, task_runner_cls=object)


def test_flow_runner_takes_the_engines_keywords_as_a_backend_run_does(small_flow):
    @task
    def who():
        return context.flow_run_id, context.flow_run_name, context.today

    with Flow("runner-backend") as flow:
        w = who()
    state = FlowRunner(flow, executor=LocalExecutor(), inline_wait=0, backend=True).run(
        flow_run_id="7", flow_run_name="nightly",
        scheduled_start_time=dt.datetime(2024, 5, 1, 6, tzinfo=UTC))
    assert state.result[w].result == ("7", "nightly", "2024-05-01")


def test_task_runner_runs_one_task_from_its_upstream_states():
    # Prefect 1: 15; TriggerFailed; Pending; the given Success back; 7.
    edge = Edge(one, add, key="x")
    assert TaskRunner(task=add).run(upstream_states={edge: Success(result=5)}).result == 15
    assert isinstance(TaskRunner(add).run(upstream_states={edge: Failed()}), TriggerFailed)
    assert type(TaskRunner(add).run(upstream_states={edge: Pending()})) is Pending
    done = Success(result=9)
    assert TaskRunner(add).run(state=done) is done
    read = task(lambda: context.get("zz"))
    assert TaskRunner(read).run(context={"zz": 7}).result == 7


def test_task_runner_runs_one_attempt_and_maps_a_mapped_parent():
    @task(max_retries=1, retry_delay=dt.timedelta(0))
    def boom():
        raise ValueError("x")

    state = TaskRunner(boom).run()
    assert type(state) is Retrying and state.message == "Retrying Task (after attempt 1 of 2)"

    mapped = Edge(one, add, key="x", mapped=True)
    parent = TaskRunner(add).run(upstream_states={mapped: Success(result=[1, 2, 3])},
                                 is_mapped_parent=True)
    assert type(parent) is Mapped and parent.result == [11, 12, 13]


def test_task_runner_handlers_get_the_runner_after_the_tasks_own():
    seen = []

    def task_handler(t, old, new):
        seen.append(("task", type(new).__name__))

    def runner_handler(runner, old, new):
        seen.append((type(runner).__name__, type(new).__name__))

    TaskRunner(one.copy(state_handlers=[task_handler]), state_handlers=[runner_handler]).run()
    assert seen == [("task", "Running"), ("TaskRunner", "Running"),
                    ("task", "Success"), ("TaskRunner", "Success")]


# -- behaviour gaps --------------------------------------------------------------------------
def test_a_naive_schedule_start_date_is_utc():
    schedule = IntervalSchedule(start_date=dt.datetime(2024, 1, 1, 6),
                                interval=dt.timedelta(hours=1))
    # Prefect 1: [2024-01-01 08:00 UTC, 09:00 UTC]
    assert schedule.next(2, after=dt.datetime(2024, 1, 1, 7, 30)) == [
        dt.datetime(2024, 1, 1, 8, tzinfo=UTC), dt.datetime(2024, 1, 1, 9, tzinfo=UTC)]


def test_the_run_that_computes_a_cache_for_value_ends_cached():
    # Prefect 1: Cached on the first run and on the next (the same state object).
    calls = []
    transitions = []

    def record(t, old, new):
        transitions.append((type(old).__name__, type(new).__name__))

    @task(cache_for=dt.timedelta(minutes=1), state_handlers=[record])
    def expensive():
        calls.append(1)
        return 42

    with Flow(unique("cache-first")) as flow:
        t = expensive()
    first, second = flow.run().result[t], flow.run().result[t]

    assert type(first) is Cached and first.result == 42
    assert type(second) is Cached and second == first and calls == [1]
    assert transitions[:3] == [("Pending", "Running"), ("Running", "Success"),
                               ("Success", "Cached")]


def test_a_skipped_task_with_cache_for_is_not_cached():
    @task(cache_for=dt.timedelta(minutes=1))
    def skip():
        raise signals.SKIP("nothing to do")

    with Flow(unique("cache-skip")) as flow:
        t = skip()
    assert type(flow.run().result[t]) is Skipped
    assert type(flow.run().result[t]) is Skipped


@task
def yes():
    return "yes"


@task
def no():
    return "no"


@task
def condition():
    return True


def test_case_in_the_imperative_api():
    # Prefect 1: tasks added to a flow inside the block branch; after it, they do not.
    flow = Flow("imperative-case")
    cond = condition.copy()
    flow.add_task(cond)
    with case(cond, True):
        y = flow.add_task(yes.copy())
    with case(cond, False):
        n = no.copy()
        n.bind(flow=flow)
    after = yes.copy()
    with case(cond, False):
        pass
    flow.add_task(after)

    state = flow.run()
    assert state.is_successful()
    assert type(state.result[y]) is Success and type(state.result[n]) is Skipped
    assert type(state.result[after]) is Success
    assert sorted(t.name for t in flow.tasks) == ["case(False)", "case(True)", "condition",
                                                  "no", "yes", "yes"]
    with pytest.raises(TypeError, match="must be a constant, not a task"):
        case(cond, cond)


def test_state_handlers_may_set_attributes_of_the_new_state():
    # Prefect 1 handlers set message, result, context entries, timestamps...
    def edit(t, old, new):
        if new.is_successful():
            new.message = "changed"
            new.result = 42
            new.context["who"] = "me"
            new.timestamp = dt.datetime(2024, 1, 1)
        return new

    def edit_and_return_none(t, old, new):
        if new.is_running():
            new.message = "started by hand"

    seen = []

    def watch(t, old, new):
        seen.append(new.message)

    with Flow("handlers-edit") as flow:
        a = one.copy(state_handlers=[edit])()
        b = one.copy(state_handlers=[edit_and_return_none, watch])()
    state = flow.run()

    edited = state.result[a]
    assert (edited.message, edited.result, edited.context) == ("changed", 42, {"who": "me"})
    assert edited.timestamp == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert seen == ["started by hand", "Task run succeeded."]
    # The states every task shares were not changed by the handlers.
    assert state.result[b].message == "Task run succeeded."
    assert all(s.message != "started by hand" for s in state.result.values())


def test_a_state_is_open_to_a_handler_only_while_the_handler_runs():
    kept = []

    def keep(t, old, new):
        kept.append(new)

    def bad(t, old, new):
        new.colour = "red"

    with Flow("handlers-closed") as flow:
        one.copy(state_handlers=[keep])()
        b = one.copy(name="bad", state_handlers=[bad])()
    state = flow.run()

    with pytest.raises(AttributeError, match="immutable"):
        kept[0].message = "later"
    with pytest.raises(AttributeError, match="immutable"):
        Success().message = "outside a handler"
    assert isinstance(state.result[b], Failed)
    assert "no attribute 'colour' to set" in state.result[b].message


def test_graph_mistakes_raise_what_prefect_1_raises():
    t = Task(name="t")
    with pytest.raises(ValueError, match="cannot connect task 't' to itself"):
        Edge(t, t)
    with pytest.raises(ValueError, match="Parameter 'p' cannot depend on task 'a'"):
        Flow("f").add_edge(Task(name="a"), Parameter("p"))
    with pytest.raises(TypeError, match="cannot map over x=5"):
        with Flow("f"):
            inc.map(5)
    with pytest.raises(TypeError, match="cannot map over x='abc'"):
        with Flow("f"):
            inc.map(x="abc")


def test_running_or_registering_a_flow_inside_its_own_block_is_refused():
    with Flow("inside") as flow:
        one()
        with pytest.raises(RuntimeError, match="inside the `with Flow"):
            flow.run()
        with pytest.raises(ValueError, match="inside the `with Flow"):
            flow.register("etl")
    assert flow.run().is_successful()
    with pytest.raises(ValueError, match="return_tasks"):
        flow.run(return_tasks=[])


def test_a_custom_trigger_that_raises_gives_trigger_failed():
    # Prefect 1: TriggerFailed("Unexpected error while checking task trigger: ..."),
    # its result the exception.
    def broken_trigger(upstream_states):
        raise ValueError("boom")

    @task(trigger=broken_trigger)
    def after(x):
        return x

    with Flow("broken-trigger") as flow:
        t = after(one())
    state = flow.run().result[t]
    assert type(state) is TriggerFailed
    assert isinstance(state.result, ValueError)
    assert "boom" in state.message


def test_states_compare_as_prefect_1_compares_them():
    assert Success(result=1) != Success(result=2)
    assert Success("a", result=1) == Success("b", result=1)
    assert Scheduled() != Scheduled()  # each is scheduled for its own "now"
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert Scheduled(start_time=start) == Scheduled("other message", start_time=start)
    assert Cached(result=1, cached_inputs={"x": 1}) != Cached(result=1)
    assert Mapped(map_states=[Success(result=1)]) != Mapped(map_states=[Success(result=2)])
    assert len({Success(result=1), Success(result=1)}) == 1


def test_scheduled_start_time_defaults_to_now_and_retrying_to_the_run_count():
    before = dt.datetime.now(UTC)
    state = Scheduled()
    assert state.start_time.tzinfo is not None
    assert before <= state.start_time <= dt.datetime.now(UTC)
    assert Retrying().start_time is not None
    assert Paused().start_time is None         # Prefect 1: a pause has no end by default
    assert Retrying().run_count == 1
    with context(task_run_count=3):
        assert Retrying().run_count == 3
