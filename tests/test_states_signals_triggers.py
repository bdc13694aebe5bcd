"""States, signals and triggers: the state hierarchy and its predicates, the
signals a task raises to choose its state, and the trigger functions that decide
whether a task runs, each exercised in real flow runs."""

import datetime as dt
import pickle

import pytest

from orchestrator import Flow, context, task, triggers
from orchestrator.executors import LocalDaskExecutor
from orchestrator.signals import (ENDRUN, FAIL, LOOP, PAUSE, RETRY, SKIP, SUCCESS,
                                  TRIGGERFAIL)
from orchestrator.states import (Cached, Failed, Finished, Looped, Mapped, Paused,
                                 Pending, Retrying, Running, Scheduled, Skipped,
                                 Success, TimedOut, TriggerFailed)
from orchestrator.triggers import manual_only

UTC = dt.timezone.utc


# -- states -------------------------------------------------------------------

@pytest.mark.parametrize("attr", ["message", "result", "location", "context"])
def test_setting_an_attribute_of_a_state_raises_attribute_error(attr):
    state = Success("done", result=1)

    with pytest.raises(AttributeError, match="immutable"):
        setattr(state, attr, "changed")

    assert state.message == "done"
    assert state.result == 1


def test_deleting_an_attribute_of_a_state_raises_attribute_error():
    state = Failed("bad")

    with pytest.raises(AttributeError):
        del state.message

    assert state.message == "bad"


def test_replace_returns_a_new_state_and_leaves_the_original_unchanged():
    state = Success("done", result=1)

    new = state.replace(result=2)

    assert type(new) is Success
    assert new.result == 2 and new.message == "done"
    assert state.result == 1


PREDICATES = ["is_pending", "is_scheduled", "is_retrying", "is_paused", "is_running",
              "is_finished", "is_successful", "is_failed", "is_skipped", "is_mapped",
              "is_cached", "is_looped"]

EXPECTED_TRUE = {
    Pending: {"is_pending"},
    Scheduled: {"is_pending", "is_scheduled"},
    Retrying: {"is_pending", "is_scheduled", "is_retrying"},
    Paused: {"is_pending", "is_scheduled", "is_paused"},
    Running: {"is_running"},
    Finished: {"is_finished"},
    Success: {"is_finished", "is_successful"},
    Skipped: {"is_finished", "is_successful", "is_skipped"},
    Mapped: {"is_finished", "is_successful", "is_mapped"},
    Cached: {"is_finished", "is_successful", "is_cached"},
    Failed: {"is_finished", "is_failed"},
    TriggerFailed: {"is_finished", "is_failed"},
    TimedOut: {"is_finished", "is_failed"},
    Looped: {"is_finished", "is_looped"},
}


@pytest.mark.parametrize("cls", list(EXPECTED_TRUE), ids=lambda c: c.__name__)
def test_state_predicates_follow_the_class_hierarchy(cls):
    state = cls()

    true = {name for name in PREDICATES if getattr(state, name)()}

    assert true == EXPECTED_TRUE[cls]


def test_skipped_mapped_and_cached_count_as_successful_not_failed():
    for state in (Skipped(), Mapped(map_states=[]), Cached()):
        assert state.is_successful()
        assert not state.is_failed()


def test_trigger_failed_and_timed_out_count_as_failed_not_successful():
    for state in (TriggerFailed(), TimedOut()):
        assert state.is_failed()
        assert state.is_finished()
        assert not state.is_successful()


def test_retrying_is_a_scheduled_pending_state_and_not_finished():
    state = Retrying(start_time=dt.datetime.now(UTC), run_count=1)

    assert isinstance(state, Scheduled)
    assert state.is_pending() and state.is_scheduled() and state.is_retrying()
    assert not state.is_finished()


def test_mapped_state_result_defaults_to_its_children_results_in_order():
    state = Mapped(map_states=[Success(result=1), Success(result=2), Failed(result=3)])

    assert state.result == [1, 2, 3]
    assert state.n_map_states == 3


