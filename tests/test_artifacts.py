"""Artifacts (`orchestrator.artifacts`, Prefect 1's `prefect.backend.artifacts`):
markdown reports and links a task publishes with its run. Through real runs from
the store (in this process, on Dask worker processes, resumed by a later
attempt), `flow.run()` (nothing kept, as in Prefect 1), the store (fenced by the
run's attempt, indexed, cascaded, migrated), a live REST server and the CLI.

    store = Store.open()
    run = service.create_flow_run(store, "report")
    backend.execute_flow_run(store, run["id"], service.load_flow)
    store.artifacts(run["id"])      # [{"id", "task_slug", "map_index", "kind", "text", ...}]
"""

import datetime as dt
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from helpers import ServiceProcess, cli, execute

from orchestrator import Flow, Parameter, service, signals, task, unmapped
from orchestrator.service import execution as backend
from orchestrator.artifacts import (MAX_ARTIFACT_BYTES, create_link, create_link_artifact,
                                    create_markdown, create_markdown_artifact,
                                    delete_artifact, update_link, update_link_artifact,
                                    update_markdown, update_markdown_artifact)
from orchestrator.store import AttemptLost, DiskFull, Store
from orchestrator.store.db import MIGRATIONS


def task_message(store, run_id, slug):
    return next(t["message"] for t in store.task_runs(run_id) if t["task_slug"] == slug)


# -- in a run from the store --------------------------------------------------------------
@task
def publish(region, ids_file):
    report = create_markdown_artifact(f"# Sales in {region}\n\n**42** units")
    link = create_link_artifact(f"https://dashboards.example.com/{region}")
    with open(ids_file, "a") as out:
        out.write(f"{region} {report} {link}\n")


def test_each_mapped_task_run_keeps_its_artifacts_and_gets_their_ids(store, tmp_path):
    ids_file = tmp_path / "ids"
    with Flow("sales") as flow:
        publish.map(Parameter("regions"), ids_file=unmapped(str(ids_file)))
    before = time.time()

    run = execute(store, flow, regions=["north", "south"])

    assert run["state"] == "Success", run["message"]
    returned = {line.split()[0]: line.split()[1:] for line in ids_file.read_text().splitlines()}
    stored = store.artifacts(run["id"])
    assert [(a["task_slug"], a["map_index"], a["kind"], a["text"]) for a in stored] == [
        ("publish-1", 0, "markdown", "# Sales in north\n\n**42** units"),
        ("publish-1", 0, "link", "https://dashboards.example.com/north"),
        ("publish-1", 1, "markdown", "# Sales in south\n\n**42** units"),
        ("publish-1", 1, "link", "https://dashboards.example.com/south"),
    ]
    by_child = {i: [a["id"] for a in stored if a["map_index"] == i] for i in (0, 1)}
    assert by_child == {0: returned["north"], 1: returned["south"]}
    for artifact in stored:
        assert str(uuid.UUID(artifact["id"])) == artifact["id"]  # a UUID string, as Prefect 1's
        assert before <= artifact["created"] == artifact["updated"] <= time.time()
    # One task run's artifacts, by its slug and map index.
    assert [a["text"] for a in store.artifacts(run["id"], "publish-1", 1)] == [
        "# Sales in south\n\n**42** units", "https://dashboards.example.com/south"]
    assert store.artifacts(run["id"], "publish-1") == []  # the parent itself made none


@task
def revise(marker):
    report = create_markdown_artifact("draft")
    link = create_link_artifact("https://example.com/old")
    gone = create_markdown_artifact("scratch")
    update_markdown_artifact(report, "# Final")
    update_link_artifact(link, "https://example.com/new")
    delete_artifact(gone)
    Path(marker).write_text(gone)
    update_markdown_artifact(gone, "too late")


def test_update_replaces_an_artifact_and_delete_removes_it(store, tmp_path):
    with Flow("revised") as flow:
        revise(str(tmp_path / "deleted-id"))

    run = execute(store, flow)

    [made, link] = store.artifacts(run["id"])
    assert (made["kind"], made["text"], link["kind"], link["text"]) == (
        "markdown", "# Final", "link", "https://example.com/new")
    assert made["updated"] > made["created"]
    # Changing an artifact after deleting it fails the task, naming the id.
    gone = (tmp_path / "deleted-id").read_text()
    message = task_message(store, run["id"], "revise-1")
    assert run["state"] == "Failed"
    assert f"has no artifact '{gone}' (it was deleted)" in message, message


@task
def change_by_id(artifact_id):
    update_link_artifact(artifact_id, "https://example.com/mine-now")


