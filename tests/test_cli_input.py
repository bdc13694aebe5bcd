"""Bad input at the `orchestrator` command: exit code 2, one line on stderr that
names the value (or setting), no traceback, and nothing stored, as the REST API
answers a 400. The checks live in `orchestrator.core.validation`, which both edges
use; a few tests here call it directly, and one shows the API giving the CLI's
message.
"""

import json
import sqlite3
import subprocess
import sys
import types

import pytest
from helpers import ROOT, assert_bad_input, register_flows, service_env

from orchestrator.core import validation
from orchestrator.exceptions import InputError, OrchestratorError

FLOWS = """
from orchestrator import Flow, Parameter, task

@task
def greet(name):
    return name

with Flow("hello") as hello:
    greet(Parameter("name", default="world"))
"""

TOO_BIG_ID = str(2 ** 63)
LONG = "x" * 201


def orchestrator(home, *args, env=None, timeout=60):
    """`python -m orchestrator ARGS` over `home`, with extra environment `env`."""
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          env=dict(service_env(home), **(env or {})), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def store_dump(home):
    """Every row of the store as SQL text: equal dumps mean nothing was stored."""
    connection = sqlite3.connect(home / "orchestrator.db")
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def listing(home, *args):
    result = orchestrator(home, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def flows(home, tmp_path):
    """Project 'p' with the flow 'hello' registered from `path`, and one
    Scheduled run of it, `run_id`."""
    from orchestrator import service
    from orchestrator.store import Store

    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    store = Store.open()
    try:
        register_flows(store, path)
        run_id = service.create_flow_run(store, "hello")["id"]
    finally:
        store.close()
    return types.SimpleNamespace(path=path, run_id=run_id)


# -- ids and limits ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["show", "logs", "explain", "cancel", "execute"])
@pytest.mark.parametrize("run_id", [TOO_BIG_ID, "1" * 40])
def test_a_run_id_beyond_64_bits_exits_2_naming_it(home, flows, command, run_id):
    before = store_dump(home)

    result = orchestrator(home, command, run_id)

    assert_bad_input(result, f"Flow run id {run_id}", "out of range", str(2 ** 63 - 1))
    assert store_dump(home) == before


@pytest.mark.parametrize("limit, shown", [(10 ** 20, str(10 ** 20)), ("-1", "-1"),
                                          ("lots", "'lots'"), ("2.5", "'2.5'")])
def test_a_concurrency_limit_out_of_range_exits_2_and_sets_nothing(home, flows, limit, shown):
    result = orchestrator(home, "concurrency", "set", "gpu", limit)

    assert_bad_input(result, f"Concurrency limit {shown}", "0 to 100000")
    assert listing(home, "concurrency", "list") == []


def test_a_concurrency_limit_in_range_is_set(home, flows):
    assert orchestrator(home, "concurrency", "set", "gpu", "100000").returncode == 0
    assert listing(home, "concurrency", "list")[0]["limit"] == 100000


# -- run: parameters -----------------------------------------------------------------
def test_a_params_file_that_is_not_utf8_exits_2_naming_the_file(home, flows, tmp_path):
    params = tmp_path / "params.json"
    params.write_bytes(b"\xff\xfe{}")
    before = store_dump(home)

    result = orchestrator(home, "run", "hello", "--params-file", params)

    assert_bad_input(result, str(params), "not UTF-8", "0xff")
    assert store_dump(home) == before


def test_a_params_file_of_5_mb_exits_2_saying_the_limit(home, flows, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"name": "x" * 5_000_000}))
    before = store_dump(home)

    result = orchestrator(home, "run", "hello", "--params-file", params)

    assert_bad_input(result, "parameters", "1048576 bytes", "'name'")
    assert store_dump(home) == before


DEEP = "[" * 40 + "]" * 40


@pytest.mark.parametrize("param, fragments", [
    ('name="a\\u0000b"', ["parameters.name", "'a\\x00b'", "NUL"]),
    ('name="\\ud800"', ["parameters.name", "lone surrogate"]),
    (f"name={DEEP}", ["parameters.name", "more than 32 deep"]),
    ("name=NaN", ["parameters.name", "nan", "not a finite number"]),
    ("name=1e999", ["parameters.name", "inf", "not a finite number"]),
], ids=["nul", "lone-surrogate", "too-deep", "nan", "infinity"])
def test_a_parameter_value_the_api_refuses_exits_2(home, flows, param, fragments):
    before = store_dump(home)

    result = orchestrator(home, "run", "hello", "--param", param)

    assert_bad_input(result, *fragments)
    assert store_dump(home) == before


