"""Building flow graphs through the public authoring API (Prefect 1.4.1 semantics)."""

import datetime
from typing import Tuple  # noqa: UP035

import cloudpickle
import pytest

from orchestrator import DateTimeParameter, Edge, Flow, Parameter, Task, task, triggers, unmapped
from orchestrator.core.task import Constant, GetItem, current_flow
from orchestrator.exceptions import (FlowValidationError, OrchestratorError, ParameterError,
                                     TaskCallError, TaskDefinitionError)
from orchestrator.states import Failed, Success

UTC = datetime.timezone.utc


@task
def add(x, y):
    return x + y


@task
def one():
    return 1


@task
def two():
    return 2


@task
def identity(x):
    return x


@task
def noop():
    return None


def named(name):
    """A fresh no-argument task called `name`, returning its name."""

    @task(name=name)
    def fn():
        return name

    return fn


def edge_triples(flow):
    return {(e.upstream_task.name, e.downstream_task.name, e.key) for e in flow.edges}


def result_of(state, t):
    return state.result[t].result


def handler(task_or_flow, old_state, new_state):
    return new_state


# -- calling tasks in a `with Flow` block ------------------------------------------
def test_calling_a_task_in_a_flow_adds_a_copy_with_keyed_edges_from_its_arguments():
    with Flow("f") as flow:
        a = one()
        b = two()
        c = add(a, b)

    assert c is not add and a is not one
    assert flow.tasks == {a, b, c}
    assert add not in flow
    assert edge_triples(flow) == {("one", "add", "x"), ("two", "add", "y")}
    assert result_of(flow.run(), c) == 3


def test_literal_arguments_are_kept_as_constants_not_tasks():
    with Flow("f") as flow:
        c = add(1, y=2)

    assert flow.tasks == {c}
    assert flow.edges == set()
    assert flow.constants[c] == {"x": 1, "y": 2}
    assert result_of(flow.run(), c) == 3


def test_a_mapped_literal_becomes_a_constant_task_but_unmapped_literal_stays_constant():
    with Flow("f") as flow:
        c = add.map([1, 2], unmapped(10))

    upstream = flow.upstream_tasks(c)
    assert len(upstream) == 1
    (const,) = upstream
    assert isinstance(const, Constant)
    assert [e.key for e in flow.edges_to(c)] == ["x"]
    assert next(iter(flow.edges_to(c))).mapped
    assert flow.constants[c] == {"y": 10}
    state = flow.run()
    assert [s.result for s in state.result[c].map_states] == [11, 12]


def test_mapping_over_a_list_of_tasks_maps_over_their_results():
    with Flow("f") as flow:
        c = add.map([one(), two()], unmapped(10))

    state = flow.run()
    assert [s.result for s in state.result[c].map_states] == [11, 12]


def test_the_same_edge_added_twice_is_kept_once():
    a, b = named("a"), named("b")
    flow = Flow("f")
    flow.add_edge(a, b)
    flow.add_edge(a, b)
    b.set_upstream(a, flow=flow)

    assert len(flow.edges) == 1
    assert len(flow.edges_to(b)) == 1


def test_flow_constructor_takes_tasks_edges_and_reference_tasks():
    a, b, c = named("a"), named("b"), named("c")
    flow = Flow("f", tasks=[c], edges=[Edge(a, b)], reference_tasks=[a])

    assert flow.tasks == {a, b, c}
    assert edge_triples(flow) == {("a", "b", None)}
    assert flow.reference_tasks() == {a}


def test_upstream_tasks_argument_adds_keyless_edges_and_orders_the_run():
    order = []

    @task
    def record(label):
        order.append(label)

    with Flow("f") as flow:
        a = record("a")
        b = record("b", upstream_tasks=[a])

    (edge,) = flow.edges
    assert (edge.upstream_task, edge.downstream_task, edge.key) == (a, b, None)
    assert flow.run().is_successful()
    assert order == ["a", "b"]


def test_set_upstream_without_key_adds_an_ordering_edge():
    a, b = named("a"), named("b")
    with Flow("f") as flow:
        b.set_upstream(a)

    assert edge_triples(flow) == {("a", "b", None)}


