"""Every move of a flow run from one state to another, one method each: nothing
else writes a run's state column. A mixin of `Store` (see store.py).

    Scheduled --claim_runs--> Submitted --start_flow_run--> Running
        ^                        |                            |  heartbeat
        |  return_unstarted <----+                            |  finish_flow_run -> Success,
        |  restart_flow_run <---------------------------------+     Failed, ...
        +- reschedule_flow_run (a task retries later) <-------+  pause_flow_run -> Paused
    request_cancel: Scheduled/Submitted -> Cancelled, Running -> Cancelling;
    cancelled_flow_run: Cancelling -> Cancelled; fail_flow_run: -> Failed;
    skip_late_auto_runs: Scheduled -> Skipped.

Attempts fence the writers. A claim (or a start by hand) mints the run's next
attempt, and whoever holds that attempt owns the run. Every later write about
the run is one compare-and-set on the attempt and on the state its writer
judged, so a writer acting on something it read earlier, or a process that was
frozen while another attempt took over, changes nothing:

- moves made by the run's own process (start, heartbeat, task states, finish,
  reschedule, pause) raise `AttemptLost` when refused, and the process stops;
- moves made by services (agent, reaper, scheduler) and users return False
  when refused, and their caller lets it be.
"""

import itertools
import time

import peewee as pw

from ..core.states import (ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, UNFINISHED_TASK_STATES,
                           StateName)
from . import doorbell
from . import models as m
from . import statements
from .statements import statement
from .errors import AttemptLost, NotFound
from .identity import host_identity, new_id
from .scheduling import auto_scheduled

_RUNNING = (StateName.RUNNING, StateName.CANCELLING)
_ANY = object()  # a move that sets no condition on the run's heartbeat
_ONE_MORE = object()  # a move's value: one more than the column's


def agent_takes(run_labels, agent_labels, strict=False):
    """Does an agent with `agent_labels` take a run with `run_labels`?

    A run goes to an agent that has all its labels; a run without labels to
    any agent. A strict agent (Prefect 1's rule) takes a run without labels
    only when it has none itself.
    """
    run_labels = set(run_labels)
    if strict and not run_labels and agent_labels:
        return False
    return run_labels <= set(agent_labels)


