"""`orchestrator.Client` and the flow-run library tasks against a real
`orchestrator up` process (its agent executes the runs), plus the store
fallback of `create_flow_run` when no server is in play."""

import datetime as dt
import os
import socket
import time
from contextlib import closing
from pathlib import Path

import pytest
from helpers import ServiceProcess, register_flows

from orchestrator import Client
from orchestrator.client import ClientError, ServerNotRunning
from orchestrator.storage import Script

FLOWS = '''
import time
from orchestrator import Flow, Parameter, context, get_logger, task
from orchestrator.tasks.flow_runs import RenameFlowRun, create_flow_run, wait_for_flow_run


@task
def say(word):
    get_logger().info("client-test says %s", word)


with Flow("echo") as echo_flow:
    say(Parameter("word", default="hello"))


@task
def doze():
    time.sleep(30)


with Flow("sleeper") as sleeper_flow:
    doze()


@task
def child_task(item):
    get_logger().info("child got %s", item)
    if item == "boom":
        raise ValueError("the child fails on purpose")


with Flow("child") as child_flow:
    child_task(Parameter("item"))


with Flow("value-param") as value_param_flow:   # a parameter called "value"
    say(Parameter("value"))


with Flow("parent") as parent_flow:
    good_child = create_flow_run(flow_name="child", project_name="p",
                                 parameters={"item": "from-parent"})
    wait_for_flow_run(good_child, raise_final_state=True)


with Flow("bad-parent") as bad_parent_flow:
    bad_child = create_flow_run(flow_name="child", project_name="p",
                                parameters={"item": "boom"})
    wait_for_flow_run(bad_child, raise_final_state=True)


@task
def chatter(n):
    for i in range(n):
        get_logger().info("chatter line %d", i)


with Flow("chatty-child") as chatty_child_flow:
    chatter(Parameter("n"))


with Flow("streaming-parent") as streaming_parent_flow:
    chatty = create_flow_run(flow_name="chatty-child", project_name="p",
                             parameters={"n": 2500})
    wait_for_flow_run(chatty, stream_logs=True, poll_interval=3)


rename = RenameFlowRun()

with Flow("renamed-by-task") as renamed_by_task_flow:
    rename(flow_run_name="new-name-from-task")


def rename_when_running(flow, old_state, new_state):
    if new_state.is_running():
        RenameFlowRun().run(flow_run_name=f"report-{context.parameters['day']}")


@task
def nothing(day):
    return day


with Flow("renamed-by-handler", state_handlers=[rename_when_running]) as handler_flow:
    nothing(Parameter("day"))
'''