def test_set_upstream_with_key_passes_the_result_as_that_argument():
    a = named("a")
    ident = identity.copy()
    with Flow("f") as flow:
        ident.set_upstream(a, key="x")

    assert edge_triples(flow) == {("a", "identity", "x")}
    assert result_of(flow.run(), ident) == "a"


def test_set_downstream_with_and_without_key():
    a, b = named("a"), named("b")
    ident = identity.copy()
    flow = Flow("f")
    a.set_downstream(b, flow=flow)
    a.set_downstream(ident, key="x", flow=flow)

    assert edge_triples(flow) == {("a", "b", None), ("a", "identity", "x")}
    assert result_of(flow.run(), ident) == "a"


def test_an_explicit_flow_argument_is_used_even_when_that_flow_is_empty():
    target = Flow("target")
    out = add(1, 2, flow=target)
    assert target.tasks == {out}

    other = Flow("other")
    with Flow("outer") as outer:
        inner = add(3, 4, flow=other)
    assert other.tasks == {inner}
    assert inner not in outer


def test_rshift_chains_tasks_and_returns_the_right_hand_task():
    a, b, c = named("a"), named("b"), named("c")
    with Flow("f") as flow:
        returned = a >> b >> c

    assert returned is c
    assert edge_triples(flow) == {("a", "b", None), ("b", "c", None)}
    assert flow.sorted_tasks() == (a, b, c)


def test_lshift_sets_the_upstream_task():
    a, b = named("a"), named("b")
    with Flow("f") as flow:
        b << a

    assert edge_triples(flow) == {("a", "b", None)}


def test_flow_add_task_add_edge_and_chain_outside_a_with_block():
    a, b, c, d = named("a"), named("b"), named("c"), named("d")
    flow = Flow("f")
    assert flow.add_task(a) is a
    assert flow.add_task(a) is a  # adding twice is harmless
    edge = flow.add_edge(a, b)
    assert isinstance(edge, Edge)
    assert (edge.upstream_task, edge.downstream_task) == (a, b)
    edges = flow.chain(b, c, d)

    assert [(e.upstream_task, e.downstream_task) for e in edges] == [(b, c), (c, d)]
    assert flow.tasks == {a, b, c, d}
    assert edge_triples(flow) == {("a", "b", None), ("b", "c", None), ("c", "d", None)}


def test_flow_add_task_refuses_a_plain_function():
    flow = Flow("f")
    with pytest.raises(TaskDefinitionError, match="@task"):
        flow.add_task(lambda: 1)


def test_flow_set_dependencies_with_upstream_downstream_and_keyword_tasks():
    a, b, c = named("a"), named("b"), named("c")
    ident = identity.copy()
    flow = Flow("f")
    flow.set_dependencies(ident, upstream_tasks=[a], downstream_tasks=[c],
                          keyword_tasks={"x": b})

    assert edge_triples(flow) == {("a", "identity", None), ("b", "identity", "x"),
                                  ("identity", "c", None)}
    assert result_of(flow.run(), ident) == "b"


def test_set_dependencies_with_a_literal_keyword_stores_a_constant():
    ident = identity.copy()
    flow = Flow("f")
    flow.set_dependencies(ident, keyword_tasks={"x": 5})

    assert flow.edges == set()
    assert flow.constants[ident] == {"x": 5}


def test_one_argument_cannot_come_from_two_tasks():
    a, b = named("a"), named("b")
    ident = identity.copy()
    flow = Flow("f")
    flow.add_edge(a, ident, key="x")
    with pytest.raises(TaskDefinitionError, match="'x'.*identity"):
        flow.add_edge(b, ident, key="x")


# -- re-entering `with flow` ------------------------------------------------------
def test_with_the_same_flow_nested_adds_to_it_and_restores_the_context():
    with Flow("f") as flow:
        a = one()
        with flow:
            b = one()
            assert current_flow() is flow
        assert current_flow() is flow
        c = one()
    assert current_flow() is None
    assert {a, b, c} <= flow.tasks