class RunLifecycle:
    """Mixed into Store; uses `self.db`, the models and a few of Store's queries."""

    # -- claims (agents) --------------------------------------------------------
    def claim_runs(self, agent, labels, limit, now=None, scan=200, strict_labels=False,
                   runs_config=None, pages=10):
        """Claim up to `limit` due Scheduled runs this agent takes (see
        `agent_takes`); returns [(run id, attempt)]. With `runs_config` (a
        predicate over a flow's run config ref, None for none), a run whose flow
        has a run config the agent cannot run (a DockerRun for a process agent)
        is left for another agent.

        A run is claimed by one conditional UPDATE (Scheduled -> Submitted, the
        attempt up by one): of several agents racing for a run, exactly one gets
        it, and the attempt it gets is its own. Due runs are read `scan` at a
        time, oldest first, up to `pages` pages: runs this agent leaves (other
        labels, another agent kind, a full limit) cannot hide younger runs it
        would take. On SQLite each claim is its own short IMMEDIATE transaction;
        on PostgreSQL see `_claim_skipping_locked`.
        """
        now = time.time() if now is None else now
        label_limits = self.concurrency_limits("label")
        wanted = self._runs_to_claim(labels, now, scan, strict_labels, runs_config, pages)
        if self.db.for_update:
            return self._claim_skipping_locked(wanted, agent, label_limits, limit)
        claimed = []
        for run_id, flow_id, flow_limit, run_labels in wanted:
            if len(claimed) >= limit:
                break
            won = self._claim_one(run_id, agent, flow_id, flow_limit, run_labels, label_limits)
            if won is not None:
                claimed.append((run_id, won))
        return claimed

    def _runs_to_claim(self, labels, now, scan, strict_labels, runs_config, pages):
        """Due Scheduled runs an agent with `labels` would take, oldest first, as
        (run id, flow id, flow limit, run labels); read a page at a time, as
        the caller asks for more."""
        flows = {}  # flow id -> (settings, flow limit, whether this agent runs it)
        after = None
        for _ in range(pages):
            candidates = self._due_candidates(now, scan, after)
            for run_id, run_labels, flow_id, auto, scheduled, attempts in candidates:
                run_labels = set(m.from_json(run_labels))
                if not agent_takes(run_labels, labels, strict_labels):
                    continue
                if flow_id not in flows:
                    flows[flow_id] = self._flow_for_claims(flow_id, runs_config)
                settings, flow_limit, runs_it = flows[flow_id]
                if not runs_it:
                    continue  # e.g. a DockerRun: it waits for a Docker agent (see explain)
                # (A run claimed before, and restarted or returned, was not missed.)
                if auto and not attempts and self.late_policy_hold(flow_id, settings,
                                                                   scheduled, now):
                    continue  # the scheduler skips it
                yield run_id, flow_id, flow_limit, run_labels
            if len(candidates) < scan:
                return
            after = candidates[-1][4], candidates[-1][0]

    def _claim_skipping_locked(self, wanted, agent, label_limits, limit):
        """PostgreSQL: claim from `wanted` (oldest first) up to `limit` runs.

        Agents read the same oldest runs; instead of queueing on the row another
        agent is claiming, each locks what it can with FOR UPDATE SKIP LOCKED and
        passes over the rest. Runs under no limit are claimed a batch at a time
        (one transaction: lock, UPDATE, state events); a run under a limit in a
        transaction of its own, holding only that run's limit locks, so no two
        claims wait on each other in a circle.
        """
        claimed = []
        wanted = iter(wanted)
        while len(claimed) < limit:
            batch = list(itertools.islice(wanted, limit - len(claimed)))
            if not batch:
                break
            free = [run_id for run_id, flow_id, flow_limit, run_labels in batch
                    if not self._limited(flow_limit, run_labels, label_limits)]
            claimed.extend(self._claim_batch(free, agent))
            for run_id, flow_id, flow_limit, run_labels in batch:
                if run_id not in free and len(claimed) < limit:
                    won = self._claim_one(run_id, agent, flow_id, flow_limit, run_labels,
                                          label_limits)
                    if won is not None:
                        claimed.append((run_id, won))
        return claimed

    def _claim_batch(self, run_ids, agent):
        """PostgreSQL: claim those of `run_ids` still Scheduled and not being
        claimed by another agent, in one transaction; [(run id, attempt)]."""
        if not run_ids:
            return []
        now = time.time()
        message = f"Submitted to agent {agent}"
        with self.db.atomic():
            mine = [run_id for (run_id,) in m.FlowRun.select(m.FlowRun.id)
                    .where(m.FlowRun.id.in_(run_ids) & (m.FlowRun.state == StateName.SCHEDULED))
                    .order_by(m.FlowRun.id).for_update(skip_locked=True).tuples()]
            if not mine:
                return []
            won = dict(m.FlowRun.update(state=StateName.SUBMITTED, agent=agent, pid=None,
                                        heartbeat=None, attempt=m.FlowRun.attempt + 1,
                                        message=message, updated=now)
                       .where(m.FlowRun.id.in_(mine) & (m.FlowRun.state == StateName.SCHEDULED))
                       .returning(m.FlowRun.id, m.FlowRun.attempt).tuples().execute())
            m.StateEvent.insert_many(
                [(run_id, StateName.SUBMITTED, message, now) for run_id in sorted(won)],
                [m.StateEvent.flow_run, m.StateEvent.state, m.StateEvent.message,
                 m.StateEvent.time]).execute()
        return [(run_id, won[run_id]) for run_id in run_ids if run_id in won]

    @staticmethod
    def _limited(flow_limit, run_labels, label_limits):
        return bool(flow_limit) or any(label in label_limits for label in run_labels)

    def _due_candidates(self, now, scan, after):
        """Due Scheduled runs, oldest first, after (time, id) `after`. Read whole
        before any write: a claim begun while this connection still holds the
        SELECT's read snapshot is refused at once (a stale snapshot) instead of
        waiting for the lock."""
        if after is None:
            return statements.execute(self.db, "due_runs", now, scan).fetchall()
        return statements.execute(self.db, "due_runs_after", now, *after, scan).fetchall()

    def _flow_for_claims(self, flow_id, runs_config):
        row = statements.execute(self.db, "flow_settings_and_run_config", flow_id).fetchone()
        if row is None:  # deleted since its runs were read: nothing of it to run
            return {}, None, False
        settings, ref = (m.from_json(value) for value in row)
        settings = settings or {}
        runs_it = True if runs_config is None else runs_config(ref)
        return settings, settings.get("max_concurrent_runs"), runs_it

    def _claim_one(self, run_id, agent, flow_id, flow_limit, run_labels, label_limits):
        """The claim of one run: its attempt, or None when it is not this agent's
        (another claimed it first, or a limit is full)."""
        limited = self._limited(flow_limit, run_labels, label_limits)
        message = f"Submitted to agent {agent}"
        with self.db.atomic():
            if self.db.for_update and (
                    m.FlowRun.select(m.FlowRun.id)
                    .where((m.FlowRun.id == run_id) & (m.FlowRun.state == StateName.SCHEDULED))
                    .for_update(skip_locked=True).tuples().first()) is None:
                return None  # PostgreSQL: claimed, or being claimed, by another agent
            if limited and self._limit_full(flow_id, flow_limit, run_labels, label_limits):
                return None
            if statements.execute(self.db, "claim", agent, message, time.time(),
                                  run_id).rowcount != 1:
                return None
            self._event(run_id, StateName.SUBMITTED, message, time.time())
            return self._attempt(run_id)

    def claim_run(self, run_id, claimer):
        """Claim run `run_id` for `claimer` (a process that will start it itself, as
        `orchestrator run --local` does), if it is still Scheduled; returns the
        attempt, or None when someone else has it."""
        message = f"Submitted to {claimer}"
        with self.db.atomic():
            if statements.execute(self.db, "claim", claimer, message, time.time(),
                                  run_id).rowcount != 1:
                return None
            self._event(run_id, StateName.SUBMITTED, message, time.time())
            return self._attempt(run_id)

    def record_run_process(self, run_id, attempt, pid, process_id=None):
        """The agent started process `pid` (unique id `process_id`) for its claim:
        kept on the run with this host's identity, so that whoever looks next on
        this host can tell a process that is starting from none."""
        with self.db.atomic():
            return statements.execute(self.db, "run_process", pid, host_identity(),
                                      process_id or new_id(), run_id, attempt).rowcount == 1

    def stale_claims(self, agent, before):
        """Runs Submitted to `agent` before `before` (a restart of that agent may
        have lost them): dicts with id, attempt, pid (the process, if any) and
        host_id (where that pid means something)."""
        return list(m.FlowRun.select(m.FlowRun.id, m.FlowRun.attempt, m.FlowRun.pid,
                                     m.FlowRun.host_id).where(
            (m.FlowRun.state == StateName.SUBMITTED) & (m.FlowRun.agent == agent)
            & (m.FlowRun.updated < before)).dicts())

    def return_unstarted(self, run_id, attempt, message):
        """A claim that never started its run (its agent or process died first)
        goes back to Scheduled: the run never ran, so no restart is spent."""
        return self._move(run_id, StateName.SCHEDULED, message, came_from=(StateName.SUBMITTED,),
                          attempt=attempt, values=_UNCLAIMED)

    # -- the run's own process --------------------------------------------------
    def start_flow_run(self, run_id, pid, attempt=None, process_id=None):
        """Mark a run Running for process `pid`; returns the attempt it runs.

        With `attempt` (an agent's process), only a run Submitted on that
        attempt starts, else AttemptLost. Without (by hand), only a Scheduled
        run starts, and this start mints its attempt; else None. The process
        is recorded with its unique id (`process_id`, default a new one) and
        the identity of this host (the caller is the run's own process).
        """
        now = time.time()
        process = (pid, host_identity(), process_id or new_id())
        with self.db.atomic():
            if attempt is None:
                started = statements.execute(self.db, "start_by_hand", now, *process, run_id)
            else:
                started = statements.execute(self.db, "start_claimed", now, *process, run_id,
                                             attempt)
            if started.rowcount == 1:
                self._event(run_id, StateName.RUNNING, "Running flow.", now)
                return attempt or self._attempt(run_id)
        if attempt is None:
            return None
        raise self._lost(run_id, attempt)

    def heartbeat(self, run_id, attempt):
        """Record that attempt `attempt` of run `run_id` is alive; returns the
        run's state (Running, or Cancelling when a cancel was asked for)."""
        with self.db.atomic():
            if statements.execute(self.db, "beat_owned", time.time(), run_id,
                                  attempt).rowcount == 1:
                return statements.execute(self.db, "state_of", run_id).fetchone()[0]
        raise self._lost(run_id, attempt)

    def confirm_owner(self, run_id, attempt):
        """Raise AttemptLost unless the run is Running (or Cancelling) on `attempt`:
        a read, for a process about to go on (after loading its flow, after a
        stop), which must not wait for the write lock or a full disk."""
        row = statements.execute(self.db, "attempt_and_state", run_id).fetchone()
        if row is None or row[0] != attempt or row[1] not in _RUNNING:
            raise self._lost(run_id, attempt)

    def _confirm_owner(self, run_id, attempt, now):
        """Inside a write transaction of the run's process: is the run still its
        attempt's? (A write proves life, so the heartbeat moves too.) The UPDATE
        also locks the row until the transaction ends, on PostgreSQL as well."""
        if statements.execute(self.db, "beat_owned", now, run_id, attempt).rowcount != 1:
            raise self._lost(run_id, attempt)

    def finish_flow_run(self, run_id, attempt, state, message, **report):
        """The run's process records how the run ended (a terminal state), with
        the rest of what it reports (`record_run_report`'s keywords: tasks,
        events, artifacts, logs) in the same transaction."""
        if state not in TERMINAL_RUN_STATES:
            raise ValueError(f"{state!r} is not a state a flow run ends in; use one of "
                             f"{', '.join(TERMINAL_RUN_STATES)}")
        ended = None if state == StateName.SUCCESS else (
            StateName.CANCELLED if state == StateName.CANCELLED else StateName.FAILED,
            f"The flow run ended {state} before this task ended.")
        if not self._move(run_id, state, message, came_from=_RUNNING, attempt=attempt,
                          end=True, tasks_end_as=ended, report=report):
            raise self._lost(run_id, attempt)

    def reschedule_flow_run(self, run_id, attempt, when, message, **report):
        """A task retries at `when` (epoch seconds), too late to wait for in the
        process: the run goes back to Scheduled then, and resumes (with `report`,
        as finish_flow_run)."""
        if not self._move(run_id, StateName.SCHEDULED, message, came_from=_RUNNING, attempt=attempt,
                          values=dict(_UNCLAIMED, scheduled_start_time=when), report=report):
            raise self._lost(run_id, attempt)

    def pause_flow_run(self, run_id, attempt, message, **report):
        """A task paused the run (signals.PAUSE): its process ends, the run waits
        (with `report`, as finish_flow_run)."""
        if not self._move(run_id, StateName.PAUSED, message, came_from=_RUNNING, attempt=attempt,
                          values={"pid": None}, report=report):
            raise self._lost(run_id, attempt)

    # -- services: the agent and the reaper --------------------------------------
    def restart_flow_run(self, run_id, attempt, judged, message, beat=_ANY):
        """A run whose process was lost is Scheduled again (`max_restarts`); its
        task runs that had not ended are Failed with why. Only if it is still on
        `attempt` and in the state `judged` (and, with `beat`, its heartbeat has
        not moved since it was judged silent)."""
        return self._move(run_id, StateName.SCHEDULED, message, came_from=_states(judged),
                          attempt=attempt, beat=beat, tasks_end_as=(
                              StateName.FAILED, f"The flow run's process was lost before this task "
                              f"ended; the run starts again. {message}"),
                          values=dict(_UNCLAIMED, restarts=_ONE_MORE))

    def fail_flow_run(self, run_id, attempt, judged, message, beat=_ANY):
        """A run whose process was lost, or never started, is Failed, and so are
        its task runs that had not ended. Only if it is still on `attempt` and in
        the state `judged` (and, with `beat`, its heartbeat has not moved)."""
        return self._move(run_id, StateName.FAILED, message, came_from=_states(judged),
                          attempt=attempt, beat=beat, end=True, tasks_end_as=(
                              StateName.FAILED, f"The flow run failed before this task ended: "
                              f"{message}"))

    def cancelled_flow_run(self, run_id, attempt, message):
        """A run being cancelled whose process has ended is Cancelled, and so are
        its task runs that had not ended."""
        return self._move(run_id, StateName.CANCELLED, message, came_from=(StateName.CANCELLING,),
                          attempt=attempt, end=True, tasks_end_as=_TASKS_CANCELLED)

    # -- users --------------------------------------------------------------------
    def request_cancel(self, run_id):
        """Cancel a run: at once if it has no process yet, else ask its agent
        (state Cancelling). Returns the state it is in afterwards."""
        while True:
            row = m.FlowRun.select(m.FlowRun.state).where(m.FlowRun.id == run_id).first()
            if row is None:
                raise NotFound(f"No flow run with id {run_id}", kind="flow run",
                               name=run_id)
            state = row.state
            if state in TERMINAL_RUN_STATES or state == StateName.CANCELLING:
                return state
            if state == StateName.RUNNING:
                new, message = StateName.CANCELLING, "Cancel requested; stopping its process"
            else:
                new, message = StateName.CANCELLED, "Cancelled before it started"
            if self._move(run_id, new, message, came_from=(state,), end=new == StateName.CANCELLED,
                          tasks_end_as=_TASKS_CANCELLED if new == StateName.CANCELLED else None):
                return new
            # it moved on meanwhile: decide again

    # -- the scheduler --------------------------------------------------------------
    def skip_late_auto_runs(self, flow_id, before, message, now=None, limit=1000,
                            keep_latest=False):
        """Mark Skipped, with `message`, up to `limit` of the flow's auto runs still
        Scheduled before `before`, oldest first, in one short transaction.

        In `message`, ``{late}`` becomes each run's lateness in whole seconds
        (computed by the database: one UPDATE for the batch, never a row at a
        time) and ``{latest}`` the id of the run kept by `keep_latest`, which
        spares the latest late run. Returns (runs skipped, id kept or None).
        """
        now = time.time() if now is None else now
        with self.db.atomic():
            kept = None
            # Only runs never claimed were missed: a run restarted or returned after
            # a claim keeps its time (its context's date) and runs again.
            missed = auto_scheduled(flow_id) & (m.FlowRun.attempt == 0)
            if keep_latest:
                latest = (m.FlowRun.select(m.FlowRun.id, m.FlowRun.scheduled_start_time)
                          .where(missed & (m.FlowRun.scheduled_start_time < before))
                          .order_by(m.FlowRun.scheduled_start_time.desc()).limit(1)
                          .tuples().first())
                if latest is None:
                    return 0, None
                kept, before = latest
                message = message.replace("{latest}", str(kept))
            query = (m.FlowRun.select(m.FlowRun.id)
                     .where(missed & (m.FlowRun.scheduled_start_time < before))
                     .order_by(m.FlowRun.scheduled_start_time).limit(limit))
            if self.db.for_update:  # PostgreSQL: hold the rows against a racing claim
                query = query.for_update()
            ids = [row[0] for row in query.tuples()]
            text = _message_expression(message, now)
            for i in range(0, len(ids), _ID_CHUNK):
                chunk = ids[i:i + _ID_CHUNK]
                (m.FlowRun.update(state=StateName.SKIPPED, message=text, end_time=now, updated=now)
                 .where(m.FlowRun.id.in_(chunk) & (m.FlowRun.state == StateName.SCHEDULED))
                 .execute())
                # The rows are this transaction's alone (SQLite's write lock, or
                # PostgreSQL's row locks): every id in the chunk was changed.
                m.StateEvent.insert_from(
                    m.FlowRun.select(m.FlowRun.id, pw.Value(StateName.SKIPPED), m.FlowRun.message,
                                     pw.Value(now))
                    .where(m.FlowRun.id.in_(chunk)),
                    [m.StateEvent.flow_run, m.StateEvent.state, m.StateEvent.message,
                     m.StateEvent.time]).execute()
        return len(ids), kept

    # -- the one way a run's state changes ----------------------------------------
    def _move(self, run_id, state, message, *, came_from, attempt=None, beat=_ANY,
              values=None, end=False, tasks_end_as=None, report=None):
        """One compare-and-set: run `run_id` goes to `state` if it is in one of
        `came_from` (and on `attempt`, when given). Returns True when it moved.

        In the same transaction, once it moved: the run process's last `report`
        (`record_run_report`'s keywords), then, with `tasks_end_as` (a state and
        why), its task runs that had not ended end in that state.
        """
        now = time.time()
        changes = dict(values or {}, state=state, message=message, updated=now)
        if end:
            changes["end_time"] = now
        # The statement's form: the columns it sets (to a value, or one more than
        # they were) and what it checks.
        shape = (tuple((c, "+1") if v is _ONE_MORE else c for c, v in changes.items()),
                 tuple(came_from), attempt is not None,
                 "any" if beat is _ANY else "none" if beat is None else "equal")
        values = [v for v in changes.values() if v is not _ONE_MORE]
        conditions = [run_id] + ([attempt] if attempt is not None else []) + (
            [beat] if shape[3] == "equal" else [])
        with self.db.atomic():
            if statements.execute(self.db, "move", *values, *conditions,
                                  shape=shape).rowcount != 1:
                return False
            if report:
                self._write_report(run_id, **report)
            self._event(run_id, state, message, now)
            if tasks_end_as is not None:
                self._end_unfinished_tasks(run_id, *tasks_end_as, now)
        if state == StateName.SCHEDULED:
            doorbell.ring(self.db)
        return True

    def _end_unfinished_tasks(self, run_id, state, reason, now):
        statements.execute(self.db, "unfinished_tasks_events", state, reason, now, run_id)
        statements.execute(self.db, "unfinished_tasks_end", state, reason, now, run_id)

    def _event(self, run_id, state, message, now):
        statements.execute(self.db, "state_event", run_id, state, message, now)

    def _attempt(self, run_id):
        return statements.execute(self.db, "attempt_and_state", run_id).fetchone()[0]

    def _lost(self, run_id, attempt):
        """AttemptLost for a refused write of attempt `attempt`, saying who has the
        run now."""
        row = (m.FlowRun.select(m.FlowRun.attempt, m.FlowRun.state, m.FlowRun.message,
                                m.FlowRun.agent)
               .where(m.FlowRun.id == run_id).first())
        if row is None:
            return AttemptLost(f"Flow run {run_id} no longer exists; this process stops.",
                               run_id, attempt)
        if row.attempt != attempt:
            who = f" (agent {row.agent})" if row.agent else ""
            text = (f"Flow run {run_id}: attempt {row.attempt}{who} owns this run now, not "
                    f"attempt {attempt}; this process stops.")
        elif row.state in TERMINAL_RUN_STATES:
            text = (f"Flow run {run_id} was ended {row.state} by another process "
                    f"({row.message or 'no message'}); this process stops.")
        else:
            text = (f"Flow run {run_id} is {row.state} now ({row.message or 'no message'}), "
                    "not running in this process; this process stops.")
        return AttemptLost(text, run_id, attempt, row.attempt, row.state)


