"""The embedded store: schema, safety rules, queries on indexes, bad databases."""

import contextlib
import itertools
import json
import os
import re
import sqlite3
import time

import pytest
from helpers import end_run

from orchestrator.store import (AttemptLost, Conflict, NotFound, Store, StoreError,
                                build_statements_ahead, statements)
from orchestrator.store.db import MIGRATIONS, migrate, open_database


@pytest.fixture
def sqlite_store(home):
    s = Store.open()
    yield s
    s.close()


@pytest.fixture
def flow_id(any_store):
    any_store.create_project("etl")
    record, _ = any_store.register_flow("etl", "daily", "fp-1", {"type": "Script"},
                                        [{"name": "day"}], ["edge"])
    return record["id"]


def test_a_new_home_gets_a_wal_database_with_foreign_keys(home, sqlite_store):
    store = sqlite_store
    path = home / "orchestrator.db"
    assert path.is_file()
    assert store.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_migrations_run_once_and_reopening_keeps_the_data(home, any_store, flow_id):
    any_store.close()
    again = Store.open(url=any_store.url)
    assert again.get_flow("daily")["id"] == flow_id
    versions = again.db.execute_sql("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v, _ in MIGRATIONS]


def test_creating_a_project_twice_returns_the_existing_one(any_store):
    first, created = any_store.create_project("etl")
    second, created_again = any_store.create_project("etl")
    assert created and not created_again
    assert first["id"] == second["id"]


def test_an_unchanged_flow_keeps_its_version_and_a_changed_one_gets_the_next(any_store, flow_id):
    same, new = any_store.register_flow("etl", "daily", "fp-1", {"type": "Script"}, [], [])
    assert (same["id"], same["version"], new) == (flow_id, 1, False)

    changed, new = any_store.register_flow("etl", "daily", "fp-2", {"type": "Script"}, [], [])
    assert (changed["version"], new) == (2, True)
    assert any_store.get_flow("daily")["id"] == changed["id"]
    versions = [(f["version"], f["archived"])
                for f in any_store.list_flows(include_archived=True)]
    assert versions == [(2, False), (1, True)]


def test_registering_into_an_unknown_project_suggests_the_close_name(any_store, flow_id):
    with pytest.raises(NotFound, match="Did you mean 'etl'"):
        any_store.register_flow("elt", "daily", "fp", {}, [], [])


def test_an_unknown_flow_name_suggests_a_close_one(any_store, flow_id):
    with pytest.raises(NotFound, match="No flow named 'dialy'. Did you mean 'daily'"):
        any_store.get_flow("dialy")


def test_a_flow_name_in_two_projects_must_be_qualified(any_store, flow_id):
    any_store.create_project("ml")
    other, _ = any_store.register_flow("ml", "daily", "fp", {}, [], [])
    with pytest.raises(Conflict, match="several projects"):
        any_store.get_flow("daily")
    assert any_store.get_flow("ml/daily")["id"] == other["id"]
    assert any_store.get_flow("daily", project="etl")["id"] == flow_id


def test_a_run_gets_a_readable_unique_name_and_a_scheduled_event(any_store, flow_id):
    run = any_store.create_flow_run(flow_id, {"day": "2024-05-01"})
    assert run["state"] == "Scheduled"
    assert run["name"].endswith(f"-{run['id']}")
    assert run["parameters"] == {"day": "2024-05-01"}
    assert [e["state"] for e in any_store.state_events(run["id"])] == ["Scheduled"]


def test_an_idempotency_key_gives_one_run_however_often_it_is_used(any_store, flow_id):
    first = any_store.create_flow_run(flow_id, idempotency_key="nightly-2024-05-01")
    second = any_store.create_flow_run(flow_id, idempotency_key="nightly-2024-05-01")
    assert first["id"] == second["id"]
    assert len(any_store.list_flow_runs()) == 1


def test_one_idempotency_key_sent_by_eight_writers_at_once_makes_one_run(any_store, flow_id):
    # On PostgreSQL the writers' transactions overlap: all but one find the key
    # taken at their INSERT and must answer with that run, not an error.
    import threading

    from orchestrator.store import Store

    barrier = threading.Barrier(8)
    results, errors = [], []

    def create():
        mine = Store.open(url=any_store.url)
        try:
            barrier.wait(10)
            results.append(mine.create_flow_run(flow_id, idempotency_key="at-once",
                                                report=True))
        except Exception as exc:  # collected: the assertion below shows them
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len({run["id"] for run, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert len(any_store.list_flow_runs()) == 1


def test_an_idempotency_key_of_another_flows_run_is_a_conflict(any_store, flow_id):
    other, _ = any_store.register_flow("etl", "weekly", "fp", {}, [], [])
    any_store.create_flow_run(flow_id, idempotency_key="k")
    with pytest.raises(Conflict, match="another flow"):
        any_store.create_flow_run(other["id"], idempotency_key="k")


def test_a_terminal_state_is_never_overwritten(any_store, flow_id):
    run = any_store.create_flow_run(flow_id)
    attempt = any_store.start_flow_run(run["id"], os.getpid())
    any_store.finish_flow_run(run["id"], attempt, "Success", None)
    assert not any_store.fail_flow_run(run["id"], attempt, "Running", "late heartbeat check")
    with pytest.raises(AttemptLost, match="was ended Success by another process"):
        any_store.finish_flow_run(run["id"], attempt, "Failed", "again")
    assert any_store.get_flow_run(run["id"])["state"] == "Success"
    assert [e["state"] for e in any_store.state_events(run["id"])] == [
        "Scheduled", "Running", "Success"]


def test_a_move_refuses_a_run_in_another_state_than_it_judged(any_store, flow_id):
    run = any_store.create_flow_run(flow_id)
    assert not any_store.fail_flow_run(run["id"], 0, "Submitted", "not what was judged")
    with pytest.raises(AttemptLost):
        any_store.start_flow_run(run["id"], os.getpid(), attempt=0)  # never claimed
    assert any_store.get_flow_run(run["id"])["state"] == "Scheduled"


def test_runs_list_newest_first_with_a_cursor(any_store, flow_id):
    ids = [any_store.create_flow_run(flow_id)["id"] for _ in range(5)]
    page = any_store.list_flow_runs(limit=2)
    assert [r["id"] for r in page] == ids[::-1][:2]
    rest = any_store.list_flow_runs(limit=10, before_id=page[-1]["id"])
    assert [r["id"] for r in rest] == ids[::-1][2:]


def test_runs_filter_by_flow_and_state(any_store, flow_id):
    other, _ = any_store.register_flow("etl", "weekly", "fp", {}, [], [])
    a = any_store.create_flow_run(flow_id)
    any_store.create_flow_run(other["id"])
    end_run(any_store, a["id"], "Failed")
    assert [r["id"] for r in any_store.list_flow_runs(flow_id=flow_id)] == [a["id"]]
    assert [r["id"] for r in any_store.list_flow_runs(state="Failed")] == [a["id"]]
    assert any_store.list_flow_runs(state=["Success"]) == []


def test_task_runs_are_upserted_keeping_the_first_start_time(any_store, flow_id):
    run = any_store.create_flow_run(flow_id)
    attempt = any_store.start_flow_run(run["id"], os.getpid())
    any_store.record_task_runs(run["id"], attempt, [dict(
        task_slug="a-1", task_name="a", map_index=-1, state="Running", run_count=1,
        start_time=100.0)])
    any_store.record_task_runs(run["id"], attempt, [dict(
        task_slug="a-1", task_name="a", map_index=-1, state="Success", run_count=1,
        start_time=None, end_time=105.0, result_location="/r")])
    (row,) = any_store.task_runs(run["id"])
    assert (row["state"], row["start_time"], row["end_time"], row["result_location"]) == (
        "Success", 100.0, 105.0, "/r")


def test_a_process_that_built_the_statements_ahead_builds_none_on_a_runs_path(
        any_store, flow_id, monkeypatch):
    """What a warm-start process does before it forks: its run processes then
    start, beat, record and finish a run (on SQLite or PostgreSQL) without
    building a query."""
    monkeypatch.setattr(statements, "_TEXTS", {})
    build_statements_ahead()  # this home's database
    statements.build_ahead(any_store.url)  # (the same, or PostgreSQL's)

    def unbuilt(*args):
        raise AssertionError("a statement was built on the run's path")

    monkeypatch.setattr(statements, "_BUILDERS", {
        name: (unbuilt, shaped, shapes)
        for name, (_, shaped, shapes) in statements._BUILDERS.items()})
    run = any_store.create_flow_run(flow_id)
    [(run_id, attempt)] = any_store.claim_runs("agent", [], 1)
    assert any_store.start_flow_run(run_id, os.getpid(), attempt=attempt) == attempt
    assert any_store.get_flow(any_store.get_flow_run(run_id)["flow_id"])["name"] == "daily"
    assert any_store.heartbeat(run_id, attempt) == "Running"
    any_store.confirm_owner(run_id, attempt)
    any_store.record_task_runs(run_id, attempt, [dict(
        task_slug="a-1", task_name="a", map_index=-1, state="Success", run_count=1)])
    any_store.finish_flow_run(run_id, attempt, "Failed", "a task failed")
    assert any_store.get_flow_run(run["id"])["state"] == "Failed"
    assert [t["state"] for t in any_store.task_runs(run_id)] == ["Success"]


def test_a_statement_is_built_once_per_dialect_and_named_once():
    statements.build_ahead("sqlite:////tmp/any.db")
    statements.build_ahead("postgresql://user@host/db")
    kinds = {kind for kind, _, _ in statements._TEXTS}
    assert kinds == {"sqlite", "postgresql"}
    sqlite = statements._TEXTS[("sqlite", "attempt_and_state", None)].sql
    postgres = statements._TEXTS[("postgresql", "attempt_and_state", None)].sql
    assert "?" in sqlite and "%s" in postgres
    with pytest.raises(ValueError, match="'attempt_and_state' is defined twice"):
        statements.statement("attempt_and_state")(lambda run_id: None)


def test_an_agent_reads_the_attempts_of_any_number_of_its_runs(any_store, flow_id):
    runs = [any_store.create_flow_run(flow_id)["id"] for _ in range(120)]
    claimed = dict(any_store.claim_runs("agent", [], 120))
    assert len(claimed) == 120
    attempts = any_store.run_attempts(runs + [10 ** 9])  # (an id that is no run's)
    assert attempts == {run: ("Submitted", claimed[run]) for run in runs}


def test_a_claim_passes_over_a_flow_gone_since_its_runs_were_read(any_store, flow_id):
    # (A flow deleted between the claim's page of due runs and its read of the flow.)
    assert any_store._flow_for_claims(10 ** 9, runs_config=lambda ref: True) == ({}, None, False)
    settings, limit, runs_it = any_store._flow_for_claims(flow_id, runs_config=lambda ref: True)
    assert (settings, limit, runs_it) == ({}, None, True)


def test_a_run_report_is_written_whole_or_not_at_all(any_store, flow_id):
    run_id = any_store.create_flow_run(flow_id)["id"]
    attempt = any_store.start_flow_run(run_id, os.getpid())

    def report(slug, line):
        return dict(tasks=[dict(task_slug=slug, task_name="a", map_index=-1, state="Success",
                                run_count=1)],
                    artifacts=[{"action": "create", "id": f"art-{slug}", "task_slug": slug,
                                "map_index": None, "kind": "markdown", "text": "# t",
                                "time": 1.0}],
                    logs=[(run_id, slug, None, 1.0, 20, "t", line)])

    assert any_store.record_run_report(run_id, attempt, **report("a-1", "kept")) == [1]
    with pytest.raises(AttemptLost):
        any_store.record_run_report(run_id, attempt + 1, **report("b-1", "never"))

    assert [t["task_slug"] for t in any_store.task_runs(run_id)] == ["a-1"]
    assert [a["id"] for a in any_store.artifacts(run_id)] == ["art-a-1"]
    assert [line["message"] for line in any_store.logs(run_id)] == ["kept"]


def test_a_final_state_is_written_with_the_rest_of_the_report_or_neither(any_store, flow_id):
    run_id = any_store.create_flow_run(flow_id)["id"]
    attempt = any_store.start_flow_run(run_id, os.getpid())

    def rest(line):
        return dict(tasks=[dict(task_slug="a-1", task_name="a", map_index=-1, state="Running",
                                run_count=1, start_time=1.0)],
                    logs=[(run_id, "a-1", None, 1.0, 20, "t", line)])

    with pytest.raises(AttemptLost):
        any_store.finish_flow_run(run_id, attempt + 1, "Success", "not mine", **rest("never"))
    assert any_store.task_runs(run_id) == [] and any_store.logs(run_id) == []

    any_store.finish_flow_run(run_id, attempt, "Failed", "a task failed", **rest("kept"))

    assert any_store.get_flow_run(run_id)["state"] == "Failed"
    # The report's task run was written first, then ended with the run.
    (task,) = any_store.task_runs(run_id)
    assert (task["state"], task["start_time"]) == ("Failed", 1.0)
    assert [line["message"] for line in any_store.logs(run_id)] == ["kept"]


def test_logs_are_read_in_order_after_a_cursor_and_by_level(any_store, flow_id):
    run = any_store.create_flow_run(flow_id)
    any_store.write_logs([{"flow_run": run["id"], "time": time.time(), "level": level,
                           "logger": "t", "message": f"m{i}"}
                          for i, level in enumerate([20, 40, 20, 30])])
    rows = any_store.logs(run["id"])
    assert [r["message"] for r in rows] == ["m0", "m1", "m2", "m3"]
    assert [r["message"] for r in any_store.logs(run["id"], after_id=rows[1]["id"])] == ["m2", "m3"]
    assert [r["message"] for r in any_store.logs(run["id"], min_level=30)] == ["m1", "m3"]


def test_secrets_are_set_replaced_listed_by_name_and_deleted(any_store):
    any_store.set_secret("DB_PASSWORD", "one")
    any_store.set_secret("DB_PASSWORD", "two")
    assert any_store.get_secret("DB_PASSWORD") == "two"
    assert any_store.secret_names() == ["DB_PASSWORD"]
    any_store.delete_secret("DB_PASSWORD")
    with pytest.raises(NotFound, match="No secret named 'DB_PASSWORD'") as info:
        any_store.get_secret("DB_PASSWORD")
    # What is missing, for each edge to add its own advice (not a command of the CLI).
    assert (info.value.kind, info.value.name) == ("secret", "DB_PASSWORD")
    assert "orchestrator" not in str(info.value)


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(home):
    path = home / "orchestrator.db"
    path.write_text("these are my notes, not a database\n")
    with pytest.raises(StoreError, match="is not an SQLite database"):
        Store.open()
    assert path.read_text() == "these are my notes, not a database\n"


def test_a_home_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="Cannot create ORCHESTRATOR_HOME"):
        Store.open(home=blocker / "home")


def test_an_unsupported_database_url_names_the_supported_ones(home):
    with pytest.raises(StoreError, match="postgresql://"):
        open_database(url="mysql://x/y")


def test_a_store_opened_ahead_is_checked_once_for_the_next_open(home):
    # A run's process opens the store before its run comes (checking its schema
    # then); the open its run makes takes that check, and any later open checks.
    from orchestrator import service

    store = service.open_store_ahead(connections=1)
    said = []
    store.db.connection().set_trace_callback(said.append)
    try:
        assert Store.open().db is store.db
        assert said == []  # the check made ahead was the next open's
        Store.open()
        assert said == ["SELECT MAX(version) FROM schema_version"]
        said.clear()
        store.db.execute_sql("INSERT INTO schema_version (version, applied) VALUES (99, 0)")
        with pytest.raises(StoreError, match="upgrade orchestrator"):
            Store.open()
    finally:
        store.db.connection().set_trace_callback(None)
        store.forget()


def test_a_database_from_a_newer_version_is_refused(home, sqlite_store):
    sqlite_store.db.execute_sql("INSERT INTO schema_version (version, applied) VALUES (99, 0)")
    sqlite_store.close()
    with pytest.raises(StoreError, match="upgrade orchestrator"):
        Store.open()


# -- every listing reads a page through an index, at any size -----------------------------------
# Tables that grow with every run: a SCAN of one reads it whole, however small the page.
_RUN_TABLES = {"flow_run", "task_run", "state_event", "log", "artifact"}
_ALIAS = re.compile(r'(?:FROM|JOIN)\s+"?(\w+)"?(?:\s+AS\s+"?(\w+)"?)?', re.IGNORECASE)


@contextlib.contextmanager
def _reads(db):
    """The SELECTs a block makes through `db`, as (sql, params)."""
    seen = []
    real = db.execute_sql

    def execute_sql(sql, params=None, *args, **kwargs):
        if sql.lstrip(" (").upper().startswith(("SELECT", "WITH")) \
                and "sqlite_master" not in sql:
            seen.append((sql, tuple(params or ())))
        return real(sql, params, *args, **kwargs)

    db.execute_sql = execute_sql
    try:
        yield seen
    finally:
        del db.execute_sql


def _plan_problems(raw, sql, params):
    """What is wrong with the SQLite plan of one statement: a SCAN of a run table
    (only the newest-first walk down flow_run's primary key of an unfiltered page
    may scan: it stops after LIMIT rows) or a sort in a temporary B-tree."""
    tables = {alias or table: table for table, alias in _ALIAS.findall(sql)}
    newest_walk = " WHERE " not in sql.upper() and re.search(
        r'ORDER BY ("t1"\.)?"?id"? DESC LIMIT', sql) is not None
    detail = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql, params)]
    bad = [part for part in detail if "TEMP B-TREE" in part]
    for part in detail:
        scanned = re.match(r"SCAN (\w+)", part)
        if scanned and tables.get(scanned.group(1), scanned.group(1)) in _RUN_TABLES \
                and not (newest_walk and re.fullmatch(r"SCAN \w+", part)):
            bad.append(part)
    return bad, " | ".join(detail)