def test_with_the_same_flow_twice_in_a_row_works():
    flow = Flow("f")
    with flow:
        a = one()
    with flow:
        b = one()
    assert current_flow() is None
    assert {a, b} == flow.tasks


def test_nested_flows_restore_the_outer_one():
    with Flow("outer") as outer:
        with Flow("inner") as inner:
            with outer:
                assert current_flow() is outer
            assert current_flow() is inner
        assert current_flow() is outer


def test_a_flow_pickles_after_nested_with_blocks_and_inside_one():
    with Flow("f") as flow:
        with flow:
            out = identity(1)
        inside = cloudpickle.loads(cloudpickle.dumps(flow))
    after = cloudpickle.loads(cloudpickle.dumps(flow))

    for copy in (inside, after):
        assert len(copy.tasks) == 1
        assert copy.run().is_successful()
    assert flow.run().result[out].result == 1


# -- several results ---------------------------------------------------------------
def test_nout_lets_a_task_result_be_unpacked_into_getitem_tasks():
    @task(nout=2)
    def pair():
        return 1, 2

    with Flow("f") as flow:
        x, y = pair()
        total = add(x, y)

    assert isinstance(x, GetItem) and isinstance(y, GetItem)
    (p,) = flow.get_tasks(name="pair")
    assert flow.upstream_tasks(x) == {p} and flow.upstream_tasks(y) == {p}
    state = flow.run()
    assert (result_of(state, x), result_of(state, y), result_of(state, total)) == (1, 2, 3)


def test_a_tuple_return_annotation_sets_nout():
    @task
    def pair() -> Tuple[int, str]:  # noqa: UP006 - the spelling Prefect 1 documents
        return 7, "seven"

    @task
    def triple() -> tuple[int, int, int]:
        return 1, 2, 3

    assert triple.nout == 3

    assert pair.nout == 2
    with Flow("f") as flow:
        number, word = pair()

    state = flow.run()
    assert (result_of(state, number), result_of(state, word)) == (7, "seven")


def test_unpacking_a_task_without_nout_raises_type_error_that_explains_nout():
    @task
    def pair():
        return 1, 2

    with Flow("f"), pytest.raises(TypeError, match="nout"):
        _first, _second = pair()


def test_indexing_a_task_builds_a_getitem_task():
    @task
    def listing():
        return ["first", "second"]

    with Flow("f") as flow:
        items = listing()
        second = items[1]

    assert isinstance(second, GetItem)
    assert flow.upstream_tasks(second) == {items}
    assert result_of(flow.run(), second) == "second"


# -- copies and task_args ----------------------------------------------------------
def test_task_copy_is_a_separate_task_with_the_same_settings():
    original = Task(name="orig", tags=["a"], max_retries=1, retry_delay=3)
    copied = original.copy()

    assert copied is not original
    assert (copied.name, copied.tags, copied.max_retries) == ("orig", {"a"}, 1)
    copied.tags.add("b")
    assert original.tags == {"a"}


def test_task_args_override_settings_of_the_copy_only():
    with Flow("f") as flow:
        c = add(1, 2, task_args={"name": "renamed", "tags": ["etl"], "max_retries": 2,
                                 "retry_delay": 1})

    assert c.name == "renamed"
    assert c.tags == {"etl"}
    assert c.max_retries == 2 and c.retry_delay.total_seconds() == 1
    assert add.name == "add" and add.tags == set() and add.max_retries == 0
    assert flow.slugs[c] == "renamed-1"


def test_unknown_task_args_key_raises_attribute_error():
    with Flow("f"), pytest.raises(AttributeError, match="nme"):
        add(1, 2, task_args={"nme": "typo"})


def test_subclass_style_task_with_run_method():
    class Multiply(Task):
        def __init__(self, factor, **kwargs):
            self.factor = factor
            super().__init__(**kwargs)

        def run(self, x):
            return x * self.factor

    triple = Multiply(3, name="triple")
    with Flow("f") as flow:
        out = triple(x=one())

    assert out.name == "triple" and out.factor == 3
    assert edge_triples(flow) == {("one", "triple", "x")}
    assert result_of(flow.run(), out) == 3
    assert triple.run(5) == 15