_TASKS_CANCELLED = (StateName.CANCELLED, "The flow run was cancelled before this task ended.")
# A run without a claim: no agent, no process, no heartbeat.
_UNCLAIMED = {"agent": None, "pid": None, "heartbeat": None}
_ID_CHUNK = 500


def _states(judged):
    return (judged,) if isinstance(judged, str) else tuple(judged)


def _message_expression(template, now):
    """`template` as an SQL text expression, ``{late}`` as each row's lateness."""
    parts = template.split("{late}")
    expression = pw.Value(parts[0])
    for part in parts[1:]:
        lateness = pw.Cast(pw.Value(now) - m.FlowRun.scheduled_start_time, "INTEGER")
        expression = expression.concat(lateness).concat(pw.Value(part))
    return expression


__all__ = ["RunLifecycle", "agent_takes", "ACTIVE_RUN_STATES"]


# -- the statements of the moves (store/statements.py) ---------------------------
def _due(now):
    return (m.FlowRun.state == StateName.SCHEDULED) & (m.FlowRun.scheduled_start_time <= now)


def _due_runs(where, scan):
    return (m.FlowRun.select(m.FlowRun.id, m.FlowRun.labels, m.FlowRun.flow,
                             m.FlowRun.auto_scheduled, m.FlowRun.scheduled_start_time,
                             m.FlowRun.attempt)
            .where(where).order_by(m.FlowRun.scheduled_start_time, m.FlowRun.id).limit(scan))


