"""Store queries of the scheduler: schedules, auto-scheduled runs, late runs.

A mixin of `Store` (see store.py), kept in its own module. The queries are
served by indexes: the flow run index (flow, auto_scheduled, state,
scheduled_start_time) for a flow's auto-scheduled runs, the unique index on
idempotency_key for creating runs, the (project, name, version) index for a
flow's versions, the flow index (archived, schedule_active) for the flows
with a schedule. Bulk changes run in bounded batches, each one short
transaction, so 100,000 late runs never hold the database for long.

An auto-scheduled run's idempotency key names the flow's version group
(project/name, not the version id) and its time, e.g.
``auto:etl/daily:2024-05-01T06:00:00Z``: two schedulers, or a scheduler
before and after a flow is registered again, cannot create the same run twice.
"""

import hashlib
import json
import time
import uuid

import peewee as pw

from ..core.states import StateName
from . import doorbell
from . import models as m
from . import statements
from .statements import statement

# Rows per multi-row statement: far below SQLite's bound-parameter limit.
_CHUNK = 50
_ID_CHUNK = 500


def auto_run_key(project, name, when, variant=None):
    """The idempotency key of the auto-scheduled run of `project/name` at epoch `when`.

    Two clock events at one instant with different parameters or labels are two
    runs: `variant` (JSON, e.g. the clock's parameters and labels) tells them
    apart with a digest at the end of the key.
    """
    group = f"{project}/{name}"
    # Keys live in a 255-character column; and "a/b" + "c" must not read like
    # "a" + "b/c": such groups go by a digest (which has no "/").
    if len(group) > 120 or "/" in project:
        group = hashlib.sha256(json.dumps([project, name]).encode()).hexdigest()[:32]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(when // 1)))
    fraction = round((when - when // 1) * 1_000_000)
    if fraction >= 1_000_000:  # rounding carried into the next second
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(when // 1) + 1))
        fraction = 0
    if fraction:
        stamp += f".{fraction:06d}"
    key = f"auto:{group}:{stamp}Z"
    if variant:
        extra = json.dumps(variant, sort_keys=True)
        key += ":" + hashlib.sha256(extra.encode()).hexdigest()[:12]
    return key


def default_run_name(run_id):
    """A readable run name that is unique because it carries the id."""
    adjectives = ("amber", "brisk", "calm", "deft", "eager", "fair", "glad", "hardy",
                  "keen", "lucid", "merry", "nimble", "plucky", "quiet", "rapid", "sunny")
    animals = ("otter", "heron", "lynx", "marten", "ibex", "finch", "koala", "bison",
               "gecko", "puffin", "tapir", "wren", "yak", "zebu", "egret", "newt")
    return f"{adjectives[run_id % 16]}-{animals[(run_id // 16) % 16]}-{run_id}"


class SchedulingQueries:
    """Mixed into Store; uses `self.db` and the models."""

    # -- which flows ------------------------------------------------------------
    def scheduled_flows(self):
        """The current version of every flow with an active schedule, as dicts:
        id, project, name, version, schedule (its ref), settings, labels, parameters."""
        query = (m.Flow.select(m.Flow.id, m.Flow.name, m.Flow.version, m.Flow.schedule,
                               m.Flow.settings, m.Flow.labels, m.Flow.parameters,
                               m.Project.name.alias("project"))
                 .join(m.Project, on=(m.Flow.project == m.Project.id))
                 .where((m.Flow.archived == False)  # noqa: E712
                        & (m.Flow.schedule_active == True)  # noqa: E712
                        & m.Flow.schedule.is_null(False))
                 .order_by(m.Flow.id))
        rows = []
        for row in query.dicts():
            for key in ("schedule", "settings", "labels", "parameters"):
                row[key] = m.from_json(row[key])
            row["settings"] = row["settings"] or {}
            rows.append(row)
        return rows

    def _group_ids(self, flow_id):
        """A subquery of the ids of every version of `flow_id`'s flow."""
        this = m.Flow.alias("this")
        return (m.Flow.select(m.Flow.id)
                .join(this, on=((this.project == m.Flow.project) & (this.name == m.Flow.name)))
                .where(this.id == flow_id))

    # -- what exists ------------------------------------------------------------
    def latest_auto_scheduled_time(self, flow_id):
        """The latest start time of the flow's auto-scheduled runs that are still
        Scheduled (epoch seconds), or None."""
        return (m.FlowRun.select(pw.fn.MAX(m.FlowRun.scheduled_start_time))
                .where(auto_scheduled(flow_id)).scalar())

    def count_future_auto_runs(self, flow_id, now):
        """How many of the flow's auto-scheduled runs are Scheduled after `now`."""
        return (m.FlowRun.select(pw.fn.COUNT(m.FlowRun.id))
                .where(auto_scheduled(flow_id)
                       & (m.FlowRun.scheduled_start_time > now)).scalar())

    def auto_run_summary(self, flow_id, now):
        """One round trip for the scheduler's tick: of the flow's Scheduled
        auto runs, how many start after `now` and the latest of those, and the
        earliest start time of any (to notice late runs)."""
        # The scheduler asks this for every flow at every tick: built once.
        row = statements.execute(self.db, "auto_run_summary", flow_id, now).fetchone()
        return {"future": row[0] or 0, "latest": row[1], "oldest": row[2]}

    # -- creating runs ----------------------------------------------------------
    def create_auto_runs(self, flow_id, runs, now=None, group=None):
        """Create auto-scheduled runs of flow `flow_id`; returns the new run ids.

        `runs`: dicts with scheduled_start_time (epoch), parameters, labels and
        a `variant` for events that share a time (see `auto_run_key`). A
        run whose key exists already (another scheduler made it, or an earlier
        version of the flow ran at that time) is skipped, not duplicated: one
        INSERT ... ON CONFLICT DO NOTHING, the same on SQLite and PostgreSQL.
        `group` is the flow's (project, name) when the caller knows it.

        Nothing is created unless the flow's schedule is still active when the
        rows go in (see `_still_scheduled`): a pause that commits first wins.
        """
        if not runs:
            return []
        now = time.time() if now is None else now
        project, name = group or (m.Flow.select(m.Project.name, m.Flow.name)
                                  .join(m.Project, on=(m.Flow.project == m.Project.id))
                                  .where(m.Flow.id == flow_id).tuples().get())
        # Rows this call inserted carry its marker as their name until they are
        # named: a conflict that skipped a row leaves no marker behind.
        marker = f"~scheduling-{uuid.uuid4().hex}"
        rows, keys = [], []
        for run in runs:
            key = auto_run_key(project, name, run["scheduled_start_time"], run.get("variant"))
            keys.append(key)
            rows.append({
                m.FlowRun.flow: flow_id, m.FlowRun.name: marker,
                m.FlowRun.parameters: run.get("parameters") or {},
                m.FlowRun.labels: sorted(set(run.get("labels") or ())),
                m.FlowRun.state: StateName.SCHEDULED,
                m.FlowRun.scheduled_start_time: run["scheduled_start_time"],
                m.FlowRun.idempotency_key: key, m.FlowRun.auto_scheduled: True,
                m.FlowRun.created: now, m.FlowRun.updated: now,
            })
        created = []
        with self.db.atomic():
            if not self._still_scheduled(flow_id):
                return []  # paused (or archived) since the tick read it
            for i in range(0, len(rows), _CHUNK):
                m.FlowRun.insert_many(rows[i:i + _CHUNK]).on_conflict(
                    action="nothing").as_rowcount().execute()
            for i in range(0, len(keys), _ID_CHUNK):
                created.extend(
                    run_id for run_id, in m.FlowRun.select(m.FlowRun.id)
                    .where(m.FlowRun.idempotency_key.in_(keys[i:i + _ID_CHUNK])
                           & (m.FlowRun.name == marker)).tuples())
            created.sort()
            for i in range(0, len(created), _CHUNK):
                chunk = created[i:i + _CHUNK]
                (m.FlowRun.update(name=pw.Case(m.FlowRun.id, [
                    (run_id, default_run_name(run_id)) for run_id in chunk]))
                 .where(m.FlowRun.id.in_(chunk)).execute())
                m.StateEvent.insert_many([
                    {m.StateEvent.flow_run: run_id, m.StateEvent.state: StateName.SCHEDULED,
                     m.StateEvent.message: "Scheduled by the flow's schedule",
                     m.StateEvent.time: now} for run_id in chunk]).execute()
        if created:
            doorbell.ring(self.db)
        return created

    def _still_scheduled(self, flow_id):
        """Inside the transaction that creates a flow's auto runs: is its schedule
        still active, and the flow not archived?

        On PostgreSQL the flow's row is locked FOR SHARE until the transaction
        ends: a pause (an UPDATE of that row) waits for the runs to be in, then
        deletes them; a pause that committed first is seen here (READ COMMITTED
        re-reads the row once its lock is free). On SQLite the transaction
        holds the write lock from its start, so this reads the latest commit.
        """
        query = m.Flow.select(m.Flow.id).where(
            (m.Flow.id == flow_id) & (m.Flow.schedule_active == True)  # noqa: E712
            & (m.Flow.archived == False))  # noqa: E712
        if isinstance(self.db, pw.PostgresqlDatabase):
            query = query.for_update("FOR SHARE")
        return query.scalar() is not None

    # -- pausing and new versions -----------------------------------------------
    def set_schedule_active(self, flow_ref, active, project=None, now=None):
        """Pause (active=False) or resume a flow's schedule.

        Pausing deletes the future auto-scheduled runs of every version of the
        flow that are still Scheduled; resuming lets the next scheduler tick
        create them again. Returns (flow, runs deleted).

        A tick racing a pause leaves no future run behind: its insert and the
        pause's UPDATE of the flow rows exclude each other (see
        `_still_scheduled`), and the deletion starts after the UPDATE commits.
        """
        flow = self.get_flow(flow_ref, project=project)
        now = time.time() if now is None else now
        with self.db.atomic():
            (m.Flow.update(schedule_active=bool(active))
             .where(m.Flow.id.in_(self._group_ids(flow["id"]))).execute())
        deleted = 0 if active else self.delete_future_auto_runs(flow["id"], now)
        return dict(flow, schedule_active=bool(active)), deleted

    def schedule_active(self, flow_id):
        return bool(m.Flow.select(m.Flow.schedule_active).where(m.Flow.id == flow_id).scalar())

    def delete_future_auto_runs(self, flow_id, now, batch=5000):
        """Delete the Scheduled auto runs after `now` of every version of the flow,
        in batches; returns how many."""
        total = 0
        for version_id in self._version_ids(flow_id):
            while True:
                ids = self._auto_run_ids(version_id, after=now, limit=batch)
                if ids:
                    with self.db.atomic():
                        total += self._delete_scheduled(ids)
                if len(ids) < batch:
                    break
        return total

    def _version_ids(self, flow_id):
        return [row[0] for row in self._group_ids(flow_id).tuples()]

    def _auto_run_ids(self, flow_id, after=None, before=None, limit=1000):
        query = m.FlowRun.select(m.FlowRun.id).where(auto_scheduled(flow_id))
        if after is not None:
            query = query.where(m.FlowRun.scheduled_start_time > after)
        if before is not None:
            query = query.where(m.FlowRun.scheduled_start_time <= before)
        return [row[0] for row in query.order_by(m.FlowRun.scheduled_start_time)
                .limit(limit).tuples()]

    def _delete_scheduled(self, ids):
        deleted = 0
        for i in range(0, len(ids), _ID_CHUNK):
            deleted += m.FlowRun.delete().where(
                m.FlowRun.id.in_(ids[i:i + _ID_CHUNK])
                & (m.FlowRun.state == StateName.SCHEDULED)).execute()
        return deleted

    def adopt_auto_runs_of_other_versions(self, flow_id, now, limit=5000):
        """After a flow is registered again: its older versions' auto runs that
        are still Scheduled are deleted when they lie in the future (the new
        version's schedule makes its own) and handed to the new version when
        they are due or late (so they run its code, and its late-run policy
        applies). At most `limit` runs per call; returns (adopted, deleted):
        fewer than `limit` each means nothing is left."""
        adopted = deleted = 0
        for version_id in self._version_ids(flow_id):
            if version_id == flow_id:
                continue
            room = limit - max(adopted, deleted)
            if room <= 0:
                break
            future = self._auto_run_ids(version_id, after=now, limit=room)
            due = self._auto_run_ids(version_id, before=now, limit=room)
            if not future and not due:
                continue
            with self.db.atomic():
                if future:
                    deleted += self._delete_scheduled(future)
                for i in range(0, len(due), _ID_CHUNK):
                    adopted += m.FlowRun.update(flow=flow_id, updated=now).where(
                        m.FlowRun.id.in_(due[i:i + _ID_CHUNK])
                        & (m.FlowRun.state == StateName.SCHEDULED)).execute()
        return adopted, deleted

    # -- late runs --------------------------------------------------------------
    def late_auto_runs(self, flow_id, before, limit=1000):
        """The flow's auto runs still Scheduled to start before `before`, oldest
        first: at most `limit` dicts with id and scheduled_start_time."""
        return [{"id": run_id, "scheduled_start_time": when} for run_id, when in
                m.FlowRun.select(m.FlowRun.id, m.FlowRun.scheduled_start_time)
                .where(auto_scheduled(flow_id)
                       & (m.FlowRun.scheduled_start_time < before))
                .order_by(m.FlowRun.scheduled_start_time).limit(limit).tuples()]


def auto_scheduled(flow_id, state=StateName.SCHEDULED):
    """Where a flow's auto-scheduled runs in `state` are (served by the flow run index)."""
    return ((m.FlowRun.flow == flow_id) & (m.FlowRun.auto_scheduled == True)  # noqa: E712
            & (m.FlowRun.state == state))


@statement("auto_run_summary")
def _auto_run_summary(flow_id, now):
    future = auto_scheduled(flow_id) & (m.FlowRun.scheduled_start_time > now)
    count = m.FlowRun.select(pw.fn.COUNT(m.FlowRun.id)).where(future)
    latest = m.FlowRun.select(pw.fn.MAX(m.FlowRun.scheduled_start_time)).where(future)
    oldest = m.FlowRun.select(pw.fn.MIN(m.FlowRun.scheduled_start_time)).where(
        auto_scheduled(flow_id))
    return pw.Select(columns=[count, latest, oldest])