NOWHERE = ["no-agent-has-this-label"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One `orchestrator up` for the module, over its own ORCHESTRATOR_HOME in
    which project "p" holds the flows of FLOWS."""
    from orchestrator.store import Store

    base = tmp_path_factory.mktemp("client-server")
    home = base / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORCHESTRATOR_HOME", str(home))
        for name in ("ORCHESTRATOR_API_URL", "ORCHESTRATOR_API_TOKEN"):
            mp.delenv(name, raising=False)
        for name in list(os.environ):
            if name.startswith("ORCHESTRATOR__"):
                mp.delenv(name)
        path = base / "client_flows.py"
        path.write_text(FLOWS)
        with closing(Store.open()) as store:
            register_flows(store, path)
        with ServiceProcess("up", "--poll-interval", "0.1", home=home, log_dir=base) as up:
            yield up.wait_for_banner()


@pytest.fixture
def client(server, home, monkeypatch):
    """A Client() found by itself: ORCHESTRATOR_HOME is the server's, and no
    URL or token is given in the environment."""
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(server.home))
    monkeypatch.delenv("ORCHESTRATOR_API_URL", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_API_TOKEN", raising=False)
    c = Client()
    yield c
    c.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_runs(client, **filters):
    runs, cursor = client.list_flow_runs(limit=200, **filters)
    while cursor is not None:
        page, cursor = client.list_flow_runs(limit=200, cursor=cursor, **filters)
        runs += page
    return runs


# -- finding the server ------------------------------------------------------------
def test_client_finds_the_running_server_and_token_by_itself(server, client):
    assert (server.home / "api-url").read_text().strip() == server.url
    assert client.url == server.url
    assert client.token == (server.home / "api-token").read_text().strip()
    health = client.health()
    assert health["status"] == "ok"
    assert str(server.home / "orchestrator.db") in health["database"]


def test_nothing_listening_is_server_not_running_with_how_to_start_one():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerNotRunning) as caught:
        Client(url).health()
    assert isinstance(caught.value, ConnectionError)
    assert isinstance(caught.value, ClientError)
    message = str(caught.value)
    assert f"No orchestrator server answers at {url}" in message
    assert "orchestrator up" in message


def test_a_wrong_token_is_a_401_client_error(server, client):
    with pytest.raises(ClientError) as caught:
        Client(token="nope").get_flow_run(1)
    assert caught.value.status == 401
    assert "token" in str(caught.value)


# -- a run from creation to its logs -----------------------------------------------
def test_a_run_is_created_executed_and_its_logs_read(client):
    run = client.create_flow_run("p/echo", parameters={"word": "pelican-42"})
    assert isinstance(run["id"], int)
    assert run["state"] == "Scheduled"
    assert run["flow"] == "p/echo"
    assert run["parameters"] == {"word": "pelican-42"}

    done = client.wait_for_flow_run(run["id"], timeout=30)
    assert done["id"] == run["id"]
    assert done["state"] == "Success", done["message"]

    logs = client.get_logs(run["id"])
    messages = [line["message"] for line in logs]
    assert "client-test says pelican-42" in messages
    ids = [line["id"] for line in logs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    said = messages.index("client-test says pelican-42")
    assert len(logs) >= 2
    # Tailing: only the lines after the given id come back.
    middle = ids[said]
    newer = client.get_logs(run["id"], after=middle)
    assert [line["id"] for line in newer] == ids[said + 1:]
    assert client.get_logs(run["id"], after=ids[-1]) == []


def test_a_parameter_called_value_does_not_break_a_run_under_up(client):
    # Checkpointed runs format result locations with the run's parameters as
    # keyword arguments of Result.write(value, **values): one named "value"
    # must not collide with the result itself.
    run = client.create_flow_run("p/value-param", parameters={"value": "heron"})
    done = client.wait_for_flow_run(run["id"], timeout=30)
    failed = [(t["task_name"], t["message"]) for t in client.get_task_runs(run["id"])
              if t["state"] != "Success"]
    assert done["state"] == "Success", failed
    assert "client-test says heron" in [line["message"] for line in client.get_logs(run["id"])]


def test_cancelling_a_finished_run_is_a_409(client):
    run = client.create_flow_run("p/echo")
    done = client.wait_for_flow_run(run["id"], timeout=30)
    assert done["state"] == "Success", done["message"]
    with pytest.raises(ClientError) as caught:
        client.cancel_flow_run(run["id"])
    assert caught.value.status == 409
    assert str(run["id"]) in str(caught.value)
    assert client.get_flow_run(run["id"])["state"] == "Success"


def test_a_long_running_run_can_be_cancelled(client):
    run = client.create_flow_run("p/sleeper")
    deadline = time.monotonic() + 30
    while client.get_flow_run(run["id"])["state"] != "Running":
        assert time.monotonic() < deadline, client.get_flow_run(run["id"])
        time.sleep(0.1)
    # Wait for the task itself to be running, so the cancel stops a real process.
    while not any(t["state"] == "Running" for t in client.get_task_runs(run["id"])):
        assert time.monotonic() < deadline, client.get_task_runs(run["id"])
        time.sleep(0.1)
    answered = client.cancel_flow_run(run["id"])
    assert answered["id"] == run["id"]
    assert answered["state"] in ("Cancelling", "Cancelled")
    done = client.wait_for_flow_run(run["id"], timeout=25)
    assert done["state"] == "Cancelled", done["message"]


def test_an_unknown_run_is_a_404_naming_the_id(client):
    with pytest.raises(ClientError) as caught:
        client.get_flow_run(999999)
    assert caught.value.status == 404
    assert "999999" in str(caught.value)


def test_a_run_no_agent_can_take_times_out_pointing_to_explain(client):
    run = client.create_flow_run("p/echo", labels=NOWHERE)
    assert run["labels"] == NOWHERE
    with pytest.raises(TimeoutError) as caught:
        client.wait_for_flow_run(run["id"], timeout=0.5, poll_interval=0.1)
    message = str(caught.value)
    assert f"orchestrator explain {run['id']}" in message
    assert "Scheduled" in message
    assert client.get_flow_run(run["id"])["state"] == "Scheduled"


# -- listing and renaming -----------------------------------------------------------
def test_listing_filters_by_flow_and_state_and_pages_with_the_cursor(client):
    finished = client.create_flow_run("p/echo", parameters={"word": "listed"})
    assert client.wait_for_flow_run(finished["id"], timeout=30)["state"] == "Success"
    waiting = {client.create_flow_run("p/echo", labels=NOWHERE)["id"] for _ in range(5)}
    other_flow = client.create_flow_run("p/child", parameters={"item": 1}, labels=NOWHERE)

    runs, cursor = client.list_flow_runs(flow="p/echo", state="Scheduled", limit=200)
    assert cursor is None
    listed = [r["id"] for r in runs]
    assert waiting <= set(listed)
    assert finished["id"] not in listed
    assert other_flow["id"] not in listed
    assert all(r["flow"] == "p/echo" and r["state"] == "Scheduled" for r in runs)
    assert listed == sorted(listed, reverse=True)  # newest first

    walked, cursor, pages = [], None, 0
    while True:
        page, cursor = client.list_flow_runs(flow="p/echo", state="Scheduled", limit=2,
                                             cursor=cursor)
        pages += 1
        assert len(page) <= 2
        walked += [r["id"] for r in page]
        if cursor is None:
            break
        assert pages < 100
    assert walked == listed  # every run once, in order
    assert pages >= 3

    succeeded, _ = client.list_flow_runs(flow="p/echo", state="Success", limit=200)
    assert finished["id"] in {r["id"] for r in succeeded}
    assert not waiting & {r["id"] for r in succeeded}
    assert all(r["state"] == "Success" for r in succeeded)

    both = {r["id"] for r in all_runs(client, flow="p/echo", state=["Success", "Scheduled"])}
    assert waiting | {finished["id"]} <= both


def test_a_run_can_be_renamed(client):
    run = client.create_flow_run("p/echo", labels=NOWHERE)
    renamed = client.set_flow_run_name(run["id"], "a-better-name")
    assert renamed["id"] == run["id"]
    assert renamed["name"] == "a-better-name"
    assert client.get_flow_run(run["id"])["name"] == "a-better-name"


# -- idempotency and scheduling -----------------------------------------------------
def test_a_retried_create_with_the_same_idempotency_key_gives_the_same_run(client):
    key = "retried-script-7d1e"
    first = client.create_flow_run("p/echo", labels=NOWHERE, idempotency_key=key)
    second = client.create_flow_run("p/echo", labels=NOWHERE, idempotency_key=key)
    assert second["id"] == first["id"]
    assert first["idempotency_key"] == key
    stored = [r for r in all_runs(client, flow="p/echo") if r["idempotency_key"] == key]
    assert [r["id"] for r in stored] == [first["id"]]


def test_creates_without_a_key_are_separate_runs(client):
    first = client.create_flow_run("p/echo", labels=NOWHERE)
    second = client.create_flow_run("p/echo", labels=NOWHERE)
    assert first["id"] != second["id"]
    assert first["idempotency_key"] != second["idempotency_key"]


def test_a_naive_scheduled_start_time_is_refused(client):
    before = {r["id"] for r in all_runs(client, flow="p/echo")}
    with pytest.raises(ClientError) as caught:
        client.create_flow_run("p/echo", scheduled_start_time=dt.datetime(2030, 1, 1, 6))
    assert "time zone" in str(caught.value)
    assert {r["id"] for r in all_runs(client, flow="p/echo")} == before


def test_an_aware_scheduled_start_time_is_kept(client):
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).replace(microsecond=0)
    when = when.astimezone(dt.timezone(dt.timedelta(hours=2)))  # not UTC on purpose
    run = client.create_flow_run("p/echo", scheduled_start_time=when)
    stored = client.get_flow_run(run["id"])
    assert dt.datetime.fromisoformat(stored["scheduled_start_time"]) == when
    assert stored["state"] == "Scheduled"  # not due: the agent leaves it
    client.cancel_flow_run(run["id"])
    assert client.get_flow_run(run["id"])["state"] == "Cancelled"


# -- flow of flows ------------------------------------------------------------------
def children_of(client, parent_id):
    return [r for r in all_runs(client, flow="p/child")
            if (r["idempotency_key"] or "").startswith(f"flow-run-{parent_id}-")]


def test_a_parent_flow_runs_a_child_flow_through_up(client):
    parent = client.create_flow_run("p/parent")
    done = client.wait_for_flow_run(parent["id"], timeout=40)
    assert done["state"] == "Success", done["message"]

    children = children_of(client, parent["id"])
    assert len(children) == 1, children
    child = children[0]
    assert child["parameters"] == {"item": "from-parent"}
    assert child["state"] == "Success", child["message"]
    assert child["idempotency_key"].startswith(f"flow-run-{parent['id']}-")
    assert "child got from-parent" in [line["message"]
                                       for line in client.get_logs(child["id"])]
    parent_logs = "\n".join(line["message"] for line in client.get_logs(parent["id"]))
    assert f"Created flow run {child['id']}" in parent_logs


def test_stream_logs_copies_every_line_of_the_child_not_one_page_per_look(client):
    parent = client.create_flow_run("p/streaming-parent")
    done = client.wait_for_flow_run(parent["id"], timeout=60)
    assert done["state"] == "Success", done["message"]
    copied, after = [], None
    while True:
        page = client.get_logs(parent["id"], after=after)
        if not page:
            break
        copied += [line["message"] for line in page if "chatter line" in line["message"]]
        after = page[-1]["id"]
    assert len(copied) == 2500
    assert copied[-1].endswith("chatter line 2499")


def test_a_failing_child_fails_the_parent_with_raise_final_state(client):
    parent = client.create_flow_run("p/bad-parent")
    done = client.wait_for_flow_run(parent["id"], timeout=40)
    assert done["state"] == "Failed", done["message"]

    children = children_of(client, parent["id"])
    assert len(children) == 1, children
    child = children[0]
    assert child["parameters"] == {"item": "boom"}
    assert child["state"] == "Failed"
    waits = [t for t in client.get_task_runs(parent["id"])
             if t["task_name"] == "wait_for_flow_run"]
    assert len(waits) == 1
    assert waits[0]["state"] == "Failed"
    assert f"Flow run {child['id']} ended Failed" in waits[0]["message"]


# -- renaming from inside a run ----------------------------------------------------------
def test_rename_flow_run_renames_runs_executed_by_up(client):
    by_task = client.create_flow_run("p/renamed-by-task")
    by_handler = client.create_flow_run("p/renamed-by-handler",
                                        parameters={"day": "2024-05-01"})
    for run in (by_task, by_handler):
        done = client.wait_for_flow_run(run["id"], timeout=30)
        assert done["state"] == "Success", done["message"]
    assert client.get_flow_run(by_task["id"])["name"] == "new-name-from-task"
    assert client.get_flow_run(by_handler["id"])["name"] == "report-2024-05-01"


# -- without a server ---------------------------------------------------------------
def test_create_flow_run_task_falls_back_to_the_local_store(registered_store, monkeypatch):
    from orchestrator.tasks.flow_runs import create_flow_run, wait_for_flow_run

    monkeypatch.delenv("ORCHESTRATOR_API_URL", raising=False)
    store = registered_store(FLOWS, "local_flows.py")
    run_id = create_flow_run.run(flow_name="child", project_name="p",
                                 parameters={"item": "local"})
    run = store.get_flow_run(run_id)
    assert run["flow_name"] == "child"
    assert run["project"] == "p"
    assert run["parameters"] == {"item": "local"}
    assert run["state"] == "Scheduled"
    assert run["idempotency_key"] is None  # not in a stored run: no derived key
    # wait_for_flow_run reads it from the store too (and times out as a FAIL signal).
    from orchestrator.core import signals

    with pytest.raises(signals.FAIL) as caught:
        wait_for_flow_run.run(run_id, max_duration=0, poll_interval=0)
    assert f"Flow run {run_id} is still Scheduled" in str(caught.value)
    assert not (Path(os.environ["ORCHESTRATOR_HOME"]) / "api-url").exists()


def test_a_flow_registered_over_rest_runs_under_up_without_labels_given(client, tmp_path):
    # Script storage adds no labels of its own; the API gives such a flow the
    # server's host name, which up's agent has, so its runs are not stranded.
    path = tmp_path / "over_rest.py"
    path.write_text('from orchestrator import Flow, task\n\n@task\ndef one():\n    return 1\n\n'
                    'with Flow("over-rest") as flow:\n    one()\n')
    flow = client.register_flow("p", Script(str(path)))
    assert flow["labels"] == [socket.gethostname()]
    run = client.wait_for_flow_run(client.create_flow_run("p/over-rest")["id"], timeout=30)
    assert run["state"] == "Success", run["message"]