@statement("due_runs")
def _due_runs_first(now, scan):
    return _due_runs(_due(now), scan)


@statement("due_runs_after")  # the next page, after (time, id)
def _due_runs_after(now, when, run_id, scan):
    return _due_runs(_due(now) & ((m.FlowRun.scheduled_start_time > when)
                                  | ((m.FlowRun.scheduled_start_time == when)
                                     & (m.FlowRun.id > run_id))), scan)


@statement("flow_settings_and_run_config")
def _flow_settings_and_run_config(flow_id):
    return m.Flow.select(m.Flow.settings, m.Flow.run_config).where(m.Flow.id == flow_id)


@statement("claim")  # Scheduled -> Submitted, minting the next attempt
def _claim(agent, message, now, run_id):
    return m.FlowRun.update(state=StateName.SUBMITTED, agent=agent, pid=None, heartbeat=None,
                            attempt=m.FlowRun.attempt + 1, message=message, updated=now).where(
        (m.FlowRun.id == run_id) & (m.FlowRun.state == StateName.SCHEDULED))


@statement("run_process")
def _run_process(pid, host_id, process_id, run_id, attempt):
    return m.FlowRun.update(pid=pid, host_id=host_id, process_id=process_id).where(
        (m.FlowRun.id == run_id) & (m.FlowRun.attempt == attempt)
        & (m.FlowRun.state == StateName.SUBMITTED))