def test_pickling_a_state_keeps_its_class_and_fields():
    start = dt.datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
    state = Retrying("try again", result={"a": 1}, start_time=start, run_count=2,
                     location="/tmp/x", context={"k": "v"})

    copy = pickle.loads(pickle.dumps(state))

    assert type(copy) is Retrying
    assert copy.message == "try again"
    assert copy.result == {"a": 1}
    assert copy.start_time == start
    assert copy.run_count == 2
    assert copy.location == "/tmp/x"
    assert copy.context == {"k": "v"}
    assert copy.timestamp == state.timestamp


def test_pickling_a_mapped_state_keeps_its_children():
    state = Mapped("m", map_states=[Success(result=1), Failed("x", result=ValueError("v"))])

    copy = pickle.loads(pickle.dumps(state))

    assert type(copy) is Mapped
    assert [type(s) for s in copy.map_states] == [Success, Failed]
    assert copy.map_states[0].result == 1
    assert copy.map_states[1].message == "x"


def test_a_pickled_state_is_still_immutable():
    copy = pickle.loads(pickle.dumps(Success("ok")))

    with pytest.raises(AttributeError):
        copy.message = "changed"


def test_scheduled_with_a_naive_start_time_takes_it_as_utc():
    # As Prefect 1 (pendulum) reads a naive datetime.
    assert Scheduled(start_time=dt.datetime(2024, 5, 1, 6, 0)).start_time == \
        dt.datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def test_retrying_with_a_naive_start_time_takes_it_as_utc():
    assert Retrying(start_time=dt.datetime(2024, 5, 1), run_count=1).start_time.tzinfo is UTC


def test_scheduled_with_an_aware_start_time_keeps_it():
    start = dt.datetime(2024, 5, 1, 6, 0, tzinfo=UTC)

    assert Scheduled(start_time=start).start_time == start


def test_states_are_equal_by_class_and_result_not_by_message():
    # Prefect 1's rule: the class, the result and the details, not the message.
    assert Success("a", result=1) == Success("b", result=1)
    assert Success(result=1) != Success(result=2)
    assert Success() != Failed()
    assert Success() != Skipped()


# -- signals ------------------------------------------------------------------

@pytest.mark.parametrize("signal", [FAIL, SUCCESS, SKIP, TRIGGERFAIL, RETRY, PAUSE, LOOP])
def test_signals_derive_from_base_exception_but_not_exception(signal):
    assert issubclass(signal, BaseException)
    assert not issubclass(signal, Exception)


@pytest.mark.parametrize("signal, state_class", [
    (FAIL, Failed), (SUCCESS, Success), (SKIP, Skipped), (TRIGGERFAIL, TriggerFailed),
    (RETRY, Retrying), (PAUSE, Paused), (LOOP, Looped),
])
def test_each_signal_carries_a_state_of_its_kind_with_the_message(signal, state_class):
    sig = signal("why")

    assert type(sig.state) is state_class
    assert sig.state.message == "why"
    assert str(sig) == "why"


def test_endrun_requires_a_state():
    with pytest.raises(TypeError, match="State"):
        ENDRUN("not a state")


def test_except_exception_in_a_task_does_not_swallow_fail():
    caught = []

    @task
    def guarded():
        try:
            raise FAIL("x")
        except Exception as exc:  # what user code often does
            caught.append(exc)
            return "swallowed"

    with Flow("fail-not-swallowed") as flow:
        t = guarded()

    state = flow.run()

    assert caught == []
    assert type(state.result[t]) is Failed
    assert state.result[t].message == "x"
    assert state.is_failed()


def test_except_exception_in_a_task_does_not_swallow_skip():
    @task
    def guarded():
        try:
            raise SKIP("not today")
        except Exception:
            return "swallowed"

    with Flow("skip-not-swallowed") as flow:
        t = guarded()

    state = flow.run()

    assert type(state.result[t]) is Skipped
    assert state.result[t].message == "not today"


# -- signals in flow runs --------------------------------------------------------

