"""The embedded store: schema, safety rules, queries on indexes, bad databases."""

import os
import sqlite3
import time

import pytest
from conftest import end_run

from orchestrator.store import AttemptLost, Conflict, NotFound, Store, StoreError
from orchestrator.store.db import MIGRATIONS, open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, home):
    """The store on each backend: every contract test runs on both."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    s = Store.open(url=url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(home):
    s = Store.open()
    yield s
    s.close()


@pytest.fixture
def flow_id(store):
    store.create_project("etl")
    record, _ = store.register_flow("etl", "daily", "fp-1", {"type": "Script"},
                                    [{"name": "day"}], ["edge"])
    return record["id"]


def test_a_new_home_gets_a_wal_database_with_foreign_keys(home, sqlite_store):
    store = sqlite_store
    path = home / "orchestrator.db"
    assert path.is_file()
    assert store.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_migrations_run_once_and_reopening_keeps_the_data(home, store, flow_id):
    store.close()
    again = Store.open(url=store.url)
    assert again.get_flow("daily")["id"] == flow_id
    versions = again.db.execute_sql("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v, _ in MIGRATIONS]


def test_creating_a_project_twice_returns_the_existing_one(store):
    first, created = store.create_project("etl")
    second, created_again = store.create_project("etl")
    assert created and not created_again
    assert first["id"] == second["id"]


def test_an_unchanged_flow_keeps_its_version_and_a_changed_one_gets_the_next(store, flow_id):
    same, new = store.register_flow("etl", "daily", "fp-1", {"type": "Script"}, [], [])
    assert (same["id"], same["version"], new) == (flow_id, 1, False)

    changed, new = store.register_flow("etl", "daily", "fp-2", {"type": "Script"}, [], [])
    assert (changed["version"], new) == (2, True)
    assert store.get_flow("daily")["id"] == changed["id"]
    versions = [(f["version"], f["archived"])
                for f in store.list_flows(include_archived=True)]
    assert versions == [(2, False), (1, True)]


def test_registering_into_an_unknown_project_suggests_the_close_name(store, flow_id):
    with pytest.raises(NotFound, match="Did you mean 'etl'"):
        store.register_flow("elt", "daily", "fp", {}, [], [])


def test_an_unknown_flow_name_suggests_a_close_one(store, flow_id):
    with pytest.raises(NotFound, match="No flow named 'dialy'. Did you mean 'daily'"):
        store.get_flow("dialy")


def test_a_flow_name_in_two_projects_must_be_qualified(store, flow_id):
    store.create_project("ml")
    other, _ = store.register_flow("ml", "daily", "fp", {}, [], [])
    with pytest.raises(Conflict, match="several projects"):
        store.get_flow("daily")
    assert store.get_flow("ml/daily")["id"] == other["id"]
    assert store.get_flow("daily", project="etl")["id"] == flow_id


def test_a_run_gets_a_readable_unique_name_and_a_scheduled_event(store, flow_id):
    run = store.create_flow_run(flow_id, {"day": "2024-05-01"})
    assert run["state"] == "Scheduled"
    assert run["name"].endswith(f"-{run['id']}")
    assert run["parameters"] == {"day": "2024-05-01"}
    assert [e["state"] for e in store.state_events(run["id"])] == ["Scheduled"]


def test_an_idempotency_key_gives_one_run_however_often_it_is_used(store, flow_id):
    first = store.create_flow_run(flow_id, idempotency_key="nightly-2024-05-01")
    second = store.create_flow_run(flow_id, idempotency_key="nightly-2024-05-01")
    assert first["id"] == second["id"]
    assert len(store.list_flow_runs()) == 1


def test_one_idempotency_key_sent_by_eight_writers_at_once_makes_one_run(store, flow_id):
    # On PostgreSQL the writers' transactions overlap: all but one find the key
    # taken at their INSERT and must answer with that run, not an error.
    import threading

    from orchestrator.store import Store

    barrier = threading.Barrier(8)
    results, errors = [], []

    def create():
        mine = Store.open(url=store.url)
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
    assert len(store.list_flow_runs()) == 1


def test_an_idempotency_key_of_another_flows_run_is_a_conflict(store, flow_id):
    other, _ = store.register_flow("etl", "weekly", "fp", {}, [], [])
    store.create_flow_run(flow_id, idempotency_key="k")
    with pytest.raises(Conflict, match="another flow"):
        store.create_flow_run(other["id"], idempotency_key="k")


def test_a_terminal_state_is_never_overwritten(store, flow_id):
    run = store.create_flow_run(flow_id)
    attempt = store.start_flow_run(run["id"], os.getpid())
    store.finish_flow_run(run["id"], attempt, "Success", None)
    assert not store.fail_flow_run(run["id"], attempt, "Running", "late heartbeat check")
    with pytest.raises(AttemptLost, match="was ended Success by another process"):
        store.finish_flow_run(run["id"], attempt, "Failed", "again")
    assert store.get_flow_run(run["id"])["state"] == "Success"
    assert [e["state"] for e in store.state_events(run["id"])] == [
        "Scheduled", "Running", "Success"]


def test_a_move_refuses_a_run_in_another_state_than_it_judged(store, flow_id):
    run = store.create_flow_run(flow_id)
    assert not store.fail_flow_run(run["id"], 0, "Submitted", "not what was judged")
    with pytest.raises(AttemptLost):
        store.start_flow_run(run["id"], os.getpid(), attempt=0)  # never claimed
    assert store.get_flow_run(run["id"])["state"] == "Scheduled"


def test_runs_list_newest_first_with_a_cursor(store, flow_id):
    ids = [store.create_flow_run(flow_id)["id"] for _ in range(5)]
    page = store.list_flow_runs(limit=2)
    assert [r["id"] for r in page] == ids[::-1][:2]
    rest = store.list_flow_runs(limit=10, before_id=page[-1]["id"])
    assert [r["id"] for r in rest] == ids[::-1][2:]


def test_runs_filter_by_flow_and_state(store, flow_id):
    other, _ = store.register_flow("etl", "weekly", "fp", {}, [], [])
    a = store.create_flow_run(flow_id)
    store.create_flow_run(other["id"])
    end_run(store, a["id"], "Failed")
    assert [r["id"] for r in store.list_flow_runs(flow_id=flow_id)] == [a["id"]]
    assert [r["id"] for r in store.list_flow_runs(state="Failed")] == [a["id"]]
    assert store.list_flow_runs(state=["Success"]) == []


def test_task_runs_are_upserted_keeping_the_first_start_time(store, flow_id):
    run = store.create_flow_run(flow_id)
    attempt = store.start_flow_run(run["id"], os.getpid())
    store.record_task_runs(run["id"], attempt, [dict(
        task_slug="a-1", task_name="a", map_index=-1, state="Running", run_count=1,
        start_time=100.0)])
    store.record_task_runs(run["id"], attempt, [dict(
        task_slug="a-1", task_name="a", map_index=-1, state="Success", run_count=1,
        start_time=None, end_time=105.0, result_location="/r")])
    (row,) = store.task_runs(run["id"])
    assert (row["state"], row["start_time"], row["end_time"], row["result_location"]) == (
        "Success", 100.0, 105.0, "/r")


def test_logs_are_read_in_order_after_a_cursor_and_by_level(store, flow_id):
    run = store.create_flow_run(flow_id)
    store.write_logs([{"flow_run": run["id"], "time": time.time(), "level": level,
                       "logger": "t", "message": f"m{i}"}
                      for i, level in enumerate([20, 40, 20, 30])])
    rows = store.logs(run["id"])
    assert [r["message"] for r in rows] == ["m0", "m1", "m2", "m3"]
    assert [r["message"] for r in store.logs(run["id"], after_id=rows[1]["id"])] == ["m2", "m3"]
    assert [r["message"] for r in store.logs(run["id"], min_level=30)] == ["m1", "m3"]


def test_secrets_are_set_replaced_listed_by_name_and_deleted(store):
    store.set_secret("DB_PASSWORD", "one")
    store.set_secret("DB_PASSWORD", "two")
    assert store.get_secret("DB_PASSWORD") == "two"
    assert store.secret_names() == ["DB_PASSWORD"]
    store.delete_secret("DB_PASSWORD")
    with pytest.raises(NotFound, match="orchestrator secret set DB_PASSWORD"):
        store.get_secret("DB_PASSWORD")


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


def test_a_database_from_a_newer_version_is_refused(home, sqlite_store):
    sqlite_store.db.execute_sql("INSERT INTO schema_version (version, applied) VALUES (99, 0)")
    sqlite_store.close()
    with pytest.raises(StoreError, match="upgrade orchestrator"):
        Store.open()


# Every query the CLI, agent and scheduler make must use an index, never a scan.
HOT_QUERIES = {
    "runs newest first": lambda s, f: s.list_flow_runs(limit=20),
    "runs of a flow": lambda s, f: s.list_flow_runs(flow_id=f, limit=20),
    "runs in a state": lambda s, f: s.list_flow_runs(state="Scheduled", limit=20),
    "one run": lambda s, f: s.get_flow_run(1),
    "task runs of a run": lambda s, f: s.task_runs(1),
    "logs of a run": lambda s, f: s.logs(1, after_id=0),
    "events of a run": lambda s, f: s.state_events(1),
    "artifacts of a run": lambda s, f: s.artifacts(1),
    "artifacts of a task run": lambda s, f: s.artifacts(1, "report-1", 2),
    "current flow by name": lambda s, f: s.get_flow("daily"),
}


@pytest.mark.parametrize("name", sorted(HOT_QUERIES))
def test_hot_queries_use_an_index(sqlite_store, name):
    store = sqlite_store
    store.create_project("etl")
    flow_id = store.register_flow("etl", "daily", "fp-1", {}, [], [])[0]["id"]
    store.create_flow_run(flow_id)
    plans = []

    def trace(sql):
        if sql.lstrip().upper().startswith("SELECT") and "sqlite_master" not in sql:
            plans.append(sql)

    raw = sqlite3.connect(store.db.database)
    store.db.connection().set_trace_callback(trace)
    try:
        HOT_QUERIES[name](store, flow_id)
    finally:
        store.db.connection().set_trace_callback(None)
    assert plans, "no query was traced"
    for sql in plans:
        detail = " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql))
        # A bare SCAN is only fine as the newest-first walk down the primary
        # key of an unfiltered, limited listing; sorting in a temp B-tree never is.
        ordered_walk = "WHERE" not in sql and 'ORDER BY "t1"."id" DESC LIMIT' in sql
        bad = [part for part in detail.split(" | ")
               if "TEMP B-TREE" in part
               or (part.startswith("SCAN") and "USING" not in part and not ordered_walk)]
        assert not bad, f"{name}: {sql}\n  plan: {detail}"
    raw.close()


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


def test_a_run_id_is_never_given_again_after_its_run_is_deleted(store, flow_id):
    now = time.time()
    kept = store.create_flow_run(flow_id)["id"]
    future = store.create_auto_runs(flow_id, [{"scheduled_start_time": now + 3600 * i}
                                              for i in (1, 2, 3)], now=now)
    assert store.delete_future_auto_runs(flow_id, now) == 3  # what pausing a schedule does
    again = store.create_flow_run(flow_id)["id"]
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