def _owned(run_id, attempt):
    return ((m.FlowRun.id == run_id) & (m.FlowRun.attempt == attempt)
            & m.FlowRun.state.in_(list(_RUNNING)))


def _start(now, pid, host_id, process_id):
    return dict(state=StateName.RUNNING, message="Running flow.", start_time=now,
                heartbeat=now, pid=pid, host_id=host_id, process_id=process_id, updated=now)


@statement("start_claimed")
def _start_claimed(now, pid, host_id, process_id, run_id, attempt):
    return m.FlowRun.update(**_start(now, pid, host_id, process_id)).where(
        (m.FlowRun.id == run_id) & (m.FlowRun.state == StateName.SUBMITTED)
        & (m.FlowRun.attempt == attempt))


@statement("start_by_hand")  # mints the run's next attempt
def _start_by_hand(now, pid, host_id, process_id, run_id):
    return m.FlowRun.update(**_start(now, pid, host_id, process_id), agent=None,
                            attempt=m.FlowRun.attempt + 1).where(
        (m.FlowRun.id == run_id) & (m.FlowRun.state == StateName.SCHEDULED))


@statement("beat_owned")
def _beat_owned(now, run_id, attempt):
    return m.FlowRun.update(heartbeat=now).where(_owned(run_id, attempt))