def _run_one(fn, **task_kwargs):
    """Run a one-task flow; return (flow state, task state)."""
    t_fn = task(fn, **task_kwargs)
    with Flow(f"one-{fn.__name__}") as flow:
        t = t_fn()
    state = flow.run()
    return state, state.result[t]


def test_a_raised_value_error_becomes_failed_with_the_exception_as_result():
    def boom():
        raise ValueError("boom")

    flow_state, state = _run_one(boom)

    assert type(state) is Failed
    assert state.message == "Error during execution of task: ValueError('boom')"
    assert isinstance(state.result, ValueError)
    assert state.result.args == ("boom",)
    assert flow_state.is_failed()


def test_fail_signal_gives_failed_with_its_message():
    def fails():
        raise FAIL("bad input")

    flow_state, state = _run_one(fails)

    assert type(state) is Failed
    assert state.message == "bad input"
    assert flow_state.is_failed()


def test_success_signal_gives_success_and_skips_the_rest_of_the_task():
    after = []

    def succeeds():
        raise SUCCESS("early exit")
        after.append(1)  # unreachable on purpose

    flow_state, state = _run_one(succeeds)

    assert type(state) is Success
    assert state.message == "early exit"
    assert after == []
    assert flow_state.is_successful()


def test_success_signal_with_result_sets_the_state_result():
    def succeeds():
        raise SUCCESS(result=5)

    _, state = _run_one(succeeds)

    assert type(state) is Success
    assert state.result == 5


def test_success_signal_result_reaches_a_downstream_task():
    @task
    def produce():
        raise SUCCESS("done", result=5)

    @task
    def double(x):
        return 2 * x

    with Flow("success-result-downstream") as flow:
        d = double(produce())

    assert flow.run().result[d].result == 10


def test_skip_signal_gives_skipped_and_the_flow_succeeds():
    def skips():
        raise SKIP("nothing to do")

    flow_state, state = _run_one(skips)

    assert type(state) is Skipped
    assert state.message == "nothing to do"
    assert isinstance(state.result, SKIP)  # as in Prefect 1: the signal is the result
    assert flow_state.is_successful()


def test_triggerfail_signal_gives_trigger_failed():
    def tf():
        raise TRIGGERFAIL("no go")

    flow_state, state = _run_one(tf)

    assert type(state) is TriggerFailed
    assert state.message == "no go"
    assert flow_state.is_failed()


def test_endrun_ends_the_task_in_exactly_the_given_state():
    def ends():
        raise ENDRUN(Skipped("ended by hand", result=7))

    _, state = _run_one(ends)

    assert type(state) is Skipped
    assert state.message == "ended by hand"
    assert state.result == 7


def test_endrun_failed_is_not_retried_even_with_retries_left():
    calls = []

    def ends():
        calls.append(context.task_run_count)
        raise ENDRUN(Failed("final"))

    _, state = _run_one(ends, max_retries=2, retry_delay=dt.timedelta(seconds=0.01))

    assert type(state) is Failed
    assert state.message == "final"
    assert calls == [1]


def test_fail_signal_is_retried_when_retries_are_left():
    calls = []

    def fails_once():
        calls.append(context.task_run_count)
        if len(calls) == 1:
            raise FAIL("first time")
        return "ok"

    _, state = _run_one(fails_once, max_retries=1, retry_delay=dt.timedelta(seconds=0.01))

    assert type(state) is Success
    assert state.result == "ok"
    assert calls == [1, 2]


def test_loop_signal_runs_the_task_again_with_the_previous_result():
    seen = []

    def count_to_three():
        value = context.get("task_loop_result", 0)
        seen.append((value, context.get("task_loop_count", 1)))
        if value >= 3:
            return value
        raise LOOP(f"at {value}", result=value + 1)

    flow_state, state = _run_one(count_to_three)

    assert type(state) is Success
    assert state.result == 3
    assert [v for v, _ in seen] == [0, 1, 2, 3]
    assert [c for _, c in seen] == [1, 2, 3, 4]
    assert flow_state.is_successful()


