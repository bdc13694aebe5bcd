"""The store: every read and write the rest of the package makes, with plain
values in and out (dicts with UTC-epoch floats for times).

    store = Store.open()            # $ORCHESTRATOR_HOME/orchestrator.db
    project, _ = store.create_project("etl")
    run = store.create_flow_run(flow_id, parameters={"day": "2024-05-01"})

Writers take short IMMEDIATE transactions. A run's state changes only in
lifecycle.py, by compare-and-set on its attempt. A database error that means
a full disk comes out as `DiskFull` (a StoreUnavailable), never as the
driver's error.
"""

import functools
import hashlib
import itertools
import json
import re
import time

import peewee as pw

from ..core import lateness
from ..core.states import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, StateName
from ..exceptions import OrchestratorError
from . import doorbell
from . import models as m
from . import statements
from .db import (close_database, connection_room, database_url, open_database,
                 release_connection, unavailable_error)
from .errors import Conflict, NotFound, StoreError
from .identity import host_identity, new_id
from .lifecycle import RunLifecycle
from .scheduling import SchedulingQueries, default_run_name
from .statements import statement

_DIGITS = re.compile(r"[0-9]{1,30}")
TERMINAL_STATES = TERMINAL_RUN_STATES

_RUN_FIELDS = (
    m.FlowRun.id, m.FlowRun.name, m.FlowRun.flow, m.FlowRun.parameters,
    m.FlowRun.labels, m.FlowRun.state, m.FlowRun.message,
    m.FlowRun.scheduled_start_time, m.FlowRun.start_time, m.FlowRun.end_time,
    m.FlowRun.heartbeat, m.FlowRun.agent, m.FlowRun.pid, m.FlowRun.host_id,
    m.FlowRun.process_id, m.FlowRun.idempotency_key,
    m.FlowRun.auto_scheduled, m.FlowRun.restarts, m.FlowRun.attempt, m.FlowRun.created,
    m.FlowRun.updated,
    m.Flow.name.alias("flow_name"), m.Flow.version.alias("flow_version"),
    m.Project.name.alias("project"),
)


_RUN_KEYS = tuple(getattr(f, "_alias", None) or f.name for f in _RUN_FIELDS)
_FLOW_COLUMNS = ("id", "project_id", "name", "version", "fingerprint", "storage", "run_config",
                 "schedule", "parameters", "labels", "settings", "archived",
                 "schedule_active", "created")
_FLOW_JSON = ("storage", "run_config", "schedule", "parameters", "labels", "settings")


def build_statements_ahead(home=None):
    """Build the SQL text of the store's hot statements for the database of
    `home` (no connection is made): a process that forks run processes does it
    once, before forking, so that they do not each build them."""
    statements.build_ahead(database_url(home))


def _runs():
    return (m.FlowRun.select(*_RUN_FIELDS)
            .join(m.Flow, on=(m.FlowRun.flow == m.Flow.id))
            .join(m.Project, on=(m.Flow.project == m.Project.id)))


@statement("run_by_id")
def _run_by_id(run_id):
    return _runs().where(m.FlowRun.id == run_id)


@statement("run_and_flow")
def _run_and_flow(run_id):
    return _runs().select_extend(*[getattr(m.Flow, c) for c in _FLOW_COLUMNS]).where(
        m.FlowRun.id == run_id)


@statement("run_by_key")
def _run_by_key(key):
    return (m.FlowRun.select(m.FlowRun.id, m.FlowRun.flow, m.FlowRun.parameters)
            .where(m.FlowRun.idempotency_key == key))


def _flows():
    return (m.Flow.select(*[getattr(m.Flow, c) for c in _FLOW_COLUMNS], m.Project.name)
            .join(m.Project))


@statement("current_flow")
def _current_flow(project, name):
    return _flows().where((m.Project.name == project) & (m.Flow.name == name)
                          & (m.Flow.archived == False))  # noqa: E712


@statement("flow_by_id")
def _flow_by_id(flow_id):
    return _flows().where(m.Flow.id == flow_id)


@statement("run_attempts", shaped=True)  # shape: how many runs
def _run_attempts(count, run_ids):
    return m.FlowRun.select(m.FlowRun.id, m.FlowRun.state, m.FlowRun.attempt).where(
        m.FlowRun.id.in_(run_ids[:count]))


@statement("limits_of_kind")
def _limits_of_kind(kind):
    return m.ConcurrencyLimit.select(m.ConcurrencyLimit.label, m.ConcurrencyLimit.limit).where(
        m.ConcurrencyLimit.kind == kind)


def _run_row(row):
    row["flow_id"] = row.pop("flow")
    for key in ("parameters", "labels"):
        if key in row:
            row[key] = m.from_json(row[key])
    row["auto_scheduled"] = bool(row["auto_scheduled"])
    return row