def test_task_args_tags_as_a_string_says_pass_a_list():
    with Flow("f"), pytest.raises(TaskDefinitionError, match=r"tags=\['etl'\]"):
        one(task_args={"tags": "etl"})


def test_task_args_tags_as_a_list_are_used():
    with Flow("f"):
        r = one(task_args={"tags": ["etl", "daily"]})
    assert r.tags == {"etl", "daily"}


# -- errors while building -----------------------------------------------------------
def test_calling_a_task_outside_a_flow_explains_how_to_fix_it():
    with pytest.raises(TaskDefinitionError) as info:
        add(1, 2)

    message = str(info.value)
    assert "'add'" in message
    assert "with Flow" in message
    assert "add.run(" in message
    assert isinstance(info.value, ValueError)


def test_wrong_arguments_to_a_task_raise_task_call_error_naming_the_task():
    with Flow("f"):
        with pytest.raises(TaskCallError, match="'add'") as info:
            add(1, 2, z=3)
        assert "(x, y)" in str(info.value)
        with pytest.raises(TaskCallError, match="'add'"):
            add(1)
    assert isinstance(info.value, TypeError)


def test_varargs_in_run_is_a_definition_error():
    with pytest.raises(TaskDefinitionError, match=r"\*args"):
        @task
        def many(*args):
            return args

    class Many(Task):
        def run(self, *items):
            return items

    with pytest.raises(TaskDefinitionError, match=r"\*items"):
        Many()


def test_max_retries_without_retry_delay_is_an_error():
    with pytest.raises(TaskDefinitionError, match="retry_delay"):
        @task(max_retries=2)
        def flaky():
            return 1


def test_retry_delay_without_max_retries_is_an_error():
    with pytest.raises(TaskDefinitionError, match="max_retries"):
        Task(retry_delay=5)


def test_tags_given_as_a_string_are_an_error():
    with pytest.raises(TaskDefinitionError, match=r"\['etl'\]"):
        Task(name="t", tags="etl")


def test_duplicate_parameter_names_are_an_error_naming_the_parameter():
    with Flow("f"):
        identity(Parameter("x"))
        with pytest.raises(TaskDefinitionError, match="parameter named 'x'"):
            identity(Parameter("x"))


def test_reusing_the_same_parameter_object_is_fine():
    with Flow("f") as flow:
        x = Parameter("x")
        identity(x)
        identity(x)

    assert flow.parameters() == {x}


def test_slugs_are_unique_and_numbered_per_name():
    with Flow("f") as flow:
        first = add(1, 2)
        second = add(3, 4)

    assert flow.slugs[first] == "add-1"
    assert flow.slugs[second] == "add-2"
    assert flow.get_tasks(slug="add-2") == [second]


def test_an_explicit_slug_already_in_the_flow_is_an_error():
    flow = Flow("f")
    flow.add_task(Task(name="a", slug="same"))
    with pytest.raises(TaskDefinitionError, match="'same'"):
        flow.add_task(Task(name="b", slug="same"))


def test_task_state_handlers_given_one_function_says_pass_a_list():
    with pytest.raises(TaskDefinitionError, match=r"list of functions.*\[handler\]"):
        Task(state_handlers=handler)


def test_flow_state_handlers_given_one_function_says_pass_a_list():
    with pytest.raises(TaskDefinitionError, match=r"list of functions.*\[handler\]"):
        Flow("f", state_handlers=handler)


@pytest.mark.parametrize("owner", [Task, lambda **kw: Flow("f", **kw)])
def test_state_handlers_that_are_not_functions_are_named(owner):
    with pytest.raises(TaskDefinitionError, match="5"):
        owner(state_handlers=[5])
    with pytest.raises(TaskDefinitionError, match="list of functions"):
        owner(state_handlers=5)


def test_state_handlers_as_a_list_still_work():
    assert Task(state_handlers=[handler]).state_handlers == [handler]
    assert Flow("f", state_handlers=(handler,)).state_handlers == [handler]