def test_a_task_cannot_change_another_runs_artifact_or_an_unknown_one(store):
    with Flow("owner") as owner:
        task(lambda: create_link_artifact("https://example.com/theirs"), name="make")()
    theirs = execute(store, owner)
    [artifact] = store.artifacts(theirs["id"])

    with Flow("intruder") as intruder:
        change_by_id(Parameter("artifact_id"))
    other = execute(store, intruder, artifact_id=artifact["id"])
    unknown = execute(store, intruder, artifact_id="no-such-artifact")

    assert store.artifacts(theirs["id"])[0]["text"] == "https://example.com/theirs"
    assert other["state"] == unknown["state"] == "Failed"
    assert (f"Artifact '{artifact['id']}' belongs to flow run {theirs['id']}, not to this "
            f"run ({other['id']})") in task_message(store, other["id"], "change_by_id-1")
    assert f"Flow run {unknown['id']} has no artifact 'no-such-artifact'" in task_message(
        store, unknown["id"], "change_by_id-1")


@task
def draft_report():
    return create_markdown_artifact("# Draft: waiting for data")


@task
def final_report(artifact_id, marker):
    if not Path(marker).exists():
        Path(marker).touch()
        raise signals.RETRY("data not there yet",
                            start_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    update_markdown_artifact(artifact_id, "# Final")


def test_a_resumed_run_updates_the_artifact_an_earlier_attempt_made(store, tmp_path):
    with Flow("sensor") as flow:
        final_report(draft_report(), Parameter("marker"))
    service.register_flow(store, flow, "etl")
    run = service.create_flow_run(store, "sensor", parameters={"marker": str(tmp_path / "m")})

    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Scheduled"
    assert [a["text"] for a in store.artifacts(run["id"])] == ["# Draft: waiting for data"]
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success"
    assert store.get_flow_run(run["id"])["attempt"] == 2
    assert [a["text"] for a in store.artifacts(run["id"])] == ["# Final"]


def test_an_artifact_made_outside_a_task_belongs_to_the_run(store):
    def link_on_success(flow, old, new):
        if new.is_successful():
            create_link_artifact("https://example.com/run-summary")

    with Flow("summary", state_handlers=[link_on_success]) as flow:
        task(lambda: 1, name="one")()

    run = execute(store, flow)

    assert [(a["task_slug"], a["map_index"], a["text"]) for a in store.artifacts(run["id"])
            ] == [(None, None, "https://example.com/run-summary")]


@task
def publish_from_worker(n):
    return create_markdown_artifact(f"made by process {os.getpid()} for {n}")


def test_tasks_on_dask_worker_processes_store_their_artifacts(store):
    from orchestrator.executors import LocalDaskExecutor

    with Flow("on-workers", executor=LocalDaskExecutor(scheduler="processes",
                                                        num_workers=2)) as flow:
        publish_from_worker.map([1, 2, 3])

    run = execute(store, flow)

    assert run["state"] == "Success", run["message"]
    stored = sorted(store.artifacts(run["id"]), key=lambda a: a["map_index"])
    assert [a["map_index"] for a in stored] == [0, 1, 2]
    assert all(a["text"].endswith(f"for {i + 1}") for i, a in enumerate(stored))
    assert all(f"process {os.getpid()} " not in a["text"] for a in stored)  # not made here


# -- checks of what a task gives -----------------------------------------------------------
@pytest.mark.parametrize("call, fragment", [
    (lambda: create_markdown_artifact(42), "markdown 42 is of type int, not a string"),
    (lambda: create_markdown_artifact("x" * (MAX_ARTIFACT_BYTES + 1)),
     f"over the limit of {MAX_ARTIFACT_BYTES} bytes"),
    (lambda: create_markdown_artifact("a\x00b"), "contains a NUL character"),
    (lambda: create_link_artifact("https://a\nhttps://b"), "has a line break"),
    (lambda: create_link_artifact("  "), "is blank"),
], ids=["not-text", "too-large", "nul", "two-lines", "blank"])
def test_a_bad_artifact_fails_its_task_with_the_reason_in_flow_run_and_from_the_store(
        store, call, fragment):
    with Flow("bad") as flow:
        task(call, name="bad")()

    local = flow.run()
    stored = execute(store, flow)

    [local_state] = local.result.values()
    assert local_state.is_failed() and fragment in local_state.message, local_state.message
    assert stored["state"] == "Failed"
    assert fragment in task_message(store, stored["id"], "bad-1")
    assert store.artifacts(stored["id"]) == []


def test_changing_an_artifact_without_an_id_says_what_to_pass(store):
    with Flow("no-id") as flow:
        task(lambda: update_markdown_artifact(None, "x"), name="no_id")()

    run = execute(store, flow)

    assert "task_run_artifact_id None is not an artifact id; pass the id that " \
           "create_markdown_artifact" in task_message(store, run["id"], "no_id-1")


# -- flow.run(): no store -----------------------------------------------------------------
def test_flow_run_keeps_nothing_returns_none_and_logs_the_artifact(log_records):
    calls = {}

    @task
    def report():
        calls["ids"] = (create_markdown_artifact("# Totals\n\nall good"),
                        create_link_artifact("https://example.com/x"),
                        update_markdown_artifact("any-id", "y"),
                        update_link_artifact("any-id", "https://example.com/y"),
                        delete_artifact("any-id"))

    with Flow("local") as flow:
        report()

    assert flow.run().is_successful()
    assert calls["ids"] == (None,) * 5  # as Prefect 1 without a backend
    lines = log_records.messages("orchestrator.engine.artifacts")
    assert len(lines) == 2
    assert "Markdown artifact of task 'report' not kept: this run has no store" in lines[0]
    assert lines[0].endswith("It reads: # Totals\n\nall good")
    assert lines[1].endswith("It reads: https://example.com/x")


def test_prefect_1s_older_names_are_the_same_functions():
    assert (create_markdown, create_link, update_markdown, update_link) == (
        create_markdown_artifact, create_link_artifact, update_markdown_artifact,
        update_link_artifact)


# -- the store ----------------------------------------------------------------------------
def started_run(store):
    store.create_project("etl")
    flow_id = store.register_flow("etl", "daily", "fp-1", {}, [], [])[0]["id"]
    run_id = store.create_flow_run(flow_id)["id"]
    return run_id, store.start_flow_run(run_id, os.getpid())


def change(action, artifact_id, **values):
    return dict(values, action=action, id=artifact_id, time=values.get("time", time.time()))


def test_artifact_writes_are_fenced_by_the_runs_attempt(any_store):
    store = any_store
    run_id, attempt = started_run(store)
    made = change("create", "a-1", task_slug="t-1", map_index=None, kind="link",
                  text="https://example.com")
    assert store.record_artifacts(run_id, attempt, [made]) == [1]

    with pytest.raises(AttemptLost):
        store.record_artifacts(run_id, attempt + 1, [
            change("create", "a-2", task_slug="t-1", kind="markdown", text="late"),
            change("update", "a-1", kind="markdown", text="overwritten")])
    with pytest.raises(AttemptLost):
        store.record_artifacts(run_id, attempt - 1, [change("delete", "a-1")])

    [kept] = store.artifacts(run_id)
    assert (kept["id"], kept["kind"], kept["text"]) == ("a-1", "link", "https://example.com")


def test_updates_and_deletes_touch_only_the_runs_own_artifacts(any_store):
    store = any_store
    run_id, attempt = started_run(store)
    other_run = store.create_flow_run(store.get_flow("daily")["id"])["id"]
    other_attempt = store.start_flow_run(other_run, os.getpid())
    store.record_artifacts(other_run, other_attempt, [
        change("create", "theirs", task_slug="t-1", kind="link", text="https://x")])

    touched = store.record_artifacts(run_id, attempt, [
        change("update", "theirs", kind="markdown", text="mine"), change("delete", "theirs")])

    assert touched == [0, 0]
    assert [a["text"] for a in store.artifacts(other_run)] == ["https://x"]
    assert store.get_artifact("theirs")["flow_run_id"] == other_run


def test_a_runs_artifacts_go_with_it(any_store):
    store = any_store
    run_id, attempt = started_run(store)
    store.record_artifacts(run_id, attempt, [
        change("create", "a-1", task_slug="t-1", map_index=3, kind="markdown", text="# x")])
    store.finish_flow_run(run_id, attempt, "Success", "done")

    store.db.execute_sql(f"DELETE FROM flow_run WHERE id = {int(run_id)}")

    assert store.db.execute_sql("SELECT COUNT(*) FROM artifact").fetchone()[0] == 0


def test_a_schema_6_database_gets_the_artifact_table_and_keeps_its_runs(home):
    store = Store.open()
    run_id, _ = started_run(store)
    store.close()
    raw = sqlite3.connect(home / "orchestrator.db")
    raw.executescript("DROP TABLE artifact; DELETE FROM schema_version WHERE version >= 7;")
    raw.close()

    again = Store.open()

    assert again.artifacts(run_id) == []
    assert again.get_flow_run(run_id)["state"] == "Running"
    assert [v for v, in again.db.execute_sql("SELECT version FROM schema_version")][-1] \
        == MIGRATIONS[-1][0]
    indexes = {name for name, in again.db.execute_sql(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'artifact'")}
    assert {"artifact_flow_run_id_created_id",
            "artifact_flow_run_id_task_slug_map_index_created_id"} <= indexes


class FullOnce(Store):
    """A store whose disk is full for the first artifact write (a full disk
    cannot be made here without root; test_disk_full.py does it for real)."""

    refused = 0

    def record_run_report(self, run_id, attempt, artifacts=(), **report):
        if artifacts and not self.refused:
            self.refused += 1
            raise DiskFull("The disk that holds the store is full.")
        return super().record_run_report(run_id, attempt, artifacts=artifacts, **report)


def test_an_artifact_made_while_the_store_cannot_be_written_is_written_later(home):
    store = FullOnce.open()
    run_id, attempt = started_run(store)
    reporter = backend.StoreReporter(store, run_id, attempt)
    keeper = reporter.artifact_keeper()
    artifact_id = keeper.create("t-1", None, "markdown", "# kept in memory")

    reporter.close()

    assert store.refused == 1
    assert [(a["id"], a["text"]) for a in store.artifacts(run_id)] == [
        (artifact_id, "# kept in memory")]


# -- the REST API and the CLI ---------------------------------------------------------------
FLOWS = '''
from orchestrator import Flow, task
from orchestrator.artifacts import create_link_artifact, create_markdown_artifact

@task
def report():
    create_markdown_artifact("# Weekly\\n\\n| region | total |\\n|---|---|\\n| north | 10 |")
    create_link_artifact("https://dashboards.example.com/weekly")

with Flow("weekly") as weekly:
    report()

with Flow("quiet") as quiet:
    task(lambda: None, name="nothing")()
'''


@pytest.fixture
def executed(tmp_path, home):
    """A home with run 1 of p/weekly (two artifacts) and run 2 of p/quiet (none),
    each executed by `orchestrator execute`."""
    (home / "flows.py").write_text(FLOWS)
    cli(home, "project", "create", "p")
    cli(home, "register", "-p", "p", home / "flows.py")
    for number, flow in enumerate(("p/weekly", "p/quiet"), start=1):
        cli(home, "run", flow)
        cli(home, "execute", number)
    return home


def test_the_api_lists_a_runs_artifacts_as_its_document_says(executed, tmp_path):
    import jsonschema_rs  # schemathesis's validator

    from orchestrator.api.openapi import openapi_document

    validator = jsonschema_rs.Draft202012Validator(
        {"$ref": "#/components/schemas/ArtifactList",
         "components": openapi_document()["components"]}, validate_formats=True)
    with ServiceProcess("server", home=executed, log_dir=tmp_path) as server:
        server.wait_for_banner()
        status, found = server.api("GET", "/api/flow_runs/1/artifacts")
        quiet = server.api("GET", "/api/flow_runs/2/artifacts")
        missing = server.api("GET", "/api/flow_runs/99/artifacts")
        refused = server.api("GET", "/api/flow_runs/1/artifacts", token="wrong")

    assert status == 200
    validator.validate(found)
    assert [(a["task_slug"], a["map_index"], a["kind"]) for a in found["artifacts"]] == [
        ("report-1", None, "markdown"), ("report-1", None, "link")]
    assert found["artifacts"][0]["text"].startswith("# Weekly\n\n| region | total |")
    assert found["artifacts"][1]["text"] == "https://dashboards.example.com/weekly"
    assert dt.datetime.fromisoformat(found["artifacts"][0]["created"]).tzinfo is not None
    assert quiet == (200, {"artifacts": []})
    assert missing[0] == 404 and "No flow run with id 99" in missing[1]["error"]["message"]
    assert refused[0] == 401


def test_orchestrator_show_lists_the_artifacts_and_json_has_them_whole(executed):
    shown = cli(executed, "show", "1")
    as_json = json.loads(cli(executed, "show", "1", "--json"))
    quiet = cli(executed, "show", "2")

    lines = shown.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ARTIFACT"))
    assert lines[header].split() == ["ARTIFACT", "TASK", "CREATED", "TEXT"]
    assert lines[header + 1].split()[:2] == ["markdown", "report-1"]
    assert lines[header + 1].endswith("# Weekly ...")  # the first line of a report
    assert lines[header + 2].split()[:2] == ["link", "report-1"]
    assert lines[header + 2].endswith("https://dashboards.example.com/weekly")
    assert [(a["kind"], a["task_slug"], a["map_index"]) for a in as_json["artifacts"]] == [
        ("markdown", "report-1", None), ("link", "report-1", None)]
    assert as_json["artifacts"][0]["text"].endswith("| north | 10 |")
    assert "ARTIFACT" not in quiet
    assert json.loads(cli(executed, "show", "2", "--json"))["artifacts"] == []