@pytest.fixture
def history(sqlite_store):
    """A flow with two versions, runs of each in several states, task runs, state
    events, logs and an artifact, an agent, a limit and a secret: something for
    every listing to find."""
    store = sqlite_store
    store.create_project("etl")
    v1 = store.register_flow("etl", "daily", "fp-1", {}, [], [])[0]["id"]
    v2 = store.register_flow("etl", "daily", "fp-2", {}, [], [])[0]["id"]
    runs = [store.create_flow_run(v1, scheduled_start_time=1000.0)["id"],
            store.create_flow_run(v2, scheduled_start_time=2000.0)["id"],
            store.create_flow_run(v2, scheduled_start_time=3000.0)["id"]]
    end_run(store, runs[0], "Failed", "boom")
    attempt = store.start_flow_run(runs[1], os.getpid())
    store.record_task_runs(runs[1], attempt, [{
        "task_slug": "load-1", "task_name": "load", "map_index": -1, "state": "Running",
        "run_count": 1}], events=[{"task_slug": "load-1", "map_index": -1,
                                   "state": "Running", "time": 2001.0}])
    store.write_logs([(runs[1], "load-1", -1, 2001.0, 20, "task", "loading")])
    store.record_artifacts(runs[1], attempt, [{
        "action": "create", "id": "a" * 32, "task_slug": "load-1", "map_index": -1,
        "kind": "markdown", "text": "# hi", "time": 2002.0}])
    store.register_agent("edge-1", ["edge"], "host", os.getpid())
    store.set_concurrency_limit("edge", 2)
    store.set_concurrency_limit("db", 1, kind="tag")
    store.set_secret("token", "s3cret")
    return {"store": store, "v1": v1, "v2": v2, "runs": runs}