def test_pause_signal_leaves_the_flow_running_with_the_task_paused():
    @task
    def first():
        return 1

    @task
    def wait_for_approval(x):
        raise PAUSE("needs a human")

    with Flow("pause-signal") as flow:
        a = first()
        p = wait_for_approval(a)

    state = flow.run()

    assert type(state) is Running
    assert type(state.result[p]) is Paused
    assert state.result[p].message == "needs a human"
    assert type(state.result[a]) is Success


def test_manual_only_pauses_and_resuming_with_task_states_completes_the_flow():
    calls = []

    @task
    def extract():
        calls.append("extract")
        return 21

    @task(trigger=triggers.manual_only)
    def approve(x):
        calls.append("approve")
        return x * 2

    @task
    def publish(x):
        calls.append("publish")
        return x + 1

    with Flow("manual-approval") as flow:
        a = extract()
        b = approve(a)
        c = publish(b)

    paused = flow.run()

    assert type(paused) is Running
    assert type(paused.result[b]) is Paused
    assert paused.result[b].message == 'Trigger function is "manual_only"'
    assert not paused.result[c].is_finished()
    assert calls == ["extract"]

    resumed = flow.run(task_states=paused.result, context={"resume": True})

    assert type(resumed) is Success
    assert resumed.result[b].result == 42
    assert resumed.result[c].result == 43
    assert calls == ["extract", "approve", "publish"]


def test_manual_only_runs_a_root_task_at_once():
    @task(trigger=triggers.manual_only)
    def root():
        return "ran"

    with Flow("manual-root") as flow:
        r = root()

    state = flow.run()

    assert state.is_successful()
    assert state.result[r].result == "ran"


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


# -- triggers in flow runs ----------------------------------------------------------

@task
def ok():
    return "ok"


@task
def bad():
    raise ValueError("bad")


@task
def skipped():
    raise SKIP("skip")


def _run_with_upstreams(upstreams, trigger=None, **task_kwargs):
    """Run a flow where `sink` depends on tasks built from `upstreams`
    (a list of ok/bad/skipped); return (flow state, sink's state, calls)."""
    calls = []

    kwargs = dict(task_kwargs)
    if trigger is not None:
        kwargs["trigger"] = trigger

    @task(**kwargs)
    def sink():
        calls.append(1)
        return "sink ran"

    with Flow("triggers") as flow:
        ups = [u() for u in upstreams]
        s = sink(upstream_tasks=ups)

    state = flow.run()
    return state, state.result[s], calls


def test_default_trigger_runs_when_all_upstreams_succeed():
    _, state, calls = _run_with_upstreams([ok, ok])

    assert type(state) is Success
    assert calls == [1]


def test_default_trigger_fails_with_the_all_successful_message():
    flow_state, state, calls = _run_with_upstreams([ok, bad])

    assert type(state) is TriggerFailed
    assert state.message == ('Trigger was "all_successful" but some of the upstream '
                             'tasks failed.')
    assert calls == []
    assert flow_state.is_failed()


def test_explicit_all_successful_trigger_fails_the_same_way():
    _, state, calls = _run_with_upstreams([bad], trigger=triggers.all_successful)

    assert type(state) is TriggerFailed
    assert "all_successful" in state.message
    assert calls == []


def test_all_failed_runs_when_every_upstream_failed():
    _, state, calls = _run_with_upstreams([bad, bad], trigger=triggers.all_failed)

    assert type(state) is Success
    assert calls == [1]


def test_all_failed_trigger_fails_when_one_upstream_succeeded():
    _, state, calls = _run_with_upstreams([bad, ok], trigger=triggers.all_failed)

    assert type(state) is TriggerFailed
    assert "all_failed" in state.message
    assert calls == []


def test_any_successful_runs_when_one_upstream_succeeded():
    _, state, calls = _run_with_upstreams([bad, ok], trigger=triggers.any_successful)

    assert type(state) is Success
    assert calls == [1]