def test_a_params_file_nested_deeper_than_json_can_read_exits_2(home, flows, tmp_path):
    params = tmp_path / "params.json"
    params.write_text('{"name": ' + "[" * 100_000 + "]" * 100_000 + "}")
    before = store_dump(home)

    result = orchestrator(home, "run", "hello", "--params-file", params)

    assert_bad_input(result, str(params), "too deeply")
    assert store_dump(home) == before


# -- run and register: names, labels, keys -------------------------------------------
BAD_NAMES = [("", "is empty"), ("   ", "is blank"), ("a\nb", "line break"),
             (LONG, "longer than 200")]


@pytest.mark.parametrize("option, what", [("--name", "Run name"), ("--label", "Label"),
                                          ("--idempotency-key", "Idempotency key")])
@pytest.mark.parametrize("value, problem", BAD_NAMES,
                         ids=["empty", "blank", "newline", "201-characters"])
def test_a_bad_name_label_or_key_for_run_exits_2_and_creates_no_run(home, flows, option, what,
                                                                    value, problem):
    before = store_dump(home)

    result = orchestrator(home, "run", "hello", option, value, "--local")

    line = assert_bad_input(result, what, problem, "1 to 200 characters on one line")
    assert repr(value[:40]) in line
    assert store_dump(home) == before


@pytest.mark.parametrize("value, problem", BAD_NAMES,
                         ids=["empty", "blank", "newline", "201-characters"])
def test_a_bad_label_for_register_exits_2_and_registers_nothing(home, flows, value, problem):
    before = store_dump(home)

    result = orchestrator(home, "register", "-p", "p", flows.path, "--label", value)

    assert_bad_input(result, "Label", problem)
    assert store_dump(home) == before


def test_good_names_labels_and_keys_at_the_limit_make_a_run(home, flows):
    result = orchestrator(home, "run", "hello", "--name", "n" * 200, "--label", "l" * 200,
                          "--idempotency-key", "k" * 200, "--json")

    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["name"] == "n" * 200 and run["labels"] == ["l" * 200]


# -- services settings: refused when the configuration loads ----------------------------
@pytest.mark.parametrize("setting, value", [
    ("heartbeat_timeout", "abc"), ("heartbeat_timeout", "0"), ("heartbeat_timeout", "-1"),
    ("heartbeat_timeout", "nan"), ("heartbeat_timeout", "inf"),
    ("heartbeat_interval", "abc"), ("heartbeat_interval", "0"), ("heartbeat_interval", "-1"),
    ("heartbeat_interval", "nan"), ("cancel_grace", "abc"), ("cancel_grace", "0"),
    ("cancel_grace", "-1"), ("cancel_grace", "inf"),
])
def test_a_bad_services_setting_in_the_environment_stops_execute_before_the_run_starts(
        home, flows, setting, value):
    variable = f"ORCHESTRATOR__SERVICES__{setting.upper()}"

    result = orchestrator(home, "execute", flows.run_id, env={variable: value})

    line = assert_bad_input(result, f"services.{setting} = ", variable, "above 0")
    assert value in line
    [run] = listing(home, "runs")
    assert run["state"] == "Scheduled" and run["start_time"] is None


def test_a_heartbeat_interval_not_below_the_timeout_is_refused(home, flows):
    result = orchestrator(home, "execute", flows.run_id, env={
        "ORCHESTRATOR__SERVICES__HEARTBEAT_INTERVAL": "60"})

    assert_bad_input(result, "services.heartbeat_interval = 60", "not below",
                     "services.heartbeat_timeout = 60")
    assert listing(home, "runs")[0]["state"] == "Scheduled"


def test_a_bad_services_setting_in_config_toml_names_the_file(home, flows):
    config = home / "config.toml"
    config.write_text("[services]\nheartbeat_timeout = 0\n")
    try:
        result = orchestrator(home, "run", "hello", "--local")
    finally:
        config.unlink()  # the `home` fixture loads the configuration at its end

    assert_bad_input(result, "services.heartbeat_timeout = 0", str(config))
    assert [run["id"] for run in listing(home, "runs")] == [flows.run_id]