def _listing_cases():
    """list_flow_runs with every combination of the filters the API and the CLI pass."""
    flows = {"any flow": {}, "one version": {"flow_id": "v2"},
             "every version": {"flow_id": "v2", "all_versions": True}}
    states = {"any state": {}, "one state": {"state": ["Running"]},
              "two states": {"state": ["Failed", "Scheduled"]}}
    times = {"any time": {}, "since": {"since": 1500.0}, "until": {"until": 2500.0},
             "since and until": {"since": 1500.0, "until": 3500.0}}
    pages = {"first page": {}, "next page": {"before_id": "runs[2]"}}
    for parts in itertools.product(flows.items(), states.items(), times.items(), pages.items()):
        yield ", ".join(name for name, _ in parts), dict(
            kwargs for _, options in parts for kwargs in options.items())


LISTINGS = dict(_listing_cases())


def _resolve(value, history):
    if value in ("v1", "v2"):
        return history[value]
    if value == "runs[2]":
        return history["runs"][2]
    return value


def _listing(filters):
    return lambda h: h["store"].list_flow_runs(
        limit=20, **{k: _resolve(v, h) for k, v in filters.items()})


STORE_READS = {
    **{f"runs: {name}": _listing(filters) for name, filters in LISTINGS.items()},
    "recent runs of a flow": lambda h: h["store"].flow_run_summary(h["v2"]),
    "flows": lambda h: h["store"].list_flows(),
    "flows of a project": lambda h: h["store"].list_flows(project="etl"),
    "every flow version": lambda h: h["store"].list_flows(include_archived=True),
    "one run": lambda h: h["store"].get_flow_run(h["runs"][1]),
    "task runs of a run": lambda h: h["store"].task_runs(h["runs"][1]),
    "logs of a run": lambda h: h["store"].logs(h["runs"][1], after_id=0),
    "logs of a run, next page, warnings": lambda h: h["store"].logs(
        h["runs"][1], after_id=1, min_level=30),
    "logs of a task run": lambda h: h["store"].logs(h["runs"][1], task_slug="load-1"),
    "events of a run": lambda h: h["store"].state_events(h["runs"][1]),
    "artifacts of a run": lambda h: h["store"].artifacts(h["runs"][1]),
    "artifacts of a task run": lambda h: h["store"].artifacts(h["runs"][1], "load-1", None),
    "current flow by name": lambda h: h["store"].get_flow("daily"),
    "active runs": lambda h: h["store"].active_runs(),
}