@statement("state_of")
def _state_of(run_id):
    return m.FlowRun.select(m.FlowRun.state).where(m.FlowRun.id == run_id)


@statement("attempt_and_state")
def _attempt_and_state(run_id):
    return m.FlowRun.select(m.FlowRun.attempt, m.FlowRun.state).where(m.FlowRun.id == run_id)


@statement("state_event")
def _state_event(run_id, state, message, now):
    return m.StateEvent.insert(flow_run=run_id, state=state, message=message, time=now)


def _unfinished(run_id):
    return (m.TaskRun.flow_run == run_id) & m.TaskRun.state.in_(list(UNFINISHED_TASK_STATES))


@statement("unfinished_tasks_events")
def _unfinished_tasks_events(state, reason, now, run_id):
    return m.StateEvent.insert_from(
        m.TaskRun.select(m.TaskRun.flow_run, m.TaskRun.task_slug, m.TaskRun.map_index,
                         state, reason, now).where(_unfinished(run_id)),
        [m.StateEvent.flow_run, m.StateEvent.task_slug, m.StateEvent.map_index,
         m.StateEvent.state, m.StateEvent.message, m.StateEvent.time])


@statement("unfinished_tasks_end")
def _unfinished_tasks_end(state, reason, now, run_id):
    return m.TaskRun.update(state=state, message=reason, end_time=now).where(
        _unfinished(run_id))