@pytest.mark.parametrize("command", [["agent"], ["scheduler"]])
def test_services_refuse_to_start_with_a_bad_setting(home, command):
    # (Were the setting taken, the service would run until the timeout.)
    result = orchestrator(home, *command, env={"ORCHESTRATOR__SERVICES__CANCEL_GRACE": "0"},
                          timeout=20)

    assert_bad_input(result, "services.cancel_grace = 0")


def test_load_config_makes_the_services_settings_floats(home):
    from orchestrator.config import load_config

    services = load_config(environ={"ORCHESTRATOR__SERVICES__HEARTBEAT_TIMEOUT": "30"})[
        "services"]
    assert services == {"heartbeat_interval": 5.0, "heartbeat_timeout": 30.0,
                        "cancel_grace": 10.0, "task_slot_lease": 30.0, "warm_starts": True}
    assert all(type(value) is float for key, value in services.items() if key != "warm_starts")


# -- orchestrator.core.validation itself ---------------------------------------------------
def test_an_input_error_is_an_orchestrator_error_and_a_value_error_naming_its_field():
    with pytest.raises(InputError) as info:
        validation.check_parameters({"day": {"hour": float("nan")}})
    assert isinstance(info.value, OrchestratorError) and isinstance(info.value, ValueError)
    assert info.value.field == "parameters.day.hour"


@pytest.mark.parametrize("value, expected", [("1", 1), (" 42 ", 42), ("0009", 9),
                                             (2 ** 63 - 1, 2 ** 63 - 1)])
def test_check_id_takes_ints_and_their_text(value, expected):
    assert validation.check_id(value) == expected


@pytest.mark.parametrize("value", [0, -1, 2 ** 63, "9" * 5000, "abc", "1.5", "²", True, None])
def test_check_id_refuses_what_is_not_a_64_bit_id(value):
    with pytest.raises(InputError, match="flow run id|Flow run id") as info:
        validation.check_id(value)
    assert info.value.field == "run_id"
    assert len(str(info.value)) < 200


def test_parameters_of_exactly_one_mib_of_json_are_accepted_and_one_byte_more_is_not():
    overhead = len(json.dumps({"word": ""}, separators=(",", ":")))
    exact = {"word": "x" * (validation.MAX_PARAMETERS_BYTES - overhead)}
    assert validation.check_parameters(exact) is exact
    with pytest.raises(InputError, match="1048577 bytes of JSON"):
        validation.check_parameters({"word": exact["word"] + "x"})


@pytest.mark.parametrize("value, fragment", [
    ([1], "is not an object"), ({"d": {1: "a"}}, "JSON object keys are strings"),
    ({"d": object()}, "which JSON cannot hold"), ({"d": [float("inf")]}, "not a finite"),
])
def test_check_parameters_refuses_what_json_cannot_hold(value, fragment):
    with pytest.raises(InputError, match=fragment):
        validation.check_parameters(value)


def test_a_long_value_is_shortened_in_the_message():
    with pytest.raises(InputError) as info:
        validation.check_name("y" * 100_000 + "\n")
    assert len(str(info.value)) < 200
    assert "(100001 characters)" in str(info.value)


@pytest.mark.parametrize("value, expected", [(0, 0), (100000, 100000), (3.0, 3)])
def test_check_concurrency_limit_takes_whole_numbers_up_to_100000(value, expected):
    assert validation.check_concurrency_limit(value) == expected


def test_the_api_refuses_a_label_with_the_clis_message(home, flows):
    import falcon.testing

    from orchestrator.api import create_app
    from orchestrator.store import Store

    cli_line = assert_bad_input(orchestrator(home, "run", "hello", "--label", "a\nb"))
    store = Store.open()
    try:
        client = falcon.testing.TestClient(create_app(store, token="t"))
        resp = client.simulate_post("/api/flow_runs", json={"flow": "p/hello",
                                                            "labels": ["a\nb"]},
                                    headers={"Authorization": "Bearer t"})
    finally:
        store.close()
    assert resp.status_code == 400
    assert resp.json["error"]["field"] == "labels"
    assert cli_line == "Error: " + resp.json["error"]["message"]