# Every GET the web page and REST clients make, with each filter of /api/flow_runs.
API_READS = [
    "/api/flows", "/api/flows?archived=true", "/api/flows?project=etl", "/api/flows/{v2}",
    "/api/flow_runs?limit=50",
    "/api/flow_runs?limit=50&cursor={run}",
    "/api/flow_runs?flow=etl/daily&limit=50",
    "/api/flow_runs?flow=etl/daily&cursor={run}",
    "/api/flow_runs?state=Failed",
    "/api/flow_runs?state=Failed&state=Scheduled",
    "/api/flow_runs?state=Failed,Cancelled&cursor={run}",
    "/api/flow_runs?flow=etl/daily&state=Running",
    "/api/flow_runs?flow=etl/daily&state=Running&state=Failed&cursor={run}",
    "/api/flow_runs?since=1970-01-01T00:25:00Z",
    "/api/flow_runs?until=1970-01-01T00:45:00Z",
    "/api/flow_runs?since=1970-01-01T00:25:00Z&until=1970-01-01T01:00:00Z&cursor={run}",
    "/api/flow_runs?flow=etl/daily&since=1970-01-01T00:25:00Z",
    "/api/flow_runs?state=Scheduled&since=1970-01-01T00:25:00Z&until=1970-01-01T01:00:00Z",
    ("/api/flow_runs?flow=etl/daily&state=Failed&state=Running&since=1970-01-01T00:25:00Z"
     "&until=1970-01-01T01:00:00Z&cursor={run}"),
    "/api/flow_runs/{run}", "/api/flow_runs/{run}/task_runs", "/api/flow_runs/{run}/states",
    "/api/flow_runs/{run}/artifacts", "/api/flow_runs/{run}/explain",
    "/api/flow_runs/{run}/logs?cursor=0&level=DEBUG",
    "/api/flow_runs/{run}/logs?cursor=0&level=INFO&task=load-1",
    "/api/agents", "/api/concurrency_limits", "/api/secrets",
]

