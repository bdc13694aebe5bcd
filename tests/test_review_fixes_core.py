"""Review fixes in the authoring API and configuration: flow.run keywords,
calling a Parameter, DateTimeParameter time zones, config checks, clear
errors for wrongly shaped task and flow settings, re-entering `with flow`."""

import datetime
import logging

import cloudpickle
import pytest

from orchestrator import DateTimeParameter, Flow, Parameter, Task, task
from orchestrator.config import load_config
from orchestrator.core.task import current_flow
from orchestrator.engine import run_logging
from orchestrator.exceptions import (ConfigError, FlowValidationError, OrchestratorError,
                                     TaskDefinitionError)

UTC = datetime.timezone.utc


@task
def identity(x):
    return x


@task
def one():
    return 1


def handler(task_or_flow, old_state, new_state):
    return new_state


def result_of(state, task_):
    return state.result[task_].result


# -- 17a: flow.run(run_on_schedule=...) -----------------------------------------------
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


# -- 17b: calling a Parameter --------------------------------------------------------
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


# -- 18: DateTimeParameter ----------------------------------------------------------
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


# -- 19: the unused [tasks] section, env variable shape -------------------------------
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


# -- 20: config values are checked ----------------------------------------------------
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


# -- 21: wrongly shaped settings -------------------------------------------------------
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


# -- 22: tags in task_args -------------------------------------------------------------
def test_task_args_tags_as_a_string_says_pass_a_list():
    with Flow("f"), pytest.raises(TaskDefinitionError, match=r"tags=\['etl'\]"):
        one(task_args={"tags": "etl"})


def test_task_args_tags_as_a_list_are_used():
    with Flow("f"):
        r = one(task_args={"tags": ["etl", "daily"]})
    assert r.tags == {"etl", "daily"}


# -- 23: run signatures ----------------------------------------------------------------
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


# -- 24: re-entering `with flow` -------------------------------------------------------
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