def test_any_successful_trigger_fails_when_none_succeeded():
    _, state, calls = _run_with_upstreams([bad, bad], trigger=triggers.any_successful)

    assert type(state) is TriggerFailed
    assert "any_successful" in state.message
    assert calls == []


def test_any_failed_runs_when_one_upstream_failed():
    _, state, calls = _run_with_upstreams([ok, bad], trigger=triggers.any_failed)

    assert type(state) is Success
    assert calls == [1]


def test_any_failed_trigger_fails_when_none_failed():
    _, state, calls = _run_with_upstreams([ok, ok], trigger=triggers.any_failed)

    assert type(state) is TriggerFailed
    assert "any_failed" in state.message
    assert calls == []


@pytest.mark.parametrize("trigger", [triggers.all_finished, triggers.always_run],
                         ids=["all_finished", "always_run"])
def test_all_finished_and_always_run_run_after_failures_and_successes(trigger):
    _, state, calls = _run_with_upstreams([ok, bad, skipped], trigger=trigger,
                                          skip_on_upstream_skip=False)

    assert type(state) is Success
    assert calls == [1]


def test_all_finished_trigger_fails_on_an_unfinished_upstream_state():
    from orchestrator.core.edge import Edge

    edge = Edge(ok, bad)
    with pytest.raises(TRIGGERFAIL, match="all_finished"):
        triggers.all_finished({edge: Running()})


def test_a_flow_whose_cleanup_task_always_runs_still_reports_the_failure():
    @task(trigger=triggers.always_run)
    def cleanup():
        return "cleaned"

    with Flow("cleanup") as flow:
        b = bad()
        c = cleanup(upstream_tasks=[b])
    flow.set_reference_tasks([b, c])

    state = flow.run()

    assert state.result[c].result == "cleaned"
    assert state.is_failed()


def test_some_successful_runs_within_its_bounds():
    _, state, calls = _run_with_upstreams(
        [ok, ok, bad], trigger=triggers.some_successful(at_least=2, at_most=2))

    assert type(state) is Success
    assert calls == [1]


def test_some_successful_fails_below_at_least():
    _, state, calls = _run_with_upstreams(
        [ok, bad, bad], trigger=triggers.some_successful(at_least=2))

    assert type(state) is TriggerFailed
    assert "some_successful" in state.message
    assert calls == []


def test_some_successful_fails_above_at_most():
    _, state, calls = _run_with_upstreams(
        [ok, ok, ok], trigger=triggers.some_successful(at_most=2))

    assert type(state) is TriggerFailed
    assert calls == []


def test_some_successful_accepts_a_fraction():
    _, passing, _ = _run_with_upstreams(
        [ok, ok, ok, bad], trigger=triggers.some_successful(at_least=0.5))
    _, failing, _ = _run_with_upstreams(
        [ok, bad, bad, bad], trigger=triggers.some_successful(at_least=0.5))

    assert type(passing) is Success
    assert type(failing) is TriggerFailed


def test_some_failed_runs_within_its_bounds():
    _, state, calls = _run_with_upstreams(
        [bad, ok, ok], trigger=triggers.some_failed(at_least=1, at_most=1))

    assert type(state) is Success
    assert calls == [1]


def test_some_failed_fails_outside_its_bounds():
    _, too_few, _ = _run_with_upstreams([ok, ok], trigger=triggers.some_failed(at_least=1))
    _, too_many, _ = _run_with_upstreams([bad, bad], trigger=triggers.some_failed(at_most=1))

    assert type(too_few) is TriggerFailed
    assert "some_failed" in too_few.message
    assert type(too_many) is TriggerFailed


def test_not_all_skipped_runs_when_some_upstream_ran():
    _, state, calls = _run_with_upstreams([ok, skipped], trigger=triggers.not_all_skipped,
                                          skip_on_upstream_skip=False)

    assert type(state) is Success
    assert calls == [1]