# Every listing of the CLI.
CLI_READS = [
    ["flows"], ["flows", "--all"], ["flows", "-p", "etl"], ["runs"], ["runs", "--flow", "daily"],
    ["runs", "--state", "Failed"], ["runs", "--state", "Failed", "--state", "Running"],
    ["runs", "--flow", "daily", "--state", "Running", "--state", "Scheduled"],
    ["agents"], ["show", "{run}"], ["logs", "{run}"], ["logs", "{run}", "--level", "WARNING"],
    ["explain", "{run}"], ["secret", "list"], ["concurrency", "list"],
]


def _assert_indexed(store, reads, name):
    assert reads, f"{name}: no query was traced"
    raw = sqlite3.connect(store.db.database)
    try:
        for sql, params in reads:
            bad, detail = _plan_problems(raw, sql, params)
            assert not bad, f"{name}: {sql}\n  params: {params}\n  plan: {detail}"
    finally:
        raw.close()


@pytest.mark.parametrize("name", sorted(STORE_READS))
def test_every_store_listing_reads_a_page_through_an_index(history, name):
    store = history["store"]
    with _reads(store.db) as reads:
        STORE_READS[name](history)
    _assert_indexed(store, reads, name)


@pytest.mark.parametrize("path", API_READS)
def test_every_get_of_the_api_and_the_web_page_reads_through_an_index(history, path):
    from falcon import testing

    from orchestrator.api import create_app

    store = history["store"]
    client = testing.TestClient(create_app(store, token="t"),
                                headers={"Authorization": "Bearer t"})
    path = path.format(run=history["runs"][1], v2=history["v2"])
    with _reads(store.db) as reads:
        result = client.simulate_get(path)
    assert result.status_code == 200, result.text
    _assert_indexed(store, reads, path)


@pytest.mark.parametrize("args", CLI_READS, ids=" ".join)
def test_every_cli_listing_reads_through_an_index(history, args):
    from click.testing import CliRunner

    from orchestrator.cli import main

    store = history["store"]
    args = [a.format(run=history["runs"][1]) for a in args]
    with _reads(store.db) as reads:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _assert_indexed(store, reads, " ".join(args))


