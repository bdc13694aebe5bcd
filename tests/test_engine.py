"""The local engine end to end: retries, timeouts, state handlers, mapping,
branches, the run context, run logging, configuration, results and caching,
and parameters, each through real `flow.run()` calls."""

import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from datetime import timedelta

import pytest

import orchestrator
from orchestrator import (DateTimeParameter, Flow, Parameter, case, context, flatten,
                          get_logger, ifelse, merge, signals, switch, task, unmapped)
from orchestrator.cache_validators import all_inputs
from orchestrator.config import DEFAULTS, load_config
from orchestrator.engine import run_logging
from orchestrator.exceptions import ConfigError, ContextError
from orchestrator.results import LocalResult
from orchestrator.serializers import JSONSerializer, PickleSerializer
from orchestrator.states import (Cached, Failed, Mapped, Pending, Running,
                                 Scheduled, Skipped, Success, TimedOut, TriggerFailed)

UTC = dt.timezone.utc


def unique(name):
    """A flow name no other test uses (result caches are keyed by flow name)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@task
def fail_on_two(x):
    if x == 2:
        raise ValueError("bad")
    return x


@task
def describe(x):
    return f"got {x!r}"


# -- retries ---------------------------------------------------------------------

def test_a_task_failing_twice_then_succeeding_is_retried_until_it_succeeds():
    run_counts = []
    transitions = []

    def record(obj, old, new):
        transitions.append((type(old).__name__, type(new).__name__, new.message))

    @task(max_retries=2, retry_delay=dt.timedelta(seconds=0.05), state_handlers=[record])
    def flaky():
        run_counts.append(context.task_run_count)
        if len(run_counts) < 3:
            raise ValueError(f"attempt {len(run_counts)}")
        return "finally"

    with Flow("retries") as flow:
        t = flaky()

    started = time.monotonic()
    state = flow.run()
    elapsed = time.monotonic() - started

    assert state.is_successful()
    assert type(state.result[t]) is Success
    assert state.result[t].result == "finally"
    assert run_counts == [1, 2, 3]
    assert elapsed >= 0.09  # two retry delays of 0.05 s
    retrying = [(old, msg) for old, new, msg in transitions if new == "Retrying"]
    assert [msg for _, msg in retrying] == ["Retrying Task (after attempt 1 of 3)",
                                            "Retrying Task (after attempt 2 of 3)"]
    assert [(old, new) for old, new, _ in transitions][0] == ("Pending", "Running")
    assert [(old, new) for old, new, _ in transitions][-1] == ("Running", "Success")


def test_a_task_that_keeps_failing_ends_failed_after_its_last_retry():
    calls = []

    @task(max_retries=1, retry_delay=dt.timedelta(seconds=0.01))
    def always_fails():
        calls.append(1)
        raise ValueError("no")

    with Flow("retries-exhausted") as flow:
        t = always_fails()

    state = flow.run()

    assert type(state.result[t]) is Failed
    assert len(calls) == 2
    assert state.is_failed()


def test_retry_signal_retries_at_its_start_time_even_with_max_retries_zero():
    calls = []

    @task
    def sensor():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise signals.RETRY("not there yet",
                                start_time=dt.datetime.now(UTC) + dt.timedelta(seconds=0.1))
        return "arrived"

    with Flow("retry-signal") as flow:
        t = sensor()

    state = flow.run()

    assert type(state.result[t]) is Success
    assert state.result[t].result == "arrived"
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.09


# -- timeouts --------------------------------------------------------------------

def test_a_task_running_past_its_timeout_ends_timed_out_and_is_stopped():
    ticks = []

    @task(timeout=0.3)
    def slow():
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            ticks.append(1)
            time.sleep(0.05)
        return "too late"

    with Flow("timeout") as flow:
        t = slow()

    started = time.monotonic()
    state = flow.run()
    elapsed = time.monotonic() - started

    assert type(state.result[t]) is TimedOut
    assert state.result[t].message == "Task timed out during execution."
    assert state.is_failed()
    assert elapsed < 1.0
    time.sleep(0.15)  # let the interrupted thread reach its next instruction
    count = len(ticks)
    time.sleep(0.2)
    assert len(ticks) == count, "the timed-out task kept running"
    assert count <= 10


def test_a_task_finishing_within_its_timeout_succeeds_and_sees_the_context():
    @task(timeout=2)
    def quick():
        return context.task_name

    with Flow("timeout-ok") as flow:
        t = quick()

    state = flow.run()

    assert type(state.result[t]) is Success
    assert state.result[t].result == "quick"


# -- state handlers --------------------------------------------------------------

def test_task_state_handlers_receive_the_task_and_each_transition():
    calls = []

    def handler(obj, old, new):
        calls.append((obj, type(old), type(new)))

    @task(state_handlers=[handler])
    def work():
        return 1

    with Flow("handlers") as flow:
        t = work()

    flow.run()

    assert [(o, n) for _, o, n in calls] == [(Pending, Running), (Running, Success)]
    assert all(obj is t for obj, _, _ in calls)


def test_a_state_handler_returning_a_state_replaces_the_new_state():
    def replace_success(obj, old, new):
        if new.is_successful():
            return Skipped("replaced by handler")
        return None

    @task(state_handlers=[replace_success])
    def work():
        return 1

    with Flow("handler-replaces") as flow:
        t = work()

    state = flow.run()

    assert type(state.result[t]) is Skipped
    assert state.result[t].message == "replaced by handler"


def test_a_state_handler_raising_fails_the_task():
    def broken(obj, old, new):
        raise RuntimeError("handler bug")

    @task(state_handlers=[broken])
    def work():
        return 1

    with Flow("handler-raises") as flow:
        t = work()

    state = flow.run()

    assert type(state.result[t]) is Failed
    assert "Exception raised while calling state handlers" in state.result[t].message
    assert isinstance(state.result[t].result, RuntimeError)
    assert state.is_failed()


def test_a_retry_signal_reports_each_transition_once():
    transitions = []
    calls = []

    def record(obj, old, new):
        transitions.append((type(old).__name__, type(new).__name__))

    @task(state_handlers=[record])
    def sensor():
        calls.append(1)
        if len(calls) == 1:
            raise signals.RETRY("not yet", start_time=dt.datetime.now(UTC))
        return "ready"

    with Flow("retry-signal-handlers") as flow:
        sensor()

    flow.run()

    assert transitions == [("Pending", "Running"), ("Running", "Retrying"),
                           ("Retrying", "Running"), ("Running", "Success")]


def test_handlers_of_a_task_that_never_ran_see_it_leave_pending():
    transitions = []

    def record(obj, old, new):
        transitions.append((type(old).__name__, type(new).__name__))

    @task
    def fails():
        raise ValueError("x")

    @task
    def skips():
        raise signals.SKIP("x")

    @task(state_handlers=[record])
    def after(x):
        return x

    with Flow("handlers-not-run") as flow:
        after(fails())
        after(skips())

    flow.run()

    assert sorted(transitions) == [("Pending", "Skipped"), ("Pending", "TriggerFailed")]


def test_on_failure_is_called_once_with_the_task_and_failed_state():
    calls = []

    @task(on_failure=lambda t, s: calls.append((t, s)))
    def fails():
        raise ValueError("nope")

    @task(on_failure=lambda t, s: calls.append((t, s)))
    def works():
        return 1

    with Flow("on-failure") as flow:
        f = fails()
        works()

    flow.run()

    assert len(calls) == 1
    assert calls[0][0] is f
    assert type(calls[0][1]) is Failed


def test_flow_state_handlers_see_scheduled_running_success():
    calls = []

    def handler(flow, old, new):
        calls.append((flow, type(old), type(new)))

    @task
    def work():
        return 1

    with Flow("flow-handlers", state_handlers=[handler]) as flow:
        work()

    state = flow.run()

    assert state.is_successful()
    assert [(o, n) for _, o, n in calls] == [(Scheduled, Running), (Running, Success)]
    assert all(f is flow for f, _, _ in calls)


def test_flow_on_failure_is_called_when_the_flow_fails():
    calls = []

    @task
    def fails():
        raise ValueError("x")

    with Flow("flow-on-failure", on_failure=lambda f, s: calls.append(type(s))) as flow:
        fails()

    flow.run()

    assert calls == [Failed]


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


def test_terminal_state_handler_decides_the_final_state():
    def acceptable(flow, state, reference_states):
        return Success("failure is acceptable here")

    with Flow("terminal", terminal_state_handler=acceptable) as flow:
        fail_on_two(2)

    state = flow.run()
    assert state.is_successful() and state.message == "failure is acceptable here"


# -- mapping ---------------------------------------------------------------------

@task
def add(x, y):
    return x + y


@task
def inc(x):
    return x + 1


def test_map_with_an_unmapped_argument_gives_mapped_with_results_in_order():
    with Flow("map") as flow:
        m = add.map([1, 2, 3], unmapped(10))

    state = flow.run()

    parent = state.result[m]
    assert type(parent) is Mapped
    assert parent.result == [11, 12, 13]
    assert [s.result for s in parent.map_states] == [11, 12, 13]
    assert all(type(s) is Success for s in parent.map_states)
    assert state.is_successful()


def test_map_over_an_upstream_task_result():
    @task
    def numbers():
        return [5, 6]

    with Flow("map-upstream") as flow:
        m = inc.map(numbers())

    assert flow.run().result[m].result == [6, 7]


def test_map_over_an_empty_list_gives_empty_mapped_states_downstream_too():
    calls = []

    @task
    def record(x):
        calls.append(x)
        return x

    with Flow("map-empty") as flow:
        a = record.map([])
        b = inc.map(a)

    state = flow.run()

    assert type(state.result[a]) is Mapped
    assert state.result[a].result == []
    assert type(state.result[b]) is Mapped
    assert state.result[b].result == []
    assert calls == []
    assert state.is_successful()


def test_map_over_map_with_a_failing_child_fails_only_that_childs_downstream():
    @task
    def check(x):
        if x == 2:
            raise ValueError("two")
        return x

    with Flow("map-map") as flow:
        a = check.map([1, 2, 3])
        b = inc.map(a)

    state = flow.run()

    a_states = state.result[a].map_states
    b_states = state.result[b].map_states
    assert [type(s) for s in a_states] == [Success, Failed, Success]
    assert [type(s) for s in b_states] == [Success, TriggerFailed, Success]
    assert [b_states[0].result, b_states[2].result] == [2, 4]
    assert state.is_failed()


def test_a_reduce_task_downstream_of_a_mapped_task_receives_a_list():
    received = []

    @task
    def total(values):
        received.append(values)
        return sum(values)

    with Flow("reduce") as flow:
        t = total(inc.map([1, 2, 3]))

    state = flow.run()

    assert received == [[2, 3, 4]]
    assert state.result[t].result == 9


def test_a_reduce_task_after_a_failed_child_is_trigger_failed():
    @task
    def check(x):
        if x == 2:
            raise ValueError("two")
        return x

    @task
    def total(values):
        return sum(values)

    with Flow("reduce-failed") as flow:
        t = total(check.map([1, 2, 3]))

    state = flow.run()

    assert type(state.result[t]) is TriggerFailed
    assert state.is_failed()


def test_flatten_maps_over_the_items_of_a_list_of_lists():
    with Flow("flatten-literal") as flow:
        m = inc.map(flatten([[1, 2], [3]]))

    assert flow.run().result[m].result == [2, 3, 4]


def test_flatten_maps_over_the_items_of_a_mapped_task_returning_lists():
    @task
    def pair(x):
        return [x, x * 10]

    with Flow("flatten-mapped") as flow:
        m = inc.map(flatten(pair.map([1, 2])))

    state = flow.run()

    assert state.result[m].result == [2, 11, 3, 21]


def test_each_mapped_child_retries_on_its_own():
    calls = {}

    @task(max_retries=1, retry_delay=dt.timedelta(seconds=0.01))
    def flaky(x):
        calls[x] = calls.get(x, 0) + 1
        if x == 2 and calls[x] == 1:
            raise ValueError("first try")
        return x * 100

    with Flow("map-retries") as flow:
        m = flaky.map([1, 2, 3])

    state = flow.run()

    assert [type(s) for s in state.result[m].map_states] == [Success] * 3
    assert state.result[m].result == [100, 200, 300]
    assert calls == {1: 1, 2: 2, 3: 1}


def test_mapping_over_a_result_that_is_not_a_list_fails_with_a_reason():
    @task
    def number():
        return 7

    with Flow("map-int") as flow:
        m = inc.map(number())

    state = flow.run()

    assert state.result[m].is_failed()
    assert "not a list" in state.result[m].message
    assert "number" in state.result[m].message
    assert state.is_failed()


def test_mapping_over_a_failed_upstream_trigger_fails_the_parent():
    @task
    def numbers():
        raise ValueError("no numbers")

    with Flow("map-failed-upstream") as flow:
        m = inc.map(numbers())

    state = flow.run()

    assert type(state.result[m]) is TriggerFailed
    assert state.is_failed()


def test_mapped_children_see_their_map_index_and_full_name():
    seen = []

    @task
    def where(x):
        seen.append((x, context.map_index, context.task_full_name, context.task_name))
        return x

    with Flow("map-context") as flow:
        where.map(["a", "b"])

    flow.run()

    assert sorted(seen) == [("a", 0, "where[0]", "where"), ("b", 1, "where[1]", "where")]


def test_resuming_with_a_mapped_state_keeps_each_childs_own_state():
    with Flow("resume-mapped") as flow:
        first = fail_on_two.map([1, 2, 3])
        second = describe.map(first)

    state = flow.run()
    again = flow.run(task_states={first: state.result[first]})

    children = again.result[second].map_states
    assert [type(c) for c in children] == [Success, TriggerFailed, Success]
    assert again.is_failed()


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


# -- branches ---------------------------------------------------------------------

@task
def pick(value):
    return value


def _case_flow(value):
    calls = []

    @task
    def weekend():
        calls.append("weekend")
        return "relax"

    @task
    def weekday():
        calls.append("weekday")
        return "work"

    with Flow("case") as flow:
        cond = pick(value)
        with case(cond, True):
            a = weekend()
        with case(cond, False):
            b = weekday()
        m = merge(a, b)
    return flow, a, b, m, calls


def test_case_runs_the_matching_branch_skips_the_other_and_merge_returns_it():
    flow, a, b, m, calls = _case_flow(True)

    state = flow.run()

    assert type(state.result[a]) is Success
    assert type(state.result[b]) is Skipped
    assert state.result[m].result == "relax"
    assert calls == ["weekend"]
    assert state.is_successful()


def test_case_with_the_other_value_runs_the_other_branch():
    flow, a, b, m, calls = _case_flow(False)

    state = flow.run()

    assert type(state.result[a]) is Skipped
    assert state.result[m].result == "work"
    assert calls == ["weekday"]


def test_tasks_downstream_of_a_skipped_branch_inside_the_case_are_skipped():
    @task
    def step(x):
        return x

    with Flow("case-chain") as flow:
        with case(pick(False), True):
            first = step(1)
            second = step(first)

    state = flow.run()

    assert type(state.result[first]) is Skipped
    assert type(state.result[second]) is Skipped


@pytest.mark.parametrize("condition, ran, skipped_name", [(1, "yes", "no"), (0, "no", "yes")])
def test_ifelse_runs_one_branch_by_the_truth_of_the_condition(condition, ran, skipped_name):
    @task
    def yes():
        return "yes"

    @task
    def no():
        return "no"

    with Flow(f"ifelse-{condition}") as flow:
        branches = {"yes": yes(), "no": no()}
        ifelse(pick(condition), branches["yes"], branches["no"])
        m = merge(branches["yes"], branches["no"])

    state = flow.run()

    assert type(state.result[branches[ran]]) is Success
    assert type(state.result[branches[skipped_name]]) is Skipped
    assert state.result[m].result == ran


def test_switch_runs_only_the_branch_matching_the_condition():
    @task
    def branch(name):
        return name

    with Flow("switch") as flow:
        x = branch("x")
        y = branch("y")
        z = branch("z")
        switch(pick("y"), {"x": x, "y": y, "z": z})
        m = merge(x, y, z)

    state = flow.run()

    assert [type(state.result[t]) for t in (x, y, z)] == [Skipped, Success, Skipped]
    assert state.result[m].result == "y"
    assert state.is_successful()


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


# -- context ----------------------------------------------------------------------

def test_a_task_sees_the_run_context():
    seen = {}

    @task
    def look():
        for key in ("parameters", "flow_name", "flow_run_id", "task_name", "task_slug",
                    "task_run_count", "map_index", "today", "date",
                    "scheduled_start_time"):
            seen[key] = getattr(context, key)

    with Flow("context-flow") as flow:
        flow.add_task(Parameter("who", default="Ada"))
        look()

    state = flow.run(who="Grace")

    assert state.is_successful()
    assert seen["parameters"] == {"who": "Grace"}
    assert seen["flow_name"] == "context-flow"
    assert isinstance(seen["flow_run_id"], str) and seen["flow_run_id"]
    assert seen["task_name"] == "look"
    assert seen["task_slug"] == "look-1"
    assert seen["task_run_count"] == 1
    assert seen["map_index"] is None
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", seen["today"])
    assert isinstance(seen["date"], dt.datetime) and seen["date"].tzinfo is not None
    assert seen["today"] == seen["date"].date().isoformat()
    assert isinstance(seen["scheduled_start_time"], dt.datetime)
    assert seen["scheduled_start_time"].tzinfo is not None


def test_each_flow_run_gets_its_own_run_id():
    ids = []

    @task
    def look():
        ids.append(context.flow_run_id)

    with Flow("run-ids") as flow:
        look()

    flow.run()
    flow.run()

    assert len(ids) == 2 and ids[0] != ids[1]


def test_setting_a_context_attribute_raises_context_error_naming_parameters():
    with pytest.raises(ContextError, match="Parameter"):
        context.foo = 1


def test_setting_a_context_item_raises_context_error_naming_parameters():
    with pytest.raises(ContextError, match="Parameter"):
        context["foo"] = 1


def test_setting_the_context_inside_a_task_fails_the_task_with_context_error():
    @task
    def writes_attr():
        context.foo = 1

    @task
    def writes_item():
        context["foo"] = 1

    with Flow("context-write") as flow:
        a = writes_attr()
        b = writes_item()

    state = flow.run()

    for t in (a, b):
        assert type(state.result[t]) is Failed
        assert isinstance(state.result[t].result, ContextError)
        assert "Parameter" in str(state.result[t].result)


def test_values_pushed_with_context_block_are_visible_in_tasks():
    seen = []

    @task
    def look():
        seen.append(context.a)

    with Flow("context-block") as flow:
        look()

    with context(a=1):
        state = flow.run()

    assert state.is_successful()
    assert seen == [1]
    assert "a" not in context


def test_values_given_to_flow_run_context_are_visible_in_tasks():
    seen = []

    @task
    def look():
        seen.append(context.get("b"))

    with Flow("context-run") as flow:
        look()

    flow.run(context={"b": 2})

    assert seen == [2]
    assert context.get("b") is None


def test_outside_a_run_the_context_has_no_flow_name():
    assert "flow_name" not in context
    assert context.get("flow_name") is None
    with pytest.raises(AttributeError, match="flow_name"):
        context.flow_name


def test_values_given_in_the_run_context_win_for_backfills():
    @task
    def when():
        return context.today, context.flow_run_name

    with Flow("backfill") as flow:
        seen = when()

    state = flow.run(context={"today": "2021-01-01", "flow_run_name": "backfill-1"})
    assert state.result[seen].result == ("2021-01-01", "backfill-1")


# -- logging ------------------------------------------------------------------------

def test_get_logger_in_a_task_is_the_task_logger_and_records_carry_run_identity(log_records):
    names = []

    @task
    def talk(x):
        logger = get_logger()
        names.append(logger.name)
        logger.info("hello from the task")

    with Flow("log-flow") as flow:
        talk.map([1, 2])

    flow.run()

    assert names == ["orchestrator.task.talk"] * 2
    mine = [r for r in log_records.records if r.getMessage() == "hello from the task"]
    assert len(mine) == 2
    assert {r.name for r in mine} == {"orchestrator.task.talk"}
    assert {r.flow_name for r in mine} == {"log-flow"}
    assert {r.task_name for r in mine} == {"talk"}
    assert sorted(r.map_index for r in mine) == [0, 1]
    assert all(r.flow_run_id for r in mine)


def test_context_logger_is_the_task_logger(log_records):
    names = []

    @task
    def talk():
        logger = context.get("logger")
        names.append(logger.name)
        logger.warning("via context")

    with Flow("context-logger") as flow:
        talk()

    flow.run()

    assert names == ["orchestrator.task.talk"]
    assert "via context" in log_records.messages("orchestrator.task.talk")


def test_log_stdout_routes_print_lines_to_the_task_logger(log_records, capsys):
    @task(log_stdout=True)
    def chatty():
        print("line one")
        print("line two")

    with Flow("log-stdout") as flow:
        chatty()

    flow.run()

    messages = log_records.messages("orchestrator.task.chatty")
    assert "line one" in messages and "line two" in messages
    assert "line one" not in capsys.readouterr().out


def test_print_without_log_stdout_goes_to_stdout_not_the_logger(log_records, capsys):
    @task
    def plain():
        print("to stdout")

    with Flow("no-log-stdout") as flow:
        plain()

    flow.run()

    assert "to stdout" in capsys.readouterr().out
    assert "to stdout" not in log_records.messages()


def test_task_runs_log_start_and_final_state_at_info(log_records):
    @task
    def x():
        return 1

    with Flow("log-lines") as flow:
        x()

    flow.run()

    messages = log_records.messages()
    assert "Task 'x': Starting task run..." in messages
    assert "Task 'x': Finished task run for task with final state: 'Success'" in messages


def test_logging_level_warning_from_the_environment_suppresses_info(monkeypatch, log_records):
    monkeypatch.setenv("ORCHESTRATOR__LOGGING__LEVEL", "WARNING")
    run_logging.configure_logging()

    @task
    def x():
        get_logger().info("an info line")
        get_logger().warning("a warning line")

    with Flow("log-warning") as flow:
        x()

    flow.run()

    messages = log_records.messages()
    assert "a warning line" in messages
    assert "an info line" not in messages
    assert not any("Starting task run" in m for m in messages)


# -- configuration ----------------------------------------------------------------

def test_load_config_gives_defaults_with_default_source(home):
    config = load_config()

    assert config["logging"]["level"] == "INFO"
    assert config["flows"]["checkpointing"] is False
    assert config.source("logging", "level") == "default"


def test_load_config_reads_the_config_file_in_orchestrator_home(home):
    (home / "config.toml").write_text('[logging]\nlevel = "DEBUG"\nextra_loggers = ["boto3"]\n')

    config = load_config()

    assert config["logging"]["level"] == "DEBUG"
    assert config["logging"]["extra_loggers"] == ["boto3"]
    assert config.source("logging", "level") == str(home / "config.toml")
    assert config.source("flows", "checkpointing") == "default"


def test_environment_overrides_the_config_file_and_says_so(home, monkeypatch):
    (home / "config.toml").write_text('[logging]\nlevel = "DEBUG"\n')
    monkeypatch.setenv("ORCHESTRATOR__LOGGING__LEVEL", "ERROR")
    monkeypatch.setenv("ORCHESTRATOR__FLOWS__CHECKPOINTING", "true")

    config = load_config()

    assert config["logging"]["level"] == "ERROR"
    assert config.source("logging", "level") == "ORCHESTRATOR__LOGGING__LEVEL"
    assert config["flows"]["checkpointing"] is True
    assert config.source("flows", "checkpointing") == "ORCHESTRATOR__FLOWS__CHECKPOINTING"


def test_invalid_toml_raises_config_error_naming_the_file(home):
    path = home / "config.toml"
    path.write_text("[logging\nlevel = \n")
    try:
        with pytest.raises(ConfigError) as info:
            load_config()
    finally:
        path.unlink()  # the home fixture reloads the config when the test ends

    assert str(path) in str(info.value)


def test_extra_loggers_given_as_a_string_raises_config_error(home):
    path = home / "config.toml"
    path.write_text('[logging]\nextra_loggers = "boto3"\n')
    try:
        with pytest.raises(ConfigError, match="extra_loggers"):
            load_config()
    finally:
        path.unlink()


def test_extra_loggers_as_a_bare_string_in_the_environment_raises_config_error():
    environ = {"ORCHESTRATOR__LOGGING__EXTRA_LOGGERS": "boto3"}

    with pytest.raises(ConfigError, match="list"):
        load_config(environ=environ)


def test_a_config_read_before_is_read_again_when_any_of_its_sources_changes(home, monkeypatch):
    path = home / "config.toml"
    path.write_text("[services]\nheartbeat_interval = 2\n")
    first = load_config()
    first["services"]["heartbeat_interval"] = 99  # a caller's change stays its own
    assert load_config()["services"]["heartbeat_interval"] == 2.0
    first["logging"]["extra_loggers"].append("mine")  # (its lists too)
    assert load_config()["logging"]["extra_loggers"] == []

    path.write_text("[services]\nheartbeat_interval = 3\n")  # same size, same instant
    assert load_config()["services"]["heartbeat_interval"] == 3.0
    monkeypatch.setenv("ORCHESTRATOR__SERVICES__HEARTBEAT_INTERVAL", "4")
    assert load_config()["services"]["heartbeat_interval"] == 4.0
    monkeypatch.delenv("ORCHESTRATOR__SERVICES__HEARTBEAT_INTERVAL")
    path.write_text("[services]\nheartbeat_interval = \n")
    try:
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_config()
    finally:
        path.unlink()
    assert load_config()["services"]["heartbeat_interval"] == DEFAULTS["services"][
        "heartbeat_interval"]


def test_config_has_no_tasks_section():
    assert "tasks" not in load_config(environ={})


def test_env_variable_with_too_many_parts_names_itself_and_the_shape():
    name = "ORCHESTRATOR__TASKS__DEFAULTS__MAX_RETRIES"
    with pytest.raises(ConfigError) as info:
        load_config(environ={name: "2"})

    message = str(info.value)
    assert name in message
    assert "ORCHESTRATOR__SECTION__KEY" in message
    assert "nested sections are not supported" in message


BOOLEAN_KEYS = [("logging", "propagate"), ("flows", "checkpointing"),
                ("flows", "use_local_secrets")]


def env(section, key, text):
    return {f"ORCHESTRATOR__{section.upper()}__{key.upper()}": text}


@pytest.mark.parametrize("section, key", BOOLEAN_KEYS)
@pytest.mark.parametrize("text, expected", [
    ("true", True), ("false", False), ("False", False), ("TRUE", True), ("yes", True),
    ("No", False), ("1", True), ("0", False),
])
def test_boolean_settings_accept_boolean_words_and_become_bools(section, key, text, expected):
    value = load_config(environ=env(section, key, text))[section][key]

    assert value is expected


@pytest.mark.parametrize("section, key", BOOLEAN_KEYS)
@pytest.mark.parametrize("text", ["maybe", "2", "[1]"])
def test_boolean_settings_reject_other_values_naming_key_value_and_choices(section, key, text):
    with pytest.raises(ConfigError) as info:
        load_config(environ=env(section, key, text))

    message = str(info.value)
    assert f"{section}.{key}" in message
    assert text in message
    assert "true" in message and "false" in message


def test_boolean_settings_from_the_config_file_become_bools(home):
    path = home / "config.toml"
    path.write_text('[flows]\ncheckpointing = "no"\nuse_local_secrets = true\n')
    try:
        flows = load_config()["flows"]
    finally:
        path.unlink()

    assert flows["checkpointing"] is False
    assert flows["use_local_secrets"] is True


def test_use_local_secrets_may_be_absent():
    assert load_config(environ={})["flows"].get("use_local_secrets") is None


@pytest.mark.parametrize("text", ["3", "[1, 2]", '["boto3", 3]'])
def test_extra_loggers_must_be_a_list_of_strings(text):
    with pytest.raises(ConfigError, match="extra_loggers"):
        load_config(environ=env("logging", "extra_loggers", text))


def test_extra_loggers_list_of_strings_is_accepted():
    config = load_config(environ=env("logging", "extra_loggers", '["boto3", "urllib3"]'))
    assert config["logging"]["extra_loggers"] == ["boto3", "urllib3"]


@pytest.mark.parametrize("fmt", ["%(foo", "[%(asctime)s] %(message)s %(foo"])
def test_an_invalid_log_format_is_a_config_error_naming_the_setting(fmt):
    with pytest.raises(ConfigError) as info:
        load_config(environ=env("logging", "format", f"'{fmt}'"))

    message = str(info.value)
    assert "logging.format" in message
    assert fmt in message
    assert "%(name)s" in message  # shows the shape of a field


def test_a_log_format_with_an_unknown_field_is_a_config_error():
    with pytest.raises(ConfigError, match=r"logging.format.*'nope'"):
        load_config(environ=env("logging", "format", "'%(nope)s'"))


def test_a_log_format_may_use_the_run_stamps():
    fmt = "%(flow_name)s %(task_name)s %(map_index)s %(message)s"
    config = load_config(environ=env("logging", "format", f"'{fmt}'"))
    assert config["logging"]["format"] == fmt


@pytest.mark.parametrize("key, text", [("format", "3"), ("datefmt", "[1]")])
def test_log_format_and_datefmt_must_be_strings(key, text):
    with pytest.raises(ConfigError, match=f"logging.{key}"):
        load_config(environ=env("logging", key, text))


def test_configure_logging_rejects_an_invalid_format_with_a_config_error():
    config = load_config(environ={})
    config["logging"] = dict(config["logging"], format="%(foo")

    with pytest.raises(ConfigError, match="logging.format"):
        run_logging.configure_logging(config)


def test_configure_logging_propagates_false_given_as_a_word():
    run_logging.configure_logging(load_config(environ=env("logging", "propagate", "False")))

    assert logging.getLogger("orchestrator").propagate is False


# -- results and checkpointing -------------------------------------------------------

def test_a_task_with_local_result_writes_its_result_file(tmp_path):
    @task(result=LocalResult(dir=tmp_path, location="{task_name}-{map_index}.pkl"))
    def make(x):
        return {"x": x}

    with Flow("local-result") as flow:
        m = make.map([1, 2])

    state = flow.run()

    children = state.result[m].map_states
    assert [c.location for c in children] == [str(tmp_path / "make-0.pkl"),
                                              str(tmp_path / "make-1.pkl")]
    assert (tmp_path / "make-0.pkl").is_file()
    assert LocalResult().read(children[1].location) == {"x": 2}


def test_an_unmapped_task_with_local_result_reports_its_location(tmp_path):
    @task(result=LocalResult(dir=tmp_path, location="{task_name}.pkl"))
    def make():
        return [1, 2, 3]

    with Flow("local-result-one") as flow:
        t = make()

    state = flow.run()

    assert state.result[t].location == str(tmp_path / "make.pkl")
    assert LocalResult().read(state.result[t].location) == [1, 2, 3]


def test_json_serializer_writes_readable_json(tmp_path):
    @task(result=LocalResult(dir=tmp_path, location="out.json", serializer=JSONSerializer()))
    def make():
        return {"city": "Oslo", "temps": [1, 2]}

    with Flow("json-result") as flow:
        make()

    flow.run()

    assert json.loads((tmp_path / "out.json").read_text()) == {"city": "Oslo",
                                                               "temps": [1, 2]}


def test_a_task_whose_target_exists_is_cached_and_not_run(tmp_path):
    calls = []
    (tmp_path / "make.out").write_bytes(PickleSerializer().serialize("from before"))

    @task(result=LocalResult(dir=tmp_path), target="{task_name}.out")
    def make():
        calls.append(1)
        return "fresh"

    with Flow("target") as flow:
        t = make()

    state = flow.run()

    assert type(state.result[t]) is Cached
    assert state.result[t].result == "from before"
    assert calls == []


def test_a_task_with_a_missing_target_runs_and_writes_it_for_next_time(tmp_path):
    calls = []

    @task(result=LocalResult(dir=tmp_path), target="{task_name}.out")
    def make():
        calls.append(1)
        return "fresh"

    with Flow("target-write") as flow:
        t = make()

    first = flow.run()
    second = flow.run()

    assert type(first.result[t]) is Success
    assert (tmp_path / "make.out").is_file()
    assert type(second.result[t]) is Cached
    assert second.result[t].result == "fresh"
    assert calls == [1]


def test_checkpointing_is_off_by_default_for_tasks_without_result(tmp_path):
    @task
    def make():
        return 1

    with Flow("no-checkpoint", result=LocalResult(dir=tmp_path)) as flow:
        t = make()

    state = flow.run()

    assert state.result[t].location is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_checkpointing_on_in_the_environment_writes_every_task(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR__FLOWS__CHECKPOINTING", "true")

    @task
    def one():
        return 1

    @task
    def two(x):
        return x + 1

    with Flow("checkpoint-all", result=LocalResult(dir=tmp_path)) as flow:
        a = one()
        b = two(a)

    state = flow.run()

    for t, value in ((a, 1), (b, 2)):
        location = state.result[t].location
        assert location is not None
        assert location.startswith(str(tmp_path))
        assert LocalResult().read(location) == value


def test_an_unpicklable_result_with_local_result_fails_with_a_reason(tmp_path):
    @task(result=LocalResult(dir=tmp_path))
    def make_lock():
        return threading.Lock()

    with Flow("unpicklable") as flow:
        t = make_lock()

    state = flow.run()

    failed = state.result[t]
    assert type(failed) is Failed
    assert "make_lock" in failed.message
    assert "_thread.lock" in failed.message
    assert "checkpoint=False" in failed.message
    assert state.is_failed()


def test_checkpoint_false_lets_an_unpicklable_result_through(tmp_path):
    @task(result=LocalResult(dir=tmp_path), checkpoint=False)
    def make_lock():
        return threading.Lock()

    with Flow("unpicklable-ok") as flow:
        t = make_lock()

    state = flow.run()

    assert type(state.result[t]) is Success
    assert state.result[t].location is None


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


# -- caching ------------------------------------------------------------------------

def test_cache_for_returns_cached_on_the_next_run_without_calling_the_task():
    calls = []

    @task(cache_for=dt.timedelta(minutes=1))
    def expensive():
        calls.append(1)
        return 42

    with Flow(unique("cache-for")) as flow:
        t = expensive()

    first = flow.run()
    second = flow.run()

    # As in Prefect 1, the run that computes the value ends Cached too.
    assert type(first.result[t]) is Cached
    assert type(second.result[t]) is Cached
    assert second.result[t].result == 42
    assert calls == [1]


def test_mapped_children_with_cache_for_each_compute_their_own_result():
    calls = []

    @task(cache_for=dt.timedelta(minutes=1))
    def square(x):
        calls.append(x)
        return x * x

    with Flow(unique("cache-mapped")) as flow:
        m = square.map([1, 2, 3])

    state = flow.run()

    assert state.result[m].result == [1, 4, 9]
    assert sorted(calls) == [1, 2, 3]


def test_all_inputs_cache_validator_recomputes_when_inputs_change():
    calls = []

    @task(cache_for=dt.timedelta(minutes=1), cache_validator=all_inputs)
    def square(x):
        calls.append(x)
        return x * x

    with Flow(unique("cache-inputs")) as flow:
        t = square(Parameter("x"))

    runs = [flow.run(x=2), flow.run(x=2), flow.run(x=3)]

    assert [type(r.result[t]) for r in runs] == [Cached, Cached, Cached]  # as in Prefect 1
    assert [r.result[t].result for r in runs] == [4, 4, 9]
    assert calls == [2, 3]


# -- parameters ---------------------------------------------------------------------

def test_a_callable_parameter_default_is_called_for_each_run():
    counter = iter(range(100))

    @task
    def show(n):
        return n

    with Flow("callable-default") as flow:
        t = show(Parameter("n", default=lambda: next(counter)))

    results = [flow.run().result[t].result for _ in range(3)]

    assert results == [0, 1, 2]


def test_a_given_parameter_value_overrides_a_callable_default():
    called = []

    def default():
        called.append(1)
        return "default"

    @task
    def show(v):
        return v

    with Flow("given-param") as flow:
        t = show(Parameter("v", default=default))

    assert flow.run(v="given").result[t].result == "given"
    assert called == []


def test_datetime_parameter_parses_an_iso_string():
    @task
    def show(when):
        return when

    with Flow("datetime-param") as flow:
        t = show(DateTimeParameter("when"))

    state = flow.run(when="2024-05-01T06:30:00+00:00")

    assert state.result[t].result == dt.datetime(2024, 5, 1, 6, 30, tzinfo=UTC)


def test_datetime_parameter_with_a_bad_string_fails_the_parameter():
    @task
    def show(when):
        return when

    with Flow("datetime-param-bad") as flow:
        p = DateTimeParameter("when")
        t = show(p)

    state = flow.run(when="not a date")

    assert type(state.result[p]) is Failed
    assert "ISO 8601" in state.result[p].message
    assert type(state.result[t]) is TriggerFailed


def test_package_exports_the_authoring_api():
    for name in ("Flow", "Task", "task", "Parameter", "DateTimeParameter", "unmapped",
                 "flatten", "case", "merge", "ifelse", "switch", "context", "get_logger"):
        assert hasattr(orchestrator, name), name