@pytest.mark.parametrize("tags", [5, ["etl", 5], [None]])
def test_tags_must_be_an_iterable_of_strings(tags):
    with pytest.raises(TaskDefinitionError, match=r"tags.*list of strings"):
        Task(name="t", tags=tags)


def test_tags_as_a_string_still_says_pass_a_list():
    with pytest.raises(TaskDefinitionError, match=r"tags=\['etl'\]"):
        Task(tags="etl")


def test_positional_only_run_arguments_are_rejected():
    def po(x, /):
        return x

    with pytest.raises(TaskDefinitionError, match=r"'po'.*positional-only.*keyword"):
        task(po)


def test_positional_only_arguments_of_a_subclass_run_are_rejected():
    class Po(Task):
        def run(self, x, /):
            return x

    with pytest.raises(TaskDefinitionError, match="positional-only"):
        Po()


def test_async_run_functions_are_rejected_with_the_fix():
    async def fetch():
        return 1

    with pytest.raises(TaskDefinitionError, match=r"'fetch'.*async.*asyncio.run"):
        task(fetch)


def test_async_subclass_run_is_rejected():
    class Fetch(Task):
        async def run(self):
            return 1

    with pytest.raises(TaskDefinitionError, match="asyncio.run"):
        Fetch()


# -- parameters and flow.run's keywords ---------------------------------------------
def test_parameter_required_semantics():
    assert Parameter("x").required is True
    assert Parameter("x", default=None).required is False
    assert Parameter("x", default=3).required is False
    assert Parameter("x", default=3, required=True).required is True


def test_required_true_with_a_default_still_needs_a_value():
    with Flow("f") as flow:
        out = identity(Parameter("x", default=3, required=True))

    with pytest.raises(ParameterError, match="'x'"):
        flow.run()
    assert result_of(flow.run(x=4), out) == 4


def test_parameter_with_default_none_runs_with_none():
    with Flow("f") as flow:
        out = identity(Parameter("x", default=None))

    assert result_of(flow.run(), out) is None


def test_missing_required_parameters_are_listed():
    with Flow("f") as flow:
        add(Parameter("x"), Parameter("y"))

    with pytest.raises(ParameterError) as info:
        flow.run()
    assert "'x', 'y'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_parameter_suggests_the_close_name_and_lists_known_ones():
    with Flow("f") as flow:
        identity(Parameter("day", default=None))

    with pytest.raises(ParameterError) as info:
        flow.run(dya="2024-01-01")
    message = str(info.value)
    assert "'dya'" in message
    assert "did you mean 'day'" in message
    assert "Its parameters are: day" in message


def test_keyword_parameter_wins_over_parameters_dict():
    with Flow("f") as flow:
        out = identity(Parameter("x"))

    state = flow.run(parameters={"x": 1}, x=2)
    assert result_of(state, out) == 2


def test_calling_a_parameter_adds_it_to_the_flow_as_in_prefect_1():
    x = Parameter("x", default=1)
    with Flow("f") as flow:
        same = x()
    assert same is x
    assert flow.parameters() == {x}
    with pytest.raises(TaskDefinitionError, match="'x'"):
        x()  # outside a flow there is nothing to add it to


def test_calling_a_parameter_in_a_flow_adds_it_and_returns_it():
    p = Parameter("x", default=1)
    with Flow("f") as flow:
        same = p()
        out = identity(p)

    assert same is p
    assert p in flow.tasks
    assert result_of(flow.run(x=5), out) == 5


def test_calling_a_parameter_with_flow_adds_it_to_that_flow():
    flow = Flow("f")
    p = Parameter("x")

    assert p(flow=flow) is p
    assert flow.parameters() == {p}


def test_calling_a_parameter_outside_a_flow_is_a_clear_error():
    with pytest.raises(TaskDefinitionError, match=r"'x'.*with Flow"):
        Parameter("x")()