class Store(RunLifecycle, SchedulingQueries):
    """Facade over the database. Create one per process with `Store.open()`."""

    def __init__(self, db, url=None):
        self.db = db
        self.url = url
        self._returning = isinstance(db, pw.PostgresqlDatabase)

    @classmethod
    def open(cls, home=None, url=None, connections=None, private=False, ahead=False):
        """The store at `url`, or ORCHESTRATOR_DATABASE_URL, or SQLite in `home`.
        On PostgreSQL, `connections` caps the process's pool (a run process: 1).
        `private`: no other process opens it; `ahead`: opened before it is needed,
        and checked for the next open (see open_database)."""
        url = url or database_url(home)
        return cls(open_database(home=home, url=url, connections=connections,
                                 private=private, ahead=ahead), url)

    def close(self):
        """Close this thread's connection, unless a transaction is open on it
        (the database object is shared by every Store of the process)."""
        if not self.db.is_closed() and not self.db.in_transaction():
            self.db.close()

    def forget(self):
        """Close this process's connection to the store's database and forget the
        database: a later `Store.open` of its URL connects anew."""
        close_database(self.url)

    def atomic(self):
        return self.db.atomic()

    def doorbell(self):
        """A listener for the doorbell that rings when runs may be due
        (store/doorbell.py); close it when done."""
        return doorbell.Listener(self.db)

    def probe_write(self):
        """One small write (it changes nothing): raises DiskFull while the
        database cannot be written."""
        with self.db.atomic():
            m.SchemaVersion.update(applied=m.SchemaVersion.applied).where(
                m.SchemaVersion.version == m.SchemaVersion.select(
                    pw.fn.MAX(m.SchemaVersion.version))).execute()

    def connection_room(self):
        """PostgreSQL's connections: {"max", "reserved", "in_use"}; None on
        SQLite, where connections cost nothing."""
        return connection_room(self.db)

    # -- projects -------------------------------------------------------------
    def create_project(self, name):
        """(project, created): an existing project is returned as it is."""
        name = _check_name(name, "project")
        with self.db.atomic():
            row = m.Project.get_or_none(m.Project.name == name)
            if row is not None:
                return _project(row), False
            row = m.Project.create(name=name, created=time.time())
        return _project(row), True

    def get_project(self, name):
        row = m.Project.get_or_none(m.Project.name == name)
        if row is None:
            known = [p.name for p in m.Project.select(m.Project.name)]
            raise NotFound.named("project", name, known)
        return _project(row)

    def list_projects(self):
        return [_project(p) for p in m.Project.select().order_by(m.Project.name)]

    # -- flows ----------------------------------------------------------------
    def register_flow(self, project, name, fingerprint, storage, parameters, labels,
                      run_config=None, schedule=None, settings=None, version=None):
        """Record a flow; returns (flow, is_new_version).

        An unchanged flow (same fingerprint: the caller's digest of everything
        that identifies a registration) keeps its version; a changed one
        becomes version N+1 and the older ones are archived. `version` forces
        the number (the caller wrote the flow's storage for it first).
        """
        project_row = m.Project.get_or_none(m.Project.name == project)
        if project_row is None:
            raise NotFound.named("project", project,
                                 [p.name for p in m.Project.select(m.Project.name)])
        with self.db.atomic():
            latest = (m.Flow.select()
                      .where((m.Flow.project == project_row) & (m.Flow.name == name))
                      .order_by(m.Flow.version.desc()).first())
            if latest is not None and not latest.archived and latest.fingerprint == fingerprint:
                return self._flow(latest, project_row.name), False
            number = version if version is not None else (latest.version + 1 if latest else 1)
            # A paused schedule stays paused when the flow is registered again.
            schedule_active = latest.schedule_active if latest is not None else True
            (m.Flow.update(archived=True)
             .where((m.Flow.project == project_row) & (m.Flow.name == name)
                    & (m.Flow.archived == False))  # noqa: E712
             .execute())
            row = m.Flow.create(
                project=project_row, name=name, version=number, fingerprint=fingerprint,
                storage=storage, run_config=run_config, schedule=schedule,
                parameters=parameters, labels=sorted(set(labels)),
                settings=settings or {}, schedule_active=schedule_active,
                created=time.time())
            if schedule is None and latest is not None and latest.schedule is not None:
                # The new version has no schedule: its old future runs go too.
                self.delete_future_auto_runs(row.id, time.time())
        return self._flow(row, project_row.name), True

    def next_flow_version(self, project, name):
        """The version number the next changed registration of a flow would get."""
        latest = (m.Flow.select(pw.fn.MAX(m.Flow.version)).join(m.Project)
                  .where((m.Project.name == project) & (m.Flow.name == name)).scalar())
        return (latest or 0) + 1

    def get_flow(self, ref, project=None):
        """The current version of a flow by id, 'project/name', or name."""
        if isinstance(ref, int) or (isinstance(ref, str) and _DIGITS.fullmatch(ref)):
            if not 0 < int(ref) < 2 ** 63:
                raise NotFound(f"No flow with id {ref}", kind="flow", name=ref)
            found = statements.execute(self.db, "flow_by_id", int(ref)).fetchone()
            if found is None:
                raise NotFound(f"No flow with id {ref}", kind="flow", name=ref)
            return self._flow_from_tuple(found)
        if project is None and "/" in ref:
            project, ref = ref.split("/", 1)
        if project is not None:
            # The API's hot path (every run created by name): one prepared query.
            found = statements.execute(self.db, "current_flow", project, ref).fetchone()
            if found is not None:
                return self._flow_from_tuple(found)
        query = m.Flow.select(m.Flow, m.Project).join(m.Project).where(
            (m.Flow.name == ref) & (m.Flow.archived == False))  # noqa: E712
        if project is not None:
            self.get_project(project)
            query = query.where(m.Project.name == project)
        rows = list(query)
        if not rows:
            known = [f.name for f in m.Flow.select(m.Flow.name)
                     .where(m.Flow.archived == False).distinct()]  # noqa: E712
            raise NotFound.named("flow", ref, known)
        if len(rows) > 1:
            projects = ", ".join(sorted(r.project.name for r in rows))
            raise Conflict(
                f"Flow {ref!r} exists in several projects ({projects}); name one with "
                f"-p PROJECT or as PROJECT/{ref}")
        return self._flow(rows[0], rows[0].project.name)

    def list_flows(self, project=None, include_archived=False):
        """Flows by project and name, newest version first. Sorted here, not by
        the database: no index has that mixed order, and flows are few (they grow
        with registrations, never with runs)."""
        query = m.Flow.select(m.Flow, m.Project).join(m.Project)
        if project is not None:
            query = query.where(m.Project.name == project)
        if not include_archived:
            query = query.where(m.Flow.archived == False)  # noqa: E712
        flows = [self._flow(row, row.project.name) for row in query]
        flows.sort(key=lambda f: (f["project"], f["name"], -f["version"]))
        return flows

    @staticmethod
    def _flow_from_tuple(values):
        flow = dict(zip(_FLOW_COLUMNS, values))
        for key in _FLOW_JSON:
            flow[key] = m.from_json(flow[key])
        flow.pop("project_id")
        flow["project"] = values[-1]
        flow["archived"] = bool(flow["archived"])
        flow["schedule_active"] = bool(flow["schedule_active"])
        return flow

    @staticmethod
    def _flow(row, project_name):
        return {
            "id": row.id, "project": project_name, "name": row.name,
            "version": row.version, "fingerprint": row.fingerprint,
            "storage": row.storage, "run_config": row.run_config,
            "schedule": row.schedule, "parameters": row.parameters,
            "labels": row.labels, "settings": row.settings,
            "schedule_active": row.schedule_active,
            "archived": row.archived, "created": row.created,
        }

    def flow_run_summary(self, flow_id, recent=10):
        """Of every version of a flow: its last `recent` runs as (id, state), newest
        first, and the earliest start time of its Scheduled runs (or None).

        The web page polls this for every flow: each version's newest runs are
        read off the (flow, id) index and merged, and the next start off the
        (flow, auto_scheduled, state, time) index, so it costs the same at any
        number of runs (`flow_id IN (versions) ORDER BY id` sorted them all)."""
        versions = self._version_ids(flow_id)
        p = self.db.param
        runs = [(run_id, state) for run_id, state in self._merged(
            [(f"flow_id = {p}", [v]) for v in versions], ("id",), recent, extra=("state",))]
        first = self._merged(
            [(f"flow_id = {p} AND auto_scheduled = {p} AND state = {p}",
              [v, auto, StateName.SCHEDULED])
             for v in versions for auto in (False, True)],
            ("scheduled_start_time",), 1, descending=False)
        return {"recent_runs": runs, "next_run": first[0][0] if first else None}

    def _version_ids(self, flow_id):
        return [version for version, in self._group_ids(flow_id).tuples()]

    # A compound SELECT of more arms than this is split (SQLite allows 500 terms).
    _ARMS_PER_STATEMENT = 100

    def _merged(self, arms, key, limit=None, descending=True, extra=()):
        """The first `limit` rows (all, with None) of flow_run in `key` order among
        the rows every arm selects, as tuples (key columns, then `extra`).

        Each arm is (condition, params): equalities on a prefix of an index whose
        next columns are `key`, plus at most a range on them. Each arm is then a
        walk down one index in `key` order, and the database merges the walks
        (SQLite: MERGE (UNION ALL); PostgreSQL: each arm cut at `limit`, then a
        Merge Append or a top-N sort of those), stopping after `limit` rows: a
        page costs about `limit` + arms index reads however many runs there are,
        and no sort of them all.
        """
        direction = " DESC" if descending else ""
        columns = ", ".join(key + tuple(extra))
        order = ", ".join(f"{i}{direction}" for i in range(1, len(key) + 1))
        one_order = ", ".join(f"{c}{direction}" for c in key)
        cut = "" if limit is None else f" LIMIT {int(limit)}"
        postgres = isinstance(self.db, pw.PostgresqlDatabase)
        rows = []
        for i in range(0, len(arms), self._ARMS_PER_STATEMENT):
            chunk = arms[i:i + self._ARMS_PER_STATEMENT]
            selects = [f"SELECT {columns} FROM flow_run" + (f" WHERE {where}" if where else "")
                       for where, _ in chunk]
            if len(selects) == 1:
                sql = f"{selects[0]} ORDER BY {one_order}{cut}"
            elif postgres:
                # A top-level UNION ALL is not merged on PostgreSQL: cut each arm first.
                sql = " UNION ALL ".join(f"({s} ORDER BY {one_order}{cut})" for s in selects) \
                    + f" ORDER BY {order}{cut}"
            else:
                sql = " UNION ALL ".join(selects) + f" ORDER BY {order}{cut}"
            params = [value for _, values in chunk for value in values]
            rows.extend(tuple(row) for row in self.db.execute_sql(sql, params).fetchall())
        if len(arms) > self._ARMS_PER_STATEMENT:
            width = len(key)
            rows.sort(key=lambda row: row[:width], reverse=descending)
        return rows if limit is None else rows[:limit]

    # -- flow runs ------------------------------------------------------------
    def create_flow_run(self, flow_id, parameters=None, name=None, labels=None,
                        scheduled_start_time=None, idempotency_key=None,
                        state=StateName.SCHEDULED, auto_scheduled=False, report=False):
        """A new run of flow version `flow_id`; with `idempotency_key`, the run an
        earlier call with that key made, if any. With `report`, (run, created)."""
        # Hand-written SQL: the REST API creates runs at hundreds per second, and
        # building these statements with the ORM took most of each request.
        now = time.time()
        p = self.db.param
        parameters = parameters or {}
        with self.db.atomic():
            if idempotency_key is not None:
                earlier = self._run_by_key(idempotency_key, flow_id, parameters)
                if earlier is not None:
                    return (earlier, False) if report else earlier
            values = [flow_id, name or "", json.dumps(parameters, sort_keys=True),
                      json.dumps(sorted(set(labels or ()))), state,
                      scheduled_start_time or now, idempotency_key, bool(auto_scheduled), 0,
                      now, now]
            sql = (f"INSERT INTO flow_run (flow_id, name, parameters, labels, state, "
                   f"scheduled_start_time, idempotency_key, auto_scheduled, restarts, "
                   f"created, updated) VALUES ({', '.join([p] * len(values))})"
                   " ON CONFLICT (idempotency_key) DO NOTHING")
            if self._returning:
                row = self.db.execute_sql(sql + " RETURNING id", values).fetchone()
                run_id = row[0] if row else None
            else:
                cursor = self.db.execute_sql(sql, values)
                run_id = cursor.lastrowid if cursor.rowcount == 1 else None
            if run_id is None:
                # Another writer made a run with this key after our look (PostgreSQL
                # runs writers side by side): that run is the answer.
                earlier = self._run_by_key(idempotency_key, flow_id, parameters)
                return (earlier, False) if report else earlier
            if not name:
                self.db.execute_sql(f"UPDATE flow_run SET name = {p} WHERE id = {p}",
                                    [default_run_name(run_id), run_id])
            self.db.execute_sql(f"INSERT INTO state_event (flow_run_id, state, time) "
                                f"VALUES ({p}, {p}, {p})", [run_id, state, now])
        run = self.get_flow_run(run_id)  # as created: an agent may take it once rung
        if state == StateName.SCHEDULED:
            doorbell.ring(self.db)
        return (run, True) if report else run

    def _run_by_key(self, key, flow_id, parameters):
        """The run made with idempotency key `key`, or None; Conflict when it was
        made for another flow or with other parameters."""
        found = statements.execute(self.db, "run_by_key", key).fetchone()
        if found is None:
            return None
        run_id, other_flow, stored = found
        if other_flow != flow_id and not self._same_flow(other_flow, flow_id):
            raise Conflict(f"Idempotency key {key!r} was already used for a run of another "
                           f"flow (run {run_id}); use a new key")
        if m.from_json(stored) != parameters:
            raise Conflict(f"Idempotency key {key!r} was already used for run {run_id} with "
                           "other parameters; use a new key for a different run")
        return self.get_flow_run(run_id)

    def _same_flow(self, flow_id, other_id):
        """Are two flow ids versions of one flow (same project and name)?"""
        rows = list(m.Flow.select(m.Flow.project, m.Flow.name)
                    .where(m.Flow.id.in_([flow_id, other_id])).tuples())
        return len(rows) == 2 and rows[0] == rows[1]

    def get_flow_run(self, run_id):
        run_id = _check_run_id(run_id)
        row = statements.execute(self.db, "run_by_id", run_id).fetchone()
        if row is None:
            raise NotFound(f"No flow run with id {run_id}", kind="flow run", name=run_id)
        return _run_row(dict(zip(_RUN_KEYS, row)))

    def get_flow_run_and_flow(self, run_id):
        """(the run, its flow's version) in one read: what a run's process needs first."""
        run_id = _check_run_id(run_id)
        row = statements.execute(self.db, "run_and_flow", run_id).fetchone()
        if row is None:
            raise NotFound(f"No flow run with id {run_id}", kind="flow run", name=run_id)
        run = _run_row(dict(zip(_RUN_KEYS, row)))
        return run, self._flow_from_tuple(row[len(_RUN_KEYS):] + (run["project"],))

    def list_flow_runs(self, flow_id=None, state=None, limit=50, before_id=None,
                       all_versions=False, since=None, until=None):
        """Newest first; `before_id` continues a listing (cursor pagination).

        `all_versions` includes runs of every version of `flow_id`'s flow;
        `since`/`until` bound the scheduled start time (epoch seconds). A listing
        bounded in time comes in scheduled-time order, latest first (ties by
        id), and `before_id` then continues after that run's place in it: no
        index serves a time range in id order, so that order would mean reading
        every run of the range.

        Every combination of filters reads about one page of index entries per
        (flow version, state) it names, however many runs there are (see
        `_merged`), then the page's rows by id.
        """
        p = self.db.param
        by_time = since is not None or until is not None
        versions = [None] if flow_id is None else (
            self._version_ids(flow_id) if all_versions else [flow_id])
        states = [None] if state is None else (
            [state] if isinstance(state, str) else sorted(set(state)))
        # With a flow, states and a time range: the (flow, auto_scheduled, state,
        # time) index, once for each value of auto_scheduled.
        autos = [False, True] if by_time and flow_id is not None and state is not None \
            else [None]
        shared, shared_params = [], []
        if since is not None:
            shared.append(f"scheduled_start_time >= {p}")
            shared_params.append(since)
        if until is not None:
            shared.append(f"scheduled_start_time < {p}")
            shared_params.append(until)
        if before_id is not None:
            if by_time:
                place = self._time_place(before_id)
                shared.append(f"(scheduled_start_time, id) < ({p}, {p})")
                shared_params.extend(place)
            else:
                shared.append(f"id < {p}")
                shared_params.append(before_id)
        arms = []
        for version, auto, one_state in itertools.product(versions, autos, states):
            where, params = [], []
            for column, value in (("flow_id", version), ("auto_scheduled", auto),
                                  ("state", one_state)):
                if value is not None:
                    where.append(f"{column} = {p}")
                    params.append(value)
            arms.append((" AND ".join(where + shared), params + shared_params))
        key = ("scheduled_start_time", "id") if by_time else ("id",)
        ids = [row[-1] for row in self._merged(arms, key, limit)]
        return self._runs_by_id(ids)

    def _time_place(self, run_id):
        """(scheduled start time, id) of the run a time-ordered page continues after."""
        when = m.FlowRun.select(m.FlowRun.scheduled_start_time).where(
            m.FlowRun.id == run_id).scalar()
        if when is None:
            raise NotFound(f"Run {run_id}, after which this page was to continue, no longer "
                           "exists (retention may have deleted it); list again from the "
                           "first page")
        return when, run_id

    def _runs_by_id(self, ids):
        """The runs with these ids, in this order (a run deleted meanwhile is left out)."""
        found = {}
        for i in range(0, len(ids), 500):  # within SQLite's limit of bound values
            found.update((row["id"], row) for row in _runs().where(
                m.FlowRun.id.in_(ids[i:i + 500])).dicts())
        return [_run_row(found[i]) for i in ids if i in found]

    def rename_flow_run(self, run_id, name):
        name = _check_name(name, "run")
        with self.db.atomic():
            if m.FlowRun.update(name=name, updated=time.time()).where(
                    m.FlowRun.id == run_id).execute() != 1:
                raise NotFound(f"No flow run with id {run_id}", kind="flow run", name=run_id)

    def state_events(self, run_id):
        return list(m.StateEvent.select().where(m.StateEvent.flow_run == run_id)
                    .order_by(m.StateEvent.id).dicts())

    def active_runs(self, states=ACTIVE_RUN_STATES):
        """Runs that hold a process or a claim, oldest first: each state's runs off
        the (state, id) index, merged."""
        p = self.db.param
        ids = [row[0] for row in self._merged(
            [(f"state = {p}", [s]) for s in sorted(set(states))], ("id",), descending=False)]
        return self._runs_by_id(ids)

    def run_attempts(self, run_ids):
        """{run id: (state, attempt)} of the given runs (an agent's look at its children)."""
        found = {}
        for i in range(0, len(run_ids), 50):  # (a statement per chunk size: a few)
            chunk = run_ids[i:i + 50]
            found.update((rid, (state, attempt)) for rid, state, attempt in statements.execute(
                self.db, "run_attempts", *chunk, shape=len(chunk)))
        return found

    # -- agents and claims ------------------------------------------------------
    def register_agent(self, name, labels, host, pid, limit=None, strict_labels=False,
                       uid=None, host_id=None, live_after=None, replaces=None):
        """Record a starting agent under `name`, its unique id `uid` (default: a
        new one) and `host_id` (default: this process's host, see identity.py).

        An earlier agent of that name is replaced unless it is live: another
        id, last seen after `live_after` (epoch seconds; None: never live),
        and not `replaces` (the id of one its successor saw die). Returns None
        when registered, else the live agent's row, which keeps the name.
        """
        now = time.time()
        values = {m.Agent.labels: sorted(set(labels)), m.Agent.host: host, m.Agent.pid: pid,
                  m.Agent.uid: uid or new_id(), m.Agent.host_id: host_id or host_identity(),
                  m.Agent.limit: limit, m.Agent.strict_labels: bool(strict_labels),
                  m.Agent.started: now, m.Agent.last_seen: now}
        with self.db.atomic():
            holder = self._agent_row(name, lock=True)
            if holder is None:
                # Two agents starting at once: the second insert does nothing (on
                # PostgreSQL it waits for the first to commit), and it is told.
                m.Agent.insert({m.Agent.name: name, **values}).on_conflict_ignore().execute()
                holder = self._agent_row(name)
                return None if holder["id"] == values[m.Agent.uid] else holder
            if (holder["id"] not in (values[m.Agent.uid], replaces)
                    and live_after is not None and holder["last_seen"] > live_after):
                return holder
            m.Agent.update(values).where(m.Agent.name == name).execute()
        return None

    def agent_seen(self, name, uid=None):
        """The agent is alive; False when the name is no longer its own (with
        `uid`: another agent took the name over after this one fell silent)."""
        where = m.Agent.name == name
        if uid is not None:
            where &= m.Agent.uid == uid
        with self.db.atomic():
            return m.Agent.update(last_seen=time.time()).where(where).execute() == 1

    def list_agents(self):
        """Agents, by name: `id` is the agent process's unique id, `host_id`
        where its pid means something, `host` the host name it gave."""
        return [_agent(row) for row in m.Agent.select().order_by(m.Agent.name).dicts()]

    def _agent_row(self, name, lock=False):
        query = m.Agent.select().where(m.Agent.name == name)
        if lock and self.db.for_update:  # PostgreSQL: one registration of a name at a time
            query = query.for_update()
        row = query.dicts().first()
        return None if row is None else _agent(row)

    def _flow_settings(self, flow_id):
        row = statements.execute(self.db, "flow_settings_and_run_config", flow_id).fetchone()
        return (m.from_json(row[0]) if row else None) or {}

    def late_policy_hold(self, flow_id, settings, scheduled, now):
        """Why the flow's late-run policy keeps an agent from starting its auto run
        scheduled at `scheduled` (the scheduler will skip it), or None."""
        late = now - scheduled
        limit = lateness.skipped_after(settings)
        if limit is not None and late > limit:
            return (f"It is {late:.0f} s late, more than its flow allows ("
                    + (f"max_lateness {limit:g} s" if settings.get("max_lateness") is not None
                       else "late_runs='skip'") + "); the scheduler skips it.")
        if lateness.policy(settings) == "run_latest" and late > lateness.late_after(settings) \
                and self._newer_due_auto_run(flow_id, scheduled, now):
            return ("It is late and a newer run of its flow is due too; with "
                    "late_runs='run_latest' only the newest runs, and the scheduler skips "
                    "this one.")
        return None

    def _newer_due_auto_run(self, flow_id, scheduled, now):
        """Is a later auto run of the flow due by `now` and still Scheduled?"""
        return (m.FlowRun.select(m.FlowRun.id)
                .where((m.FlowRun.flow == flow_id)
                       & (m.FlowRun.auto_scheduled == True)  # noqa: E712
                       & (m.FlowRun.state == StateName.SCHEDULED)
                       & (m.FlowRun.scheduled_start_time > scheduled)
                       & (m.FlowRun.scheduled_start_time <= now)).exists())

    def _active_rows(self):
        return [(fid, m.from_json(labels), rid) for rid, fid, labels in
                m.FlowRun.select(m.FlowRun.id, m.FlowRun.flow, m.FlowRun.labels)
                .where(m.FlowRun.state.in_(list(ACTIVE_RUN_STATES))).tuples()]

    def _limit_full(self, flow_id, flow_limit, run_labels, label_limits):
        """Inside the claim's transaction: would this run exceed a limit? The
        limits counted are locked first (see `_lock_limits`), so the count holds
        until the claim that counted is committed."""
        counted = [("label", label) for label in run_labels if label in label_limits]
        if flow_limit:
            counted.append(("flow", flow_id))
        self._lock_limits(counted)
        active = self._active_rows()
        if flow_limit and sum(1 for fid, _, _ in active if fid == flow_id) >= flow_limit:
            return True
        for label in run_labels:
            if label in label_limits and sum(
                    1 for _, labels, _ in active if label in labels) >= label_limits[label]:
                return True
        return False

    def limit_holders(self, flow_id=None, label=None):
        """Ids of active runs counting against a flow's or a label's limit."""
        return [rid for fid, labels, rid in self._active_rows()
                if (flow_id is not None and fid == flow_id)
                or (label is not None and label in labels)]

    def set_concurrency_limit(self, label, limit, kind="label"):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise StoreError(f"Concurrency limit {limit!r} for {label!r} must be a whole "
                             "number >= 0 (0 holds every run with the label)")
        label = _check_name(label, "label")
        with self.db.atomic():
            (m.ConcurrencyLimit.insert(kind=kind, label=label, limit=limit, updated=time.time())
             .on_conflict(conflict_target=[m.ConcurrencyLimit.kind, m.ConcurrencyLimit.label],
                          update={m.ConcurrencyLimit.limit: limit,
                                  m.ConcurrencyLimit.updated: time.time()})
             .execute())

    def delete_concurrency_limit(self, label, kind="label"):
        with self.db.atomic():
            if m.ConcurrencyLimit.delete().where(
                    (m.ConcurrencyLimit.kind == kind)
                    & (m.ConcurrencyLimit.label == label)).execute() != 1:
                known = list(self.concurrency_limits(kind))
                raise NotFound.named("concurrency limit", label, known)

    def concurrency_limits(self, kind="label"):
        return dict(statements.execute(self.db, "limits_of_kind", kind).fetchall())

    def _lock_limits(self, limits):
        """Inside a write transaction: hold the limits `limits` ((kind, name)
        pairs) until it ends, so that what is counted under them cannot change
        before the claim or slot that counted is committed.

        SQLite's write lock (IMMEDIATE) already holds everything. PostgreSQL
        runs writers side by side in READ COMMITTED: each limit gets a
        transaction-level advisory lock on a stable 64-bit key, taken in one
        sorted order so that two claims never wait on each other in a circle.
        """
        if not limits or not isinstance(self.db, pw.PostgresqlDatabase):
            return
        for key in sorted({_limit_key(kind, name) for kind, name in limits}):
            self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))

    def try_take_task_slot(self, tag, limit, run_id, holder, attempt=None, lease=None,
                           now=None):
        """Take a slot of `tag` for `holder` if fewer than `limit` are held; one
        transaction under the tag's lock (see `_lock_limits`), so never over
        the limit, on either database.

        A slot counts while its run is active on the attempt that took it
        (`attempt`; None: the run's current one) and, with a `lease` (seconds),
        until the lease runs out unless renewed (`renew_task_slots`): a slot of
        a dead process, a lost Dask worker or an earlier attempt holds nothing.
        A holder that has its slot already (its task runs again on another
        worker after its worker was lost) keeps it, with a fresh lease.
        """
        now = time.time() if now is None else now
        expires = None if lease is None else now + lease
        with self.db.atomic():
            self._lock_limits([("tag", tag)])
            mine = (m.TaskSlot.tag == tag) & (m.TaskSlot.holder == holder)
            if m.TaskSlot.update(expires=expires).where(
                    mine & (m.TaskSlot.expires.is_null() | (m.TaskSlot.expires > now))
            ).execute():
                return True
            # A slot of ours whose lease ran out was given back (another holder may
            # have it now): take a place again only if there is one.
            m.TaskSlot.delete().where(mine).execute()
            if self._live_slots(tag, now).count() >= limit:
                return False
            if attempt is None:
                attempt = self._attempt(run_id)
            m.TaskSlot.insert(tag=tag, flow_run=run_id, holder=holder, attempt=attempt,
                              acquired=now, expires=expires).execute()
            return True

    @staticmethod
    def _live_slots(tag, now):
        """Slots of `tag` that count: their run is active on the attempt that
        took them, and their lease (if any) has not run out."""
        return (m.TaskSlot.select(m.TaskSlot.flow_run)
                .join(m.FlowRun, on=(m.TaskSlot.flow_run == m.FlowRun.id))
                .where((m.TaskSlot.tag == tag)
                       & m.FlowRun.state.in_(list(ACTIVE_RUN_STATES))
                       & (m.TaskSlot.attempt == m.FlowRun.attempt)
                       & (m.TaskSlot.expires.is_null() | (m.TaskSlot.expires > now))))

    def renew_task_slots(self, holders, lease, now=None):
        """The holders are alive: their slots' leases run `lease` seconds from
        now. Returns how many slots were renewed."""
        if not holders:
            return 0
        now = time.time() if now is None else now
        with self.db.atomic():
            return m.TaskSlot.update(expires=now + lease).where(
                m.TaskSlot.holder.in_(sorted(holders))).execute()

    def tag_slot_holders(self, tag):
        """Ids of active runs holding slots of task tag `tag` (slots that count)."""
        return sorted({rid for (rid,) in self._live_slots(tag, time.time()).tuples()})

    def release_task_slots(self, holder):
        with self.db.atomic():
            m.TaskSlot.delete().where(m.TaskSlot.holder == holder).execute()

    # -- task runs ------------------------------------------------------------
    _TASK_COLUMNS = ("task_slug", "task_name", "map_index", "state", "message",
                     "result_location", "run_count", "start_time", "end_time")

    def record_task_runs(self, run_id, attempt, rows, events=()):
        """Upsert task runs (one per slug and map index) and add state events, for
        the process running attempt `attempt` of the run (else AttemptLost, and
        nothing is written).

        Multi-row statements per batch: recording 10,000 task runs is the
        database's work, not the ORM's. The first start time recorded is kept.
        Rows of one call must have distinct (task_slug, map_index).
        """
        if rows or events:
            self.record_run_report(run_id, attempt, tasks=rows, events=events)

    def record_run_report(self, run_id, attempt, tasks=(), events=(), artifacts=(), logs=()):
        """What the process running attempt `attempt` of the run reports, in one
        transaction: task runs and their state events (as `record_task_runs`),
        artifact changes (as `record_artifacts`, after the task runs: an
        artifact's task run is there with it) and log rows (as `write_logs`).
        AttemptLost, and nothing written, when the run is not that attempt's."""
        with self.db.atomic():
            if tasks or events or artifacts:
                self._confirm_owner(run_id, attempt, time.time())
            return self._write_report(run_id, tasks, events, artifacts, logs)

    def _write_report(self, run_id, tasks=(), events=(), artifacts=(), logs=()):
        """Inside a transaction whose writer owns the run: a report's rows."""
        self._write_task_runs(run_id, tasks, events)
        touched = self._apply_artifacts(run_id, artifacts)
        self._insert_logs(logs)
        return touched

    _TASK_UPSERT = (
        " ON CONFLICT (flow_run_id, task_slug, map_index) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in _TASK_COLUMNS
                    if c not in ("task_slug", "map_index", "start_time"))
        + ", start_time = COALESCE(task_run.start_time, excluded.start_time)")
    _EVENT_COLUMNS = ("flow_run_id", "task_slug", "map_index", "state", "message", "time")

    def _write_task_runs(self, run_id, rows, events):
        if rows:
            self._insert_rows("task_run", ("flow_run_id",) + self._TASK_COLUMNS, [
                (run_id,) + tuple(r.get(c) for c in self._TASK_COLUMNS) for r in rows],
                suffix=self._TASK_UPSERT)
        if events:
            self._insert_rows("state_event", self._EVENT_COLUMNS, [
                (run_id, e.get("task_slug"), e.get("map_index"), e["state"],
                 e.get("message"), e["time"]) for e in events])

    def task_runs(self, run_id):
        return list(m.TaskRun.select().where(m.TaskRun.flow_run == run_id)
                    .order_by(m.TaskRun.id).dicts())

    # -- logs -----------------------------------------------------------------
    _LOG_COLUMNS = ("flow_run_id", "task_slug", "map_index", "time", "level", "logger",
                    "message")

    def write_logs(self, rows):
        """Insert log rows: tuples in `_LOG_COLUMNS` order, or dicts."""
        if rows:
            with self.db.atomic():
                self._insert_logs(rows)

    def _insert_logs(self, rows):
        self._insert_rows('"log"', self._LOG_COLUMNS, [r if isinstance(r, tuple) else (
            r["flow_run"], r.get("task_slug"), r.get("map_index"), r["time"], r["level"],
            r["logger"], r["message"]) for r in rows])

    def _insert_rows(self, table, columns, rows, suffix=""):
        """INSERT many rows as multi-row statements of up to 500 rows each.

        One statement per chunk is one step of the database engine: a writer
        thread hands the GIL back and forth once per chunk instead of once per
        row, so a busy run beside it is not slowed by the switching.
        """
        if not rows:
            return
        one = "(" + ", ".join([self.db.param] * len(columns)) + ")"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        cursor = self.db.cursor()
        for i in range(0, len(rows), 500):
            chunk = rows[i:i + 500]
            params = list(itertools.chain.from_iterable(chunk))
            cursor.execute(head + ", ".join([one] * len(chunk)) + suffix, params)

    def logs(self, run_id, after_id=0, min_level=0, limit=1000, task_slug=None):
        """Log rows of a run with id > after_id (of one task, with `task_slug`),
        oldest first."""
        where = (m.Log.flow_run == run_id) & (m.Log.id > after_id) & (m.Log.level >= min_level)
        if task_slug is not None:
            where &= m.Log.task_slug == task_slug
        return list(m.Log.select().where(where).order_by(m.Log.id).limit(limit).dicts())

    # -- artifacts ------------------------------------------------------------
    _ARTIFACT_FIELDS = (m.Artifact.id, m.Artifact.task_slug, m.Artifact.map_index,
                        m.Artifact.kind, m.Artifact.text, m.Artifact.created,
                        m.Artifact.updated)

    def record_artifacts(self, run_id, attempt, changes):
        """Apply artifact changes of run `run_id` in order, for the process running
        attempt `attempt` (else AttemptLost, and nothing is written). Each change
        is a dict: {"action": "create", "id", "task_slug", "map_index", "kind",
        "text", "time"}, {"action": "update", "id", "kind", "text", "time"} or
        {"action": "delete", "id"}. Updates and deletes touch only this run's
        artifacts. Returns the number of rows each change touched."""
        if not changes:
            return []
        return self.record_run_report(run_id, attempt, artifacts=changes)

    @staticmethod
    def _apply_artifacts(run_id, changes):
        touched = []
        for change in changes:
            action = change["action"]
            mine = (m.Artifact.id == change["id"]) & (m.Artifact.flow_run == run_id)
            if action == "create":
                m.Artifact.insert(
                    id=change["id"], flow_run=run_id, task_slug=change.get("task_slug"),
                    map_index=-1 if change.get("map_index") is None else change["map_index"],
                    kind=change["kind"], text=change["text"], created=change["time"],
                    updated=change["time"]).execute()
                touched.append(1)
            elif action == "update":
                touched.append(m.Artifact.update(
                    kind=change["kind"], text=change["text"],
                    updated=change["time"]).where(mine).execute())
            elif action == "delete":
                touched.append(m.Artifact.delete().where(mine).execute())
            else:
                raise ValueError(f"Artifact change {action!r} is not known; use "
                                 "create, update or delete")
        return touched

    def artifacts(self, run_id, task_slug=None, map_index=None):
        """The run's artifacts (of one task run, with `task_slug`; `map_index`
        None for the task itself or its unmapped run), oldest first."""
        where = m.Artifact.flow_run == run_id
        if task_slug is not None:
            where &= (m.Artifact.task_slug == task_slug) & (
                m.Artifact.map_index == (-1 if map_index is None else map_index))
        return [_artifact_row(row) for row in m.Artifact.select(*self._ARTIFACT_FIELDS)
                .where(where).order_by(m.Artifact.created, m.Artifact.id).dicts()]

    def get_artifact(self, artifact_id):
        """One artifact with its run's id, or NotFound."""
        row = (m.Artifact.select(m.Artifact.flow_run, *self._ARTIFACT_FIELDS)
               .where(m.Artifact.id == artifact_id).dicts().first())
        if row is None:
            raise NotFound(f"No artifact with id {artifact_id!r}", kind="artifact",
                           name=artifact_id)
        row = _artifact_row(row)
        row["flow_run_id"] = row.pop("flow_run")
        return row

    # -- secrets --------------------------------------------------------------
    def set_secret(self, name, value):
        name = _check_name(name, "secret")
        now = time.time()
        with self.db.atomic():
            (m.Secret.insert(name=name, value=value, updated=now)
             .on_conflict(conflict_target=[m.Secret.name],
                          update={m.Secret.value: value, m.Secret.updated: now})
             .execute())

    def get_secret(self, name):
        row = m.Secret.get_or_none(m.Secret.name == name)
        if row is None:
            raise NotFound.named("secret", name, self.secret_names())
        return row.value

    def delete_secret(self, name):
        with self.db.atomic():
            if m.Secret.delete().where(m.Secret.name == name).execute() != 1:
                raise NotFound.named("secret", name, self.secret_names())

    def secret_names(self):
        return [s.name for s in m.Secret.select(m.Secret.name).order_by(m.Secret.name)]