def test_not_all_skipped_skips_when_every_upstream_skipped():
    _, state, calls = _run_with_upstreams([skipped, skipped],
                                          trigger=triggers.not_all_skipped,
                                          skip_on_upstream_skip=False)

    assert type(state) is Skipped
    assert calls == []


def test_not_all_skipped_fails_when_an_upstream_failed():
    _, state, calls = _run_with_upstreams([ok, bad], trigger=triggers.not_all_skipped,
                                          skip_on_upstream_skip=False)

    assert type(state) is TriggerFailed
    assert "not_all_skipped" in state.message
    assert calls == []


def test_a_custom_trigger_returning_false_gives_trigger_failed():
    def never(upstream_states):
        return False

    _, state, calls = _run_with_upstreams([ok], trigger=never)

    assert type(state) is TriggerFailed
    assert "never" in state.message
    assert calls == []


def test_a_trigger_receives_a_mapping_of_edges_to_upstream_states():
    received = {}

    def spy(upstream_states):
        received.update({e.upstream_task.name: type(s) for e, s in upstream_states.items()})
        return True

    _, state, _ = _run_with_upstreams([ok, bad], trigger=spy)

    assert type(state) is Success
    assert received == {"ok": Success, "bad": Failed}


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


# -- skipping -------------------------------------------------------------------------

def test_upstream_skip_is_checked_before_the_trigger():
    _, state, calls = _run_with_upstreams([skipped], trigger=triggers.all_failed)

    assert type(state) is Skipped
    assert calls == []


def test_a_skip_propagates_down_a_chain():
    @task
    def middle(x):
        return x

    @task
    def last(x):
        return x

    with Flow("skip-chain") as flow:
        m = middle(skipped())
        e = last(m)

    state = flow.run()

    assert type(state.result[m]) is Skipped
    assert type(state.result[e]) is Skipped
    assert state.is_successful()


def test_skip_on_upstream_skip_false_runs_the_task_with_the_skip_as_input():
    received = []

    @task(skip_on_upstream_skip=False)
    def runs_anyway(x):
        received.append(x)
        return "ran"

    with Flow("skip-opt-out") as flow:
        r = runs_anyway(skipped())

    state = flow.run()

    assert type(state.result[r]) is Success
    assert state.result[r].result == "ran"
    # Prefect 1 passes the upstream's result, which for a SKIP is the signal.
    assert len(received) == 1 and isinstance(received[0], SKIP)


def test_triggers_count_the_children_of_a_mapped_upstream_one_by_one():
    @task
    def check(x):
        if x == 2:
            raise ValueError("two")
        return x

    @task(trigger=triggers.any_failed)
    def alert(results):
        return "alerted"

    @task(trigger=triggers.some_successful(at_least=3))
    def needs_three(results):
        return "ran"

    with Flow("mapped-triggers") as flow:
        checked = check.map([1, 2, 3])
        a = alert(checked)
        n = needs_three(checked)

    state = flow.run()

    assert type(state.result[a]) is Success
    assert state.result[a].result == "alerted"
    assert type(state.result[n]) is TriggerFailed
    assert "2 of 3" in state.result[n].message


def test_every_state_has_one_name_in_the_vocabulary_and_it_is_the_string_the_store_keeps(
        tmp_path):
    import json
    import sqlite3

    from orchestrator.core.states import _BY_NAME, StateName

    assert {name.value for name in StateName} == set(_BY_NAME)
    for name in StateName:
        assert name == name.value and hash(name) == hash(name.value)
        assert str(name) == f"{name}" == "%s" % name == name.value
        assert StateName(name.value) is name
    assert json.dumps({"state": StateName.TIMED_OUT}) == '{"state": "TimedOut"}'
    db = sqlite3.connect(tmp_path / "states.db")
    db.execute("CREATE TABLE run (state TEXT)")
    db.execute("INSERT INTO run VALUES (?)", (StateName.TRIGGER_FAILED,))
    [(kept,)] = db.execute("SELECT state FROM run WHERE state = ?", ("TriggerFailed",))
    assert kept == StateName.TRIGGER_FAILED and type(kept) is str