def test_calling_a_parameter_with_arguments_is_an_error():
    with Flow("f"):
        p = Parameter("x")
        with pytest.raises(TaskDefinitionError, match=r"'x'.*flow.run\(x="):
            p(3)
        with pytest.raises(TaskDefinitionError, match="'x'"):
            p(value=3)


@pytest.mark.parametrize("given, expected", [
    ("2024-05-01T06:00:00", datetime.datetime(2024, 5, 1, 6, tzinfo=UTC)),
    ("2024-05-01", datetime.datetime(2024, 5, 1, tzinfo=UTC)),
    ("2024-05-01T06:00:00Z", datetime.datetime(2024, 5, 1, 6, tzinfo=UTC)),
    ("2024-05-01T06:00:00+02:00",
     datetime.datetime(2024, 5, 1, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))),
    (datetime.datetime(2024, 5, 1, 6), datetime.datetime(2024, 5, 1, 6, tzinfo=UTC)),
    (datetime.datetime(2024, 5, 1, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
     datetime.datetime(2024, 5, 1, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=-3)))),
])
def test_datetime_parameter_values_are_time_zone_aware(given, expected):
    with Flow("dt") as flow:
        out = identity(DateTimeParameter("d"))

    value = result_of(flow.run(d=given), out)

    assert value == expected
    assert value.tzinfo is not None
    assert value.utcoffset() == expected.utcoffset()


def test_datetime_parameter_value_compares_with_now_in_utc():
    @task
    def is_past(d):
        return d < datetime.datetime.now(UTC)

    with Flow("dt") as flow:
        r = is_past(DateTimeParameter("d"))

    state = flow.run(d="2024-05-01T06:00:00")
    assert state.is_successful()
    assert result_of(state, r) is True


def test_datetime_parameter_none_stays_none():
    with Flow("dt") as flow:
        out = identity(DateTimeParameter("d", default=None))

    assert result_of(flow.run(), out) is None


@pytest.mark.parametrize("value", [False, None])
def test_run_on_schedule_false_or_none_is_accepted_and_ignored(value):
    with Flow("f") as flow:
        out = one()

    state = flow.run(run_on_schedule=value)

    assert state.is_successful()
    assert result_of(state, out) == 1


def test_run_on_schedule_true_says_schedules_run_under_orchestrator_up():
    with Flow("f") as flow:
        one()

    with pytest.raises(OrchestratorError, match="orchestrator up"):
        flow.run(run_on_schedule=True)


# -- validation -----------------------------------------------------------------
def test_a_cycle_is_reported_with_its_path_by_validate_and_run():
    a, b = named("a"), named("b")
    flow = Flow("loop")
    flow.add_edge(a, b)
    flow.add_edge(b, a)

    with pytest.raises(FlowValidationError, match="'a' -> 'b' -> 'a'") as info:
        flow.validate()
    assert "'loop'" in str(info.value)
    with pytest.raises(FlowValidationError, match="'a' -> 'b' -> 'a'"):
        flow.run()


def test_a_longer_cycle_names_every_task_in_run_order():
    a, b, c, d = named("a"), named("b"), named("c"), named("d")
    flow = Flow("f")
    flow.add_edge(d, a)  # a task outside the cycle, upstream of it
    flow.chain(a, b, c)
    flow.add_edge(c, a)

    with pytest.raises(FlowValidationError) as info:
        flow.validate()
    message = str(info.value)
    assert ("'a' -> 'b' -> 'c' -> 'a'" in message or "'b' -> 'c' -> 'a' -> 'b'" in message
            or "'c' -> 'a' -> 'b' -> 'c'" in message)
    assert "'d'" not in message


def test_add_edge_with_validate_raises_at_add_time():
    a, b = named("a"), named("b")
    flow = Flow("f")
    flow.add_edge(a, b, validate=True)
    with pytest.raises(FlowValidationError, match="'b' -> 'a' -> 'b'|'a' -> 'b' -> 'a'"):
        flow.add_edge(b, a, validate=True)


def test_a_self_dependency_is_refused_when_the_edge_is_made():
    # As in Prefect 1: an Edge cannot connect a task to itself (ValueError).
    a = named("a")
    flow = Flow("f")
    with pytest.raises(ValueError, match="cannot connect task 'a' to itself"):
        flow.add_edge(a, a)
    assert flow.edges == set()