def _limit_key(kind, name):
    """The advisory-lock key of limit `name` of `kind` ("flow", "label", "tag"):
    64 bits of a hash, the same in every process and on every host."""
    digest = hashlib.blake2b(f"orchestrator limit {kind} {name}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _reporting_full_disks(cls):
    """Every public method of `cls` (and its mixins) raises DiskFull, not a
    driver error, when the database's disk is full (DatabaseUnreachable when
    its server takes no connection), and gives its connection back to the
    process's pool when it returns (PostgreSQL)."""
    def wrap(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (OrchestratorError, LookupError, ValueError, TypeError):
                raise
            except Exception as exc:
                unavailable = unavailable_error(exc, self.url)
                if unavailable is None:
                    raise
                raise unavailable from None
            finally:
                release_connection(self.db)
        return call

    for klass in cls.__mro__[:-1]:
        for name, value in vars(klass).items():
            if not name.startswith("_") and callable(value) and not isinstance(
                    value, (staticmethod, classmethod, type)) and name != "atomic":
                if getattr(cls, name) is value:  # not overridden further down
                    setattr(cls, name, wrap(value))
    return cls


Store = _reporting_full_disks(Store)


def _check_name(name, kind):
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\n" in name:
        raise StoreError(
            f"{kind.capitalize()} name {name!r} is not valid: use 1 to 200 characters "
            "on one line")
    return name.strip()


def _check_run_id(run_id):
    try:
        number = int(run_id)
    except (TypeError, ValueError):
        raise NotFound(f"{run_id!r} is not a flow run id; ids are whole numbers",
                       kind="flow run", name=run_id) from None
    if not 0 < number < 2 ** 63:
        raise NotFound(f"No flow run with id {run_id}", kind="flow run", name=run_id)
    return number


def _artifact_row(row):
    row["map_index"] = None if row["map_index"] is None or row["map_index"] < 0 \
        else row["map_index"]
    return row


def _agent(row):
    """An agent row as the rest of the package sees it: `id` is its unique id."""
    row = dict(row)
    row["id"] = row.pop("uid")
    if "labels" in row:
        row["labels"] = m.from_json(row["labels"])
    return row


def _project(row):
    return {"id": row.id, "name": row.name, "created": row.created}