def test_a_database_made_at_schema_version_1_is_upgraded_to_the_current_schema(home):
    """Migrations bring an old database to the schema a new one gets."""
    import peewee as pw

    from orchestrator.store import models

    path = home / "orchestrator.db"
    old = pw.SqliteDatabase(str(path))
    with old.bind_ctx(models.INITIAL_MODELS):
        old.create_tables(models.INITIAL_MODELS)
        models.SchemaVersion.create(version=1, applied=0)
    old.execute_sql("DROP INDEX flow_run_flow_id_auto_scheduled_state_scheduled_start_time")
    old.execute_sql("DROP INDEX flow_archived_schedule_active")
    old.execute_sql('ALTER TABLE "flow" DROP COLUMN "schedule_active"')
    old.execute_sql('ALTER TABLE "flow_run" DROP COLUMN "restarts"')
    old.execute_sql('ALTER TABLE "flow_run" DROP COLUMN "attempt"')
    # Some history, which the upgrade must keep (a table rebuilt with foreign keys
    # on would have taken every run with it).
    for sql in ("INSERT INTO project (name, created) VALUES ('p', 0)",
                "INSERT INTO flow (project_id, name, version, fingerprint, storage, "
                "parameters, labels, settings, archived, created) "
                "VALUES (1, 'f', 1, 'x', '{}', '[]', '[]', '{}', 0, 0)",
                "INSERT INTO flow_run (flow_id, name, parameters, labels, state, "
                "scheduled_start_time, auto_scheduled, created, updated) "
                "VALUES (1, 'r', '{}', '[]', 'Success', 0, 0, 0, 0)",
                "INSERT INTO task_run (flow_run_id, task_slug, task_name, map_index, state, "
                "run_count) VALUES (1, 'a', 'a', -1, 'Success', 1)",
                "INSERT INTO state_event (flow_run_id, state, time) VALUES (1, 'Success', 0)",
                "INSERT INTO log (flow_run_id, time, level, logger, message) "
                "VALUES (1, 0, 20, 'x', 'hello')"):
        old.execute_sql(sql)
    old.close()

    store = Store.open()
    upgraded = {t: {c.name for c in store.db.get_columns(t)} for t in store.db.get_tables()}
    fresh = Store.open(home=home / "fresh")
    expected = {t: {c.name for c in fresh.db.get_columns(t)} for t in fresh.db.get_tables()}
    assert upgraded == expected
    assert [store.db.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in
            ("flow", "flow_run", "task_run", "state_event", "log")] == [1, 1, 1, 1, 1]
    run = store.get_flow_run(1)
    assert (run["state"], run["restarts"], run["attempt"]) == ("Success", 0, 0)
    assert store.db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_run_id_is_never_given_again_after_its_run_is_deleted(any_store, flow_id):
    now = time.time()
    kept = any_store.create_flow_run(flow_id)["id"]
    future = any_store.create_auto_runs(flow_id, [{"scheduled_start_time": now + 3600 * i}
                                                  for i in (1, 2, 3)], now=now)
    assert any_store.delete_future_auto_runs(flow_id, now) == 3  # what pausing a schedule does
    again = any_store.create_flow_run(flow_id)["id"]
    assert again > max(future) > kept