def test_validate_returns_true_for_an_acyclic_flow():
    with Flow("f") as flow:
        add(one(), two())
    assert flow.validate() is True


def test_flow_needs_a_name():
    with pytest.raises(FlowValidationError):
        Flow("")


# -- reference tasks and graph queries ---------------------------------------------
def test_reference_tasks_decide_the_flow_state():
    @task
    def boom():
        raise ValueError("boom")

    @task(trigger=triggers.all_finished)
    def cleanup():
        return "cleaned"

    with Flow("f") as flow:
        failing = boom()
        tidy = cleanup(upstream_tasks=[failing])

    assert flow.reference_tasks() == {tidy}
    state = flow.run()
    assert isinstance(state, Success)
    assert state.result[failing].is_failed()

    flow.set_reference_tasks([failing])
    assert flow.reference_tasks() == {failing}
    assert isinstance(flow.run(), Failed)


def test_reference_tasks_must_be_in_the_flow():
    flow = Flow("f")
    flow.add_task(named("a"))
    with pytest.raises(FlowValidationError, match="'stranger'"):
        flow.set_reference_tasks([named("stranger")])


def test_root_terminal_and_sorted_tasks():
    a, b, c, d = named("a"), named("b"), named("c"), named("d")
    flow = Flow("f")
    flow.add_edge(a, c)
    flow.add_edge(b, c)
    flow.add_edge(c, d)

    assert flow.root_tasks() == {a, b}
    assert flow.terminal_tasks() == {d}
    order = flow.sorted_tasks()
    assert set(order) == {a, b, c, d}
    assert order.index(a) < order.index(c)
    assert order.index(b) < order.index(c)
    assert order.index(c) < order.index(d)


def test_sorted_tasks_follows_changes_to_the_graph():
    a, b = named("a"), named("b")
    flow = Flow("f")
    flow.add_task(b)
    flow.add_task(a)
    assert flow.sorted_tasks() == (b, a)
    flow.add_edge(a, b)
    assert flow.sorted_tasks() == (a, b)


def test_edge_and_neighbour_queries():
    a, b, c = named("a"), named("b"), named("c")
    ident = identity.copy()
    flow = Flow("f")
    flow.add_edge(a, ident, key="x")
    flow.add_edge(b, ident)
    flow.add_edge(ident, c)

    assert {(e.upstream_task, e.key) for e in flow.edges_to(ident)} == {(a, "x"), (b, None)}
    assert {e.downstream_task for e in flow.edges_from(ident)} == {c}
    assert flow.upstream_tasks(ident) == {a, b}
    assert flow.downstream_tasks(ident) == {c}
    assert flow.upstream_tasks(a) == set()
    assert flow.downstream_tasks(c) == set()


def test_set_reference_tasks_with_one_task_says_pass_a_list():
    with Flow("f") as flow:
        r = one()

    with pytest.raises(FlowValidationError, match=r"list.*\[.*\]"):
        flow.set_reference_tasks(r)


def test_set_reference_tasks_with_one_multi_output_task_says_pass_a_list():
    @task(nout=2)
    def pair():
        return 1, 2

    with Flow("f") as flow:
        r = pair()

    with pytest.raises(FlowValidationError, match="list"):
        flow.set_reference_tasks(r)
    assert len(flow.tasks) == 1  # no GetItem tasks were made on the way


def test_reference_tasks_that_are_not_tasks_are_a_flow_validation_error():
    with Flow("f") as flow:
        one()

    with pytest.raises(FlowValidationError, match="'one'"):
        flow.set_reference_tasks(["one"])
    with pytest.raises(FlowValidationError, match="list"):
        flow.set_reference_tasks(5)


def test_set_reference_tasks_with_a_list_still_works():
    with Flow("f") as flow:
        r = one()
    flow.set_reference_tasks([r])
    assert flow.reference_tasks() == {r}