# The moves of a run's own process, built ahead: finishing, and going back to
# Scheduled (a retry later) or to Paused.
_RUN_PROCESS_MOVES = (
    (("state", "message", "updated", "end_time"), _RUNNING, True, "any"),
    (("agent", "pid", "heartbeat", "scheduled_start_time", "state", "message", "updated"),
     _RUNNING, True, "any"),
    (("pid", "state", "message", "updated"), _RUNNING, True, "any"),
)


@statement("move", shaped=True, shapes=_RUN_PROCESS_MOVES)
def _move(shape, values):
    """A run's compare-and-set: `shape` is (the columns set, the states it may
    come from, whether on an attempt, and how its heartbeat is checked: "any",
    "none" (no heartbeat) or "equal")."""
    columns, came_from, on_attempt, beat = shape
    values = iter(values)
    changes = {}
    for column in columns:
        if isinstance(column, tuple):  # (column, "+1")
            field = getattr(m.FlowRun, column[0])
            changes[field] = field + 1
        else:
            changes[getattr(m.FlowRun, column)] = next(values)
    where = (m.FlowRun.id == next(values)) & m.FlowRun.state.in_(list(came_from))
    if on_attempt:
        where &= m.FlowRun.attempt == next(values)
    if beat == "none":
        where &= m.FlowRun.heartbeat.is_null()
    elif beat == "equal":
        where &= m.FlowRun.heartbeat == next(values)
    return m.FlowRun.update(changes).where(where)