def test_an_older_database_gets_run_ids_that_are_never_reused(home, sqlite_store):
    """Migration 6 rebuilds flow_run with AUTOINCREMENT, keeping every row."""
    store = sqlite_store
    store.create_project("etl")
    flow_id = store.register_flow("etl", "daily", "fp-1", {}, [], [])[0]["id"]
    first, second = (store.create_flow_run(flow_id)["id"] for _ in range(2))
    attempt = store.start_flow_run(first, os.getpid())
    store.record_task_runs(first, attempt, [dict(task_slug="a-1", task_name="a",
                                                 map_index=-1, state="Running", run_count=1)])
    raw = sqlite3.connect(home / "orchestrator.db")  # back to schema 5: no AUTOINCREMENT
    (sql,) = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'flow_run'").fetchone()
    indexes = [s for s, in raw.execute("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                       "AND tbl_name = 'flow_run' AND sql IS NOT NULL")]
    raw.executescript(
        "PRAGMA foreign_keys = 0; BEGIN;"
        + sql.replace(" AUTOINCREMENT", "").replace('"flow_run"', '"old_run"', 1) + ";"
        "INSERT INTO old_run SELECT * FROM flow_run; DROP TABLE flow_run;"
        "ALTER TABLE old_run RENAME TO flow_run;" + ";".join(indexes) + ";"
        "DELETE FROM schema_version WHERE version >= 6; COMMIT;")
    assert "AUTOINCREMENT" not in raw.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'flow_run'").fetchone()[0]
    raw.close()

    again = Store.open()
    assert "AUTOINCREMENT" in again.db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE name = 'flow_run'").fetchone()[0]
    assert [r["id"] for r in again.list_flow_runs()] == [second, first]
    assert [t["task_slug"] for t in again.task_runs(first)] == ["a-1"]
    again.db.execute_sql("DELETE FROM flow_run WHERE id = ?", (second,))  # the newest goes
    assert again.create_flow_run(flow_id)["id"] > second  # and its id is not given again
    assert again.db.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert again.db.execute_sql("PRAGMA foreign_key_check").fetchall() == []


def test_only_the_lifecycle_module_writes_a_runs_state():
    """Every move of a run's state lives in store/lifecycle.py (one function each)."""
    import ast
    from pathlib import Path

    import orchestrator

    package = Path(orchestrator.__file__).parent
    writers = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "update" \
                    and ast.unparse(node.func.value).endswith("FlowRun"):
                keys = {k.arg for k in node.keywords if k.arg} | {
                    ast.unparse(k) for a in node.args if isinstance(a, ast.Dict)
                    for k in a.keys if k is not None}
                if "state" in keys or any(k.endswith(".state") for k in keys) or any(
                        k.arg is None for k in node.keywords):
                    writers.add(path.relative_to(package).as_posix())
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and "update flow_run" in node.value.lower() \
                    and "state" in node.value.lower():
                writers.add(path.relative_to(package).as_posix())
    assert writers == {"store/lifecycle.py"}


def test_an_outage_is_said_once_a_minute_and_its_end_once(log_records):
    import logging

    from orchestrator.store import DiskFull, OutageLog

    probes = []

    def probe():
        probes.append(1)
        if len(probes) == 1:
            raise DiskFull("still full")

    outage = OutageLog(logging.getLogger("orchestrator.test"), probe=probe)
    full = DiskFull("The disk that holds /x is full (0 bytes free)")
    for second in range(0, 130, 2):  # a disk that flaps: a failure every 2 s
        outage.failed("The agent", full, now=100.0 + second)
        outage.ok(now=101.0 + second)
    outage.ok(now=240.0)  # quiet for 12 s: the probe still fails
    outage.ok(now=241.0)  # the probe works: it is over
    outage.ok(now=300.0)
    said = log_records.messages("orchestrator.test")
    assert [m.split(":")[0] for m in said] == ["The agent cannot write to the store"] * 3 + [
        "The store can be written again (it could not be for 128 s)."]
    assert all("0 bytes free" in m for m in said[:3])


def test_migration_10_indexes_the_listings_and_drops_the_prefix_indexes(any_store, home):
    """On both databases: a database at schema 9 gets the listing indexes and
    loses the foreign-key indexes that repeat the start of a composite one; rows
    are kept."""
    any_store.create_project("etl")
    flow_id = any_store.register_flow("etl", "daily", "fp-1", {}, [], [])[0]["id"]
    run_id = any_store.create_flow_run(flow_id)["id"]

    def index_names():
        return {i.name for table in ("flow_run", "state_event", "log", "artifact")
                for i in any_store.db.get_indexes(table)}

    fresh = index_names()
    with any_store.db.atomic():  # back to schema 9
        for name in ("flow_run_flow_id_state_id", "flow_run_scheduled_start_time_id",
                     "flow_run_flow_id_scheduled_start_time_id"):
            any_store.db.execute_sql(f'DROP INDEX "{name}"')
        for table, column in (("flow_run", "flow_id"), ("state_event", "flow_run_id"),
                              ("log", "flow_run_id"), ("artifact", "flow_run_id")):
            any_store.db.execute_sql(f'CREATE INDEX "{table}_{column}" ON "{table}" ("{column}")')
        any_store.db.execute_sql("DELETE FROM schema_version WHERE version >= 10")
    assert "log_flow_run_id" in index_names()

    migrate(any_store.db)
    assert index_names() == fresh
    assert {"flow_run_flow_id_state_id", "flow_run_scheduled_start_time_id",
            "flow_run_flow_id_scheduled_start_time_id"} <= fresh
    assert not fresh & {"flow_run_flow_id", "state_event_flow_run_id", "log_flow_run_id",
                        "artifact_flow_run_id"}
    assert [r["id"] for r in any_store.list_flow_runs(flow_id=flow_id)] == [run_id]


def _all_pages(store, limit=7, **filters):
    rows, before = [], None
    while True:
        page = store.list_flow_runs(limit=limit, before_id=before, **filters)
        rows += page
        if len(page) < limit:
            return rows
        before = page[-1]["id"]


def test_every_listing_filter_finds_exactly_its_runs_page_by_page(any_store):
    """On both databases: each combination of filters lists exactly the runs a
    plain filter of every run keeps, newest first (latest scheduled first with a
    time range), each once across its pages."""
    any_store.create_project("etl")
    v1 = any_store.register_flow("etl", "daily", "fp-1", {}, [], [])[0]["id"]
    v2 = any_store.register_flow("etl", "daily", "fp-2", {}, [], [])[0]["id"]
    other = any_store.register_flow("etl", "other", "fp-1", {}, [], [])[0]["id"]
    for i in range(36):
        # Scheduled times out of id order, with ties: the time order is its own.
        run_id = any_store.create_flow_run((v1, v2, other)[i % 3],
                                           scheduled_start_time=1000.0 + (i * 7) % 12 * 10)["id"]
        if i % 4:
            end_run(any_store, run_id, ("Success", "Failed", "Cancelled")[i % 4 - 1])
    every = [any_store.get_flow_run(r["id"]) for r in _all_pages(any_store, limit=100)]
    assert len(every) == 36
    flows = {"any": ({}, None), "one version": ({"flow_id": v2}, {v2}),
             "every version": ({"flow_id": v2, "all_versions": True}, {v1, v2})}
    states = {"any": None, "one": ["Failed"], "two": ["Failed", "Scheduled"]}
    times = {"any": (None, None), "since": (1040.0, None), "until": (None, 1080.0),
             "both": (1030.0, 1090.0)}
    for (flow_name, (flow_filter, flow_ids)), (state_name, wanted), (time_name, (since, until)) \
            in itertools.product(flows.items(), states.items(), times.items()):
        kept = [r for r in every
                if (flow_ids is None or r["flow_id"] in flow_ids)
                and (wanted is None or r["state"] in wanted)
                and (since is None or r["scheduled_start_time"] >= since)
                and (until is None or r["scheduled_start_time"] < until)]
        if since is not None or until is not None:
            kept.sort(key=lambda r: (r["scheduled_start_time"], r["id"]), reverse=True)
        listed = _all_pages(any_store, **flow_filter, state=wanted, since=since, until=until)
        assert [r["id"] for r in listed] == [r["id"] for r in kept], \
            f"flow {flow_name}, state {state_name}, time {time_name}"
    summary = any_store.flow_run_summary(v2)
    assert summary["recent_runs"] == [(r["id"], r["state"]) for r in every
                                      if r["flow_id"] in (v1, v2)][:10]
    assert summary["next_run"] == min(r["scheduled_start_time"] for r in every if r["flow_id"]
                                      in (v1, v2) and r["state"] == "Scheduled")
    assert [r["id"] for r in any_store.active_runs(states=("Failed", "Cancelled"))] == sorted(
        r["id"] for r in every if r["state"] in ("Failed", "Cancelled"))


def test_a_time_ordered_page_cannot_continue_after_a_deleted_run(sqlite_store):
    store = sqlite_store
    store.create_project("etl")
    flow_id = store.register_flow("etl", "daily", "fp-1", {}, [], [])[0]["id"]
    run_id = store.create_flow_run(flow_id, scheduled_start_time=1000.0)["id"]
    store.db.execute_sql("DELETE FROM flow_run WHERE id = ?", (run_id,))
    with pytest.raises(NotFound, match=f"Run {run_id}, after which this page was to continue"):
        store.list_flow_runs(since=0.0, before_id=run_id)


def _rows_read(node, table):
    """Rows a PostgreSQL plan (EXPLAIN ANALYZE, JSON) read from `table`: those its
    scans returned and those they read and filtered out."""
    read = 0
    if node.get("Relation Name") == table:
        read += (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                 + node.get("Rows Removed by Index Recheck", 0)) * node.get("Actual Loops", 1)
    return read + sum(_rows_read(child, table) for child in node.get("Plans", ()))


def _seed_runs_on_postgresql(store, versions, first, last):
    store.db.execute_sql(
        "INSERT INTO flow_run (flow_id, name, parameters, labels, state, "
        "scheduled_start_time, auto_scheduled, restarts, attempt, created, updated) "
        "SELECT CASE WHEN mod(i, 3) = 0 THEN %s ELSE %s END, 'r' || i, '{}', '[]', "
        "(ARRAY['Success', 'Success', 'Success', 'Failed', 'Cancelled'])[mod(i, 5) + 1], "
        "1000 + i * 60, mod(i, 2) = 0, 0, 1, 0, 0 FROM generate_series(%s, %s) AS i",
        (*versions, first, last))
    store.db.execute_sql("ANALYZE flow_run")


def _postgresql_reads(store, v2, size):
    """{listing: rows of flow_run its statements read}, with the cursor and the
    time windows half-way down `size` runs."""
    last = store.list_flow_runs(limit=1)[0]["id"]
    middle = 1000 + size // 2 * 60
    reads_by_listing = {}
    for name, kwargs in LISTINGS.items():
        kwargs = {k: (v2 if v == "v2" else last - size // 2 if v == "runs[2]" else v)
                  for k, v in kwargs.items()}
        kwargs.update({k: middle + (v - 1500) * 600 for k, v in kwargs.items()
                       if k in ("since", "until")})
        with _reads(store.db) as reads:
            store.list_flow_runs(limit=20, **kwargs)
        read = 0
        for sql, params in reads:
            (plan,), = store.db.execute_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchall()
            plan = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
            assert "Seq Scan on flow_run" not in json.dumps(plan), f"{name}: {sql}"
            read += _rows_read(plan, "flow_run")
        reads_by_listing[name] = read
    return reads_by_listing


def test_listings_on_postgresql_read_as_many_rows_at_any_size(postgres_url, home):
    """PostgreSQL, with statistics, for every filter combination: flow_run is read
    through indexes, never scanned whole, and 4 times the runs read no more of
    its rows. (PostgreSQL picks its plans by cost: for a common state it may
    walk a broader index and filter, which reads a few pages per page.)"""
    store = Store.open(url=postgres_url)
    try:
        store.create_project("etl")
        versions = [store.register_flow("etl", "daily", f"fp-{i}", {}, [], [])[0]["id"]
                    for i in (1, 2)]
        _seed_runs_on_postgresql(store, versions, 1, 5000)
        small = _postgresql_reads(store, versions[1], 5000)
        _seed_runs_on_postgresql(store, versions, 5001, 20000)
        large = _postgresql_reads(store, versions[1], 20000)
        grown = {name: (small[name], large[name]) for name in LISTINGS
                 if large[name] > 1.3 * small[name] + 20}
        assert not grown, f"rows of flow_run read at 5,000 and at 20,000 runs: {grown}"
        assert max(large.values()) < 500
    finally:
        store.close()