# -- collections and operators --------------------------------------------------
def test_a_list_of_tasks_is_one_input():
    with Flow("f") as flow:
        a, b = one(), two()
        out = identity([a, b, 3])

    (collection,) = flow.upstream_tasks(out)
    assert [e.key for e in flow.edges_to(out)] == ["x"]
    assert flow.upstream_tasks(collection) == {a, b}
    assert result_of(flow.run(), out) == [1, 2, 3]


def test_a_dict_of_tasks_is_one_input():
    with Flow("f") as flow:
        out = identity({"first": one(), "second": two()})

    assert len(flow.upstream_tasks(out)) == 1
    assert result_of(flow.run(), out) == {"first": 1, "second": 2}


def test_operators_on_tasks_build_tasks():
    with Flow("f") as flow:
        a, b = one(), two()
        total = a + b
        scaled = total * 10
        reverse = 100 - a
        bigger = b > a

    for t in (total, scaled, reverse, bigger):
        assert isinstance(t, Task) and t in flow
    assert flow.upstream_tasks(total) == {a, b}
    state = flow.run()
    assert result_of(state, total) == 3
    assert result_of(state, scaled) == 30
    assert result_of(state, reverse) == 99
    assert result_of(state, bigger) is True


def test_operators_outside_a_flow_are_an_error():
    with pytest.raises(TaskDefinitionError, match="with Flow"):
        one + two


def test_task_equality_stays_identity_and_is_equal_builds_a_task():
    with Flow("f") as flow:
        a = one()
        same = a.is_equal(1)

    assert (a == one) is False
    assert result_of(flow.run(), same) is True


# -- visualize, copy, update ------------------------------------------------------
def test_visualize_returns_dot_with_task_names_and_edge_labels():
    with Flow("drawn") as flow:
        out = add(Parameter("x"), two())

    dot = flow.visualize()
    assert dot.startswith('digraph "drawn"')
    for name in ('"x"', '"two"', '"add"'):
        assert f"label={name}" in dot
    assert 'label="y"' in dot  # the edge from two() carries its argument name
    assert dot.count("->") == 2
    assert out in flow


def test_visualize_draws_mapped_edges_dashed():
    with Flow("drawn") as flow:
        add.map([1, 2], unmapped(3))

    mapped_edges = [line for line in flow.visualize().splitlines() if "->" in line]
    assert len(mapped_edges) == 1
    assert 'label="x"' in mapped_edges[0] and 'style="dashed"' in mapped_edges[0]


def test_visualize_colours_nodes_with_a_flow_state():
    @task
    def boom():
        raise RuntimeError("no")

    with Flow("drawn") as flow:
        good = one()
        bad = boom()

    state = flow.run()
    dot = flow.visualize(flow_state=state)
    assert state.result[good].color in dot
    assert state.result[bad].color in dot
    assert Success.color != Failed.color
    assert Failed.color not in flow.visualize()


def test_flow_copy_is_independent_of_the_original():
    a, b, c = named("a"), named("b"), named("c")
    flow = Flow("f")
    flow.add_edge(a, b)
    copied = flow.copy()
    copied.add_edge(b, c)

    assert copied.name == "f"
    assert copied.tasks == {a, b, c}
    assert flow.tasks == {a, b}
    assert edge_triples(flow) == {("a", "b", None)}
    assert copied.run().is_successful()


def test_flow_copy_keeps_constants_separate():
    with Flow("f") as flow:
        c = add(1, 2)
    copied = flow.copy()
    copied.constants[c]["x"] = 100

    assert flow.constants[c] == {"x": 1, "y": 2}
    assert result_of(copied.run(), c) == 102


def test_flow_update_adds_tasks_edges_and_constants_of_another_flow():
    with Flow("first") as first:
        a = one()
    with Flow("second") as second:
        b = two()
        c = add(b, 5)

    first.update(second)
    assert first.tasks == {a, b, c}
    assert edge_triples(first) == {("two", "add", "x")}
    assert first.constants[c] == {"y": 5}
    state = first.run()
    assert result_of(state, c) == 7 and result_of(state, a) == 1
