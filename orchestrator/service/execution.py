"""Executing a flow run from the store: what `orchestrator execute RUN_ID` does.

The run's flow is loaded from its storage, its parameters checked, and it runs
with a `StoreReporter`: task-run states, artifacts and log lines are queued and
written by one background thread in batches (a transaction every ~50 ms or 500
rows), so the run never waits on the disk except at its end. Checkpointing is on:
each task's result is written under `[results] location` (default
`$ORCHESTRATOR_HOME/results`; a path or URL every host reads when several hosts
share the database), and a run resumed after a RETRY with a later start time
reuses the results of the tasks that already finished, or fails saying they
cannot be read; it never runs them again silently.
"""

import contextlib
import datetime as _dt
import errno
import logging
import os
import select
import signal
import sys
import threading
import time
import uuid

from .. import exit_codes
from ..core.states import StateName
from ..engine.artifacts import ArtifactNotFound
from ..config import load_config
from ..core import states as st
from ..core.results import PackedResult
from ..core.task import Parameter
from ..engine import run_logging
from ..engine.flow_runner import FlowRunner
from ..engine.reporter import ARTIFACT_KEEPER, Reporter
from ..exceptions import OrchestratorError, ResultError
from ..store import (TERMINAL_STATES, AttemptLost, NotFound, OutageLog, Store,
                    StoreUnavailable)
from ..store.identity import RUN_PROCESS_ID_ENV

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
FLUSH_ROWS = 500
# While the store cannot be written, a run keeps at most this many log lines
# waiting (and counts the ones it drops); task states are all kept.
MAX_WAITING_LOGS = 100_000
RETRY_SECONDS = 1.0  # between tries to write while the store cannot be written
TERM_FLUSH_SECONDS = 5.0  # on SIGTERM, at most this long to write what the run reported
_PLAIN_STEPS = (StateName.RUNNING, StateName.SUCCESS, StateName.MAPPED)
# Retries due within this many seconds are waited for in the run's process;
# later ones end the process and the run goes back to Scheduled.
INLINE_RETRY_SECONDS = 600.0


class StoreTaskSlots:
    """Tag limits kept in the store, from the run's process or from a Dask worker:
    it pickles as the store's URL and opens the store where it is unpickled
    (SQLite for workers on this host; PostgreSQL for workers anywhere).

    A slot is held by the run's attempt and the task run (slug and map index),
    never by a process: a task that Dask runs again on another worker, after
    its worker was lost, finds its own slot instead of waiting for it. Each
    slot has a lease that the process holding it renews while the task runs,
    so a slot of a dead process or a lost worker comes back when it runs out.
    """

    def __init__(self, store, run_id, tag_limits=None, attempt=None, lease=None):
        self.store = store
        self.url = store.url
        self.run_id = run_id
        self.attempt = attempt
        self.lease = TASK_SLOT_LEASE_SECONDS if lease is None else lease
        self._tag_limits = None if tag_limits is None else dict(tag_limits)
        self._limited = None

    @property
    def tag_limits(self):
        """{tag: limit}, read from the store when a task with tags first asks
        (a run whose tasks have none never reads them)."""
        if self._tag_limits is None:
            self._tag_limits = dict(self.store.concurrency_limits("tag"))
        return self._tag_limits

    @property
    def limited_tags(self):
        if self._limited is None:
            self._limited = frozenset(self.tag_limits)
        return self._limited

    def __getstate__(self):
        return {"url": self.url, "run_id": self.run_id, "tag_limits": self.tag_limits,
                "attempt": self.attempt, "lease": self.lease}

    def __setstate__(self, state):
        self.__init__(_worker_store(state["url"]), state["run_id"], state["tag_limits"],
                      state.get("attempt"), state.get("lease"))

    def acquire_task_slots(self, tags, holder):
        """`holder` names the task run (slug, map index), the same wherever it runs."""
        holder = f"{self.run_id}:{self.attempt}:{holder}"
        _slot_leases.hold(self.store, holder, self.lease)
        try:
            for tag in tags:
                limit = self.tag_limits[tag]
                waited = 0.0
                while not self.store.try_take_task_slot(tag, limit, self.run_id, holder,
                                                        attempt=self.attempt,
                                                        lease=self.lease):
                    if waited == 0.0:
                        logger.info("Waiting for a slot of tag %r (at most %d at once)",
                                    tag, limit)
                    time.sleep(0.1)
                    waited += 0.1
        except BaseException:
            self.release_task_slots(holder)
            raise
        return holder

    def release_task_slots(self, token):
        _slot_leases.drop(token)
        self.store.release_task_slots(token)


TASK_SLOT_LEASE_SECONDS = 30.0  # [services] task_slot_lease


class _SlotLeases:
    """Renews the leases of the task slots held in this process, from one
    background thread (a Dask worker holds slots for many tasks)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held = {}  # holder -> (store, lease)
        self._thread = None
        self._pid = None

    def hold(self, store, holder, lease):
        with self._lock:
            self._held[holder] = (store, lease)
            if self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # (a forked child has no thread yet)
                self._thread = threading.Thread(target=self._renew, daemon=True,
                                                name="orchestrator-slot-leases")
                self._thread.start()

    def drop(self, holder):
        with self._lock:
            self._held.pop(holder, None)

    def _renew(self):
        while True:
            with self._lock:
                held = dict(self._held)
            time.sleep(min((lease for _, lease in held.values()), default=3.0) / 3)
            by_store = {}
            for holder, (store, lease) in held.items():
                by_store.setdefault((id(store), lease), (store, lease, []))[2].append(holder)
            for store, lease, holders in by_store.values():
                with self._lock:
                    holders = [h for h in holders if h in self._held]
                try:
                    store.renew_task_slots(holders, lease)
                except Exception as exc:  # the next round tries again; the lease is long
                    logger.warning("Could not renew the leases of task slots %s: %s",
                                   ", ".join(holders), exc)


_slot_leases = _SlotLeases()


class StoreArtifacts:
    """Where `orchestrator.artifacts` keeps a run's artifacts (the run's context
    carries it to every task). In the run's process a change goes to the
    StoreReporter, which writes it with the task states, so the task never
    waits for the disk. Pickled to a Dask worker it is the store's URL and the
    run's attempt, and writes there itself, in one short transaction; either
    way every write is fenced by the attempt, as `record_task_runs` is."""

    def __init__(self, store, run_id, attempt, reporter=None, url=None):
        self._store = store
        self.url = store.url if store is not None else url
        self.run_id = run_id
        self.attempt = attempt
        self.reporter = reporter
        self._lock = threading.Lock()
        self._made = set()      # ids made through this object and not deleted
        self._deleted = set()

    def __getstate__(self):
        return {"url": self.url, "run_id": self.run_id, "attempt": self.attempt}

    def __setstate__(self, state):
        self.__init__(None, state["run_id"], state["attempt"], url=state["url"])

    @property
    def store(self):
        """On a worker, opened at the first artifact (a task that makes none opens nothing)."""
        if self._store is None:
            self._store = _worker_store(self.url)
        return self._store

    def create(self, slug, map_index, kind, text):
        artifact_id = str(uuid.uuid4())
        when = time.time()
        if self.reporter is not None:
            self.reporter.artifact(artifact_id, slug, map_index, kind, text, when)
        else:
            self.store.record_artifacts(self.run_id, self.attempt, [{
                "action": "create", "id": artifact_id, "task_slug": slug,
                "map_index": map_index, "kind": kind, "text": text, "time": when}])
        with self._lock:
            self._made.add(artifact_id)
        return artifact_id

    def update(self, artifact_id, kind, text):
        self._check_ours(artifact_id)
        when = time.time()
        if self.reporter is not None:
            self.reporter.update_artifact(artifact_id, kind, text, when)
        elif self.store.record_artifacts(self.run_id, self.attempt, [{
                "action": "update", "id": artifact_id, "kind": kind, "text": text,
                "time": when}]) != [1]:
            raise self._not_found(artifact_id, gone=True)

    def delete(self, artifact_id):
        self._check_ours(artifact_id)
        if self.reporter is not None:
            self.reporter.delete_artifact(artifact_id)
        elif self.store.record_artifacts(self.run_id, self.attempt, [
                {"action": "delete", "id": artifact_id}]) != [1]:
            raise self._not_found(artifact_id, gone=True)
        with self._lock:
            self._made.discard(artifact_id)
            self._deleted.add(artifact_id)

    def _check_ours(self, artifact_id):
        """Is `artifact_id` an artifact of this run? Made here: known at once;
        made elsewhere (a worker, an earlier attempt): the store has it."""
        with self._lock:
            if artifact_id in self._made:
                return
            if artifact_id in self._deleted:
                raise self._not_found(artifact_id, gone=True)
        try:
            owner = self.store.get_artifact(artifact_id)["flow_run_id"]
        except NotFound:
            raise self._not_found(artifact_id) from None
        if owner != self.run_id:
            raise ArtifactNotFound(
                f"Artifact {artifact_id!r} belongs to flow run {owner}, not to this run "
                f"({self.run_id}); a task can change only its own run's artifacts")

    def _not_found(self, artifact_id, gone=False):
        return ArtifactNotFound(
            f"Flow run {self.run_id} has no artifact {artifact_id!r}"
            f"{' (it was deleted)' if gone else ''}; pass an id that "
            "create_markdown_artifact or create_link_artifact returned in this run")


def _task_slot_lease(config=None):
    """`[services] task_slot_lease` (seconds; checked when the config loads)."""
    return (config or load_config())["services"]["task_slot_lease"]


_worker_stores = {}


def _worker_store(url):
    """One Store per database URL in a worker process."""
    store = _worker_stores.get(url)
    if store is None:
        store = _worker_stores[url] = Store.open(url=url)
    return store


class StoreReporter(Reporter):
    """Collects task states, artifacts and log rows; a writer thread stores them in
    batches.

    The run's threads only append to a list under a lock; every FLUSH_SECONDS
    the writer takes the lists whole and writes them in one transaction, so
    the per-line cost on the writer's side is the database's, not Python's.

    Given the run's `watcher` (its Heartbeat), the writer starts only once a
    row has waited FLUSH_SECONDS (the watcher starts it then), a batch is full
    or a flush is asked for: a run that ends sooner writes everything with its
    final state (`take_rest`), and never pays for the thread.
    """

    def __init__(self, store, run_id, attempt, ownership=None, config=None, watcher=None):
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.ownership = ownership
        self._slots = StoreTaskSlots(store, run_id, None, attempt, _task_slot_lease(config))
        self._lock = threading.Lock()
        self._tasks = []
        self._logs = []
        self._artifacts = []   # changes, in the order the run's tasks made them
        self._wake = threading.Condition(self._lock)
        self._written = threading.Condition(self._lock)
        self._generation = 0   # batches taken by the writer
        self._done_generation = 0   # batches written
        self._stopping = False
        self._keep_rest = False  # stopping without writing what is left (take_rest)
        self._flush_requested = False
        self._writer_asked = False  # the watcher is to start the writer
        # What was taken but not yet written: kept across tries while the store
        # cannot be written (a full disk), so no state is lost.
        self._pending = _Pending()
        self._error = None
        self._watcher = watcher
        self._thread = None  # the writer, once started
        if watcher is None:
            self._start_writer()

    def _start_writer(self, at_once=False):
        """Start the writer thread, unless it is started or the reporter stopping;
        `at_once`: its first batch now, not FLUSH_SECONDS later."""
        with self._lock:
            self._flush_requested = self._flush_requested or at_once
            self._start_writer_locked()

    def _start_writer_locked(self):
        # (Its loop begins by taking the lock: it waits until the caller lets go.)
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._write_loop, daemon=True,
                                            name=f"orchestrator-writer-{self.run_id}")
            self._thread.start()

    def _added(self, full):
        """Under the lock, after a row was added: wake the writer when `full`; with
        no writer yet, start it (full), or have the watcher start it once this
        row has waited FLUSH_SECONDS."""
        if self._thread is not None:
            if full:
                self._wake.notify()
        elif full:
            self._flush_requested = True
            self._start_writer_locked()
        elif not self._writer_asked:
            self._writer_asked = True
            self._watcher.call_at(time.monotonic() + FLUSH_SECONDS,
                                  lambda: self._start_writer(at_once=True))

    @property
    def limited_tags(self):
        return self._slots.limited_tags

    def acquire_task_slots(self, tags, holder):
        return self._slots.acquire_task_slots(tags, holder)

    def release_task_slots(self, token):
        self._slots.release_task_slots(token)

    def task_slots(self):
        return self._slots

    # called from the run's threads: no I/O here
    def task_state(self, slug, task_name, map_index, state, run_count):
        row = (slug, task_name, -1 if map_index is None else map_index,
               type(state).__name__, state.message, state.location, run_count, time.time())
        with self._lock:
            self._tasks.append(row)
            self._added(len(self._tasks) >= FLUSH_ROWS)

    def artifact(self, artifact_id, slug, map_index, kind, text, when):
        with self._lock:
            self._artifacts.append({"action": "create", "id": artifact_id, "task_slug": slug,
                                    "map_index": map_index, "kind": kind, "text": text,
                                    "time": when})
            self._added(False)

    def update_artifact(self, artifact_id, kind, text, when):
        with self._lock:
            self._artifacts.append({"action": "update", "id": artifact_id, "kind": kind,
                                    "text": text, "time": when})
            self._added(False)

    def delete_artifact(self, artifact_id):
        with self._lock:
            self._artifacts.append({"action": "delete", "id": artifact_id})
            self._added(False)

    def artifact_keeper(self):
        return StoreArtifacts(self.store, self.run_id, self.attempt, reporter=self)

    def log(self, row):
        with self._lock:
            self._logs.append(row)
            self._added(len(self._logs) >= FLUSH_ROWS * 20)

    def flush(self, timeout=None):
        """Block until everything collected so far is written (or `timeout`
        seconds have passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._start_writer()
        with self._lock:
            target = self._generation + 1
            self._flush_requested = True
            self._wake.notify()
            while self._done_generation < target and self._thread is not None \
                    and self._thread.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    return
                self._written.wait(1 if deadline is None
                                   else min(1, max(0.01, deadline - time.monotonic())))
        if self._error is not None:
            raise self._error

    def close(self):
        if self._stopping:
            return
        self.flush()
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(30)

    def take_rest(self):
        """Stop the writer and return what it has not written, as keyword
        arguments of the store's report (tasks, events, artifacts, logs): the run's
        final state is written with them, in one transaction. Raises what the
        writer met (AttemptLost, ...), as a flush does."""
        with self._lock:
            self._stopping = self._keep_rest = True
            self._wake.notify()
        # Until it has ended: a batch it is writing (waiting for the database's
        # lock) is written or kept in the pending report, never both. (None was
        # started: the run ended before a row had waited FLUSH_SECONDS.)
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        with self._lock:
            taken = self._take()
        self._add(taken)
        while not self._results_written(self._pending.merged):
            time.sleep(RETRY_SECONDS)  # the disk is full: the states wait for their results
        with self._lock:
            taken = self._take()  # (a line saying results were lost)
        self._add(taken)
        return self._pending.report(self.run_id)

    def _take(self):
        """Under the lock: the lists the run's threads filled, swapped for new ones
        (the run's threads wait on the lock only for the swap)."""
        taken = self._tasks, self._logs, self._artifacts
        self._tasks, self._logs, self._artifacts = [], [], []
        self._generation += 1
        return taken

    def _add(self, taken):
        """Add what `_take` took to the pending report."""
        tasks, logs, artifacts = taken
        pending = self._pending
        for item in tasks:
            self._merge_task(pending.merged, pending.events, item)
        pending.logs.extend(logs)
        pending.artifacts.extend(artifacts)

    def _write_loop(self):
        pending = self._pending
        while True:
            with self._lock:
                # One batch per FLUSH_SECONDS, sooner when a flush is asked for.
                if not (self._flush_requested or self._stopping):
                    self._wake.wait(FLUSH_SECONDS)
                if self._keep_rest:
                    return  # the run writes the rest with its final state
                self._flush_requested = False
                taken = self._take()
                generation = self._generation
                stopping = self._stopping
            self._add(taken)
            try:
                if (pending.merged or pending.events) \
                        and not self._results_written(pending.merged):
                    with self._lock:
                        self._wake.wait(RETRY_SECONDS)
                    continue  # the disk is full: the states wait for their results
                if pending:
                    self.store.record_run_report(self.run_id, self.attempt,
                                                 **pending.report(self.run_id))
                pending.clear()
                _outage.ok()
            except AttemptLost as exc:
                if self.ownership is not None:
                    self.ownership.lost(exc)
                self._error = exc
                pending.clear()
            except StoreUnavailable as exc:
                _outage.failed(f"Flow run {self.run_id}", exc)
                pending.keep_logs(MAX_WAITING_LOGS)
                with self._lock:
                    self._wake.wait(RETRY_SECONDS)
                continue  # not written: a flush waits on
            except Exception as exc:  # surfaced to the run at its next flush
                self._error = OrchestratorError(
                    f"Writing run {self.run_id} to the store failed: {exc}")
                pending.clear()
            with self._lock:
                self._done_generation = generation
                self._written.notify_all()
            if stopping:
                return

    def _results_written(self, rows):
        """Write the results these task states name before the states: a stored
        location then always has its bytes, so a resumed run that cannot read one
        knows they are elsewhere (another host's home), not lost in a crash.
        False while the disk is full (the caller tries again)."""
        if not any(row["result_location"] for row in rows.values()):
            return True
        try:
            PackedResult.flush_all()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                _outage.failed(f"The task results of flow run {self.run_id}", exc)
                return False
            self._results_lost(rows, exc)
        except OrchestratorError as exc:
            self._results_lost(rows, exc)
        return True

    def _results_lost(self, rows, exc):
        """Results that could not be written (not for want of space): their task
        states are kept without a location, so none points at bytes that are not
        there, and the run's log says what a resumed run will do."""
        names = sorted({row["task_name"] for row in rows.values() if row["result_location"]})
        for row in rows.values():
            row["result_location"] = None
        text = (f"The results of {', '.join(repr(n) for n in names[:10])}"
                f"{', ...' if len(names) > 10 else ''} could not be written ({exc}); if the "
                "run resumes later, these tasks run again.")
        logger.warning("Flow run %s: %s", self.run_id, text)
        self.log((self.run_id, None, None, time.time(), logging.WARNING, logger.name, text))

    @staticmethod
    def _merge_task(tasks, events, item):
        slug, name, map_index, state, message, location, run_count, when = item
        row = tasks.get((slug, map_index))
        if row is None:
            row = tasks[(slug, map_index)] = {
                "task_slug": slug, "task_name": name, "map_index": map_index,
                "start_time": None, "end_time": None, "run_count": run_count or 0}
        row.update(state=state, message=message, result_location=location)
        if run_count:
            row["run_count"] = run_count
        if state == StateName.RUNNING:
            row["start_time"] = row["start_time"] or when
        elif state in TERMINAL_STATES or state == StateName.MAPPED:
            row["end_time"] = when
        if state not in _PLAIN_STEPS:
            # The task-run row's start and end times already tell Running and
            # Success; history rows are kept for what they do not tell.
            events.append({"task_slug": slug, "map_index": map_index, "state": state,
                           "message": message, "time": when})


class _Pending:
    """A run's report not yet written: task runs (merged by slug and map index)
    and their events, artifact changes, log rows, and how many lines were
    dropped while the store could not be written."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.merged, self.events, self.artifacts, self.logs, self.dropped = {}, [], [], [], 0

    def __bool__(self):
        return bool(self.merged or self.events or self.artifacts or self.logs or self.dropped)

    def keep_logs(self, most):
        if len(self.logs) > most:
            self.dropped += len(self.logs) - most
            del self.logs[:len(self.logs) - most]

    def report(self, run_id):
        logs = self.logs + [_lost_lines_row(run_id, self.dropped)] if self.dropped else self.logs
        return {"tasks": list(self.merged.values()), "events": self.events,
                "artifacts": self.artifacts, "logs": logs}


class Heartbeat:
    """The run process's watcher, one thread from the run's start (loading a flow
    may take a while) to its final state:

    - every `interval` seconds it records that the run is alive (None: the flow
      asked for no heartbeat), so a run stuck in one long task still shows it is
      there; a beat that is refused (another attempt owns the run) stops the
      process, unless the process is recording its own final state
      (`finishing()`): a beat that waited on that write is refused by it;
    - `terminate(why)` asks it to stop the run (`RunOwnership.terminate`): a
      signal handler may ask, since asking takes no lock the run's threads hold;
    - `call_at(when, function)` has it call `function` then (the run's reporter
      has its writer thread started so, once a row has waited its batch's time).
    """

    def __init__(self, store, run_id, attempt, interval, ownership):
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.interval = None if interval is None else float(interval)
        self.ownership = ownership
        self._finishing = False
        self._why = None  # why the run is to stop, once asked
        self._call = None  # (when, function): a call asked of the watcher (call_at)
        # The watcher sleeps on a pipe, woken by a byte written to it: a signal
        # handler may write one (it could not set an Event whose lock the thread
        # it interrupted holds).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name=f"orchestrator-heartbeat-{run_id}")
        self._thread.start()

    def _watch(self):
        beat_at = None if self.interval is None else time.monotonic() + self.interval
        while True:
            call = self._call
            due = [t for t in (beat_at, call and call[0]) if t is not None]
            self._sleep(max(0.0, min(due) - time.monotonic()) if due else None)
            if self._why is not None:
                self.ownership.terminate(self._why)  # never returns
            if self._stopped:
                return
            now = time.monotonic()
            call = self._call
            if call is not None and call[0] <= now:
                self._call = None
                try:
                    call[1]()
                except Exception:  # the watcher goes on: beats and stopping the run
                    logger.warning("Flow run %s: a call of its watcher failed", self.run_id,
                                   exc_info=True)
            if beat_at is not None and beat_at <= now:
                wait = self._beat()
                beat_at = None if wait is None else time.monotonic() + wait

    def call_at(self, when, function):
        """Have the watcher's thread call `function()` at `when` (time.monotonic());
        one call at a time (a later one replaces it)."""
        self._call = (when, function)
        self._wake()

    def _wake(self):
        pipe = self._wake_w
        if pipe is not None:
            try:
                os.write(pipe, b"\0")
            except OSError:  # full: it is woken already
                pass

    def _sleep(self, seconds):
        select.select([self._wake_r], [], [], seconds)
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass

    def _beat(self):
        """One beat; the seconds until the next."""
        try:
            state = self.store.heartbeat(self.run_id, self.attempt)
            if state == StateName.CANCELLING and self.ownership.agent is None \
                    and not self._finishing:
                # No agent watches this process: it stops itself.
                self.ownership.terminate("a cancel was asked for")
        except AttemptLost as exc:
            if self._finishing:
                self.interval = None  # the final state is recorded: no more beats
                return None
            self.ownership.lost(exc)
        except StoreUnavailable as exc:
            # Beat again soon: the reaper counts silence from when the store
            # could be written again, so the first beat after must come quickly.
            _outage.failed(f"The heartbeat of flow run {self.run_id}", exc)
            return min(RETRY_SECONDS, self.interval)
        except Exception:  # a missed beat is not worth failing the run
            logger.warning("Heartbeat of run %s could not be recorded", self.run_id,
                           exc_info=True)
        return self.interval

    def terminate(self, why):
        """Ask the watcher to stop the run (safe in a signal handler)."""
        self._why = why
        self._wake()

    def finishing(self):
        """The process is about to record how the run ended: a refusal from now on
        is that record's doing, not another attempt's."""
        self._finishing = True

    def stop(self):
        self._stopped = True
        self._wake()
        self._thread.join(5)
        if not self._thread.is_alive():
            pipe, self._wake_w = self._wake_w, None  # (then closed: none writes to it)
            os.close(pipe)
            os.close(self._wake_r)


class RunOwnership:
    """How a run's process stops before its flow ends, from any thread:

    - `lost()`: its run is no longer its own (another attempt took it over, or
      another process ended it); it says so in its stderr and in the run's log
      and stops at once, so no further task starts;
    - `terminate()`: it was asked to stop (SIGTERM, or a cancel of a run that no
      agent watches); it writes what the run reported so far and, for a cancel
      with no agent to record it, records the run Cancelled.

    Started by an agent, it leads its process group, and takes the processes its
    tasks started with it when it loses its run.
    """

    def __init__(self, store, run_id, attempt, agent=None):
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.agent = agent
        self.leader = agent is not None and os.getpgrp() == os.getpid()
        self.reporter = None  # set once the run reports
        self._lock = threading.Lock()
        self._stopping = False

    def _stop_once(self):
        """The first caller goes on to end the process; any other waits for that."""
        with self._lock:
            stopping, self._stopping = self._stopping, True
        if stopping:
            threading.Event().wait()

    def terminate(self, why):
        """Stop the run: write what it reported (for at most TERM_FLUSH_SECONDS),
        record it Cancelled if it is being cancelled and no agent will, and exit
        143 (as SIGTERM's default would). Never returns."""
        self._stop_once()
        logger.warning("Flow run %s: stopping (%s)", self.run_id, why)
        try:
            if self.reporter is not None:
                self.reporter.flush(timeout=TERM_FLUSH_SECONDS)
            if self.agent is None:
                self.store.cancelled_flow_run(self.run_id, self.attempt,
                                              f"Cancelled on request; its process stopped "
                                              f"({why}).")
        except Exception:  # the store may be full: the reaper has the last word
            pass
        finally:
            os._exit(128 + signal.SIGTERM)

    def lost(self, exc):
        """Stop the process for AttemptLost `exc`; never returns."""
        self._stop_once()
        try:
            sys.stderr.write(f"orchestrator execute: {exc}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        log_lost(self.store, self.run_id, exc)
        if self.leader:
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(exit_codes.TAKEN_OVER)


def log_lost(store, run_id, exc):
    """Put the line saying why this process stops in the run's log (unfenced:
    the line tells what a process of an earlier attempt did)."""
    try:
        store.write_logs([(run_id, None, None, time.time(), logging.WARNING, logger.name,
                           str(exc))])
    except Exception:  # the store may be what failed; stderr has the line too
        pass


def _lost_lines_row(run_id, count):
    return (run_id, None, None, time.time(), logging.WARNING, logger.name,
            f"{count} log lines of this run were dropped while the store could not be "
            "written.")


_outage = OutageLog(logger)


def _until_written(run_id, what, write):
    """Call `write` until it works while the disk (or the store) is full, saying
    so on stderr once a minute: the run's work is done and must be recorded."""
    said = None
    while True:
        try:
            return write()
        except (StoreUnavailable, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if said is None or time.monotonic() - said > OutageLog.EVERY:
                said = time.monotonic()
                print(f"orchestrator execute: flow run {run_id}: cannot {what} yet ({exc}); "
                      "trying again until there is room.", file=sys.stderr, flush=True)
            time.sleep(RETRY_SECONDS)


class StoreLogHandler(logging.Handler):
    """Sends the run's log records to the reporter; hides secret values."""

    def __init__(self, reporter, run_id, redact=()):
        super().__init__(logging.DEBUG)
        self.reporter = reporter
        self.run_id = run_id
        self.redact = redact

    def emit(self, record):
        try:
            run_logging.stamp_record(record)
            message = record.__dict__.get("message") or record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                message = f"{message}\n{record.exc_text}"
            for secret in self.redact:
                if secret:
                    message = message.replace(secret, "********")
            map_index = getattr(record, "map_index", None)
            self.reporter.log((self.run_id, getattr(record, "task_slug", None), map_index,
                               record.created, record.levelno, record.name, message))
        except Exception:  # logging must never break the run
            self.handleError(record)


class _RevealedSecrets:
    """Iterates over the secret values read so far, at the time of each log line."""

    def __iter__(self):
        return iter(run_logging.redacted_values())


def _restore_task_states(store, run, flow, location):
    """Finished task states of an earlier attempt of this run, with their results.

    A finished task whose result cannot be read (an earlier attempt wrote it on
    another host, under a results location this host does not see) is not run
    again: that would repeat what it did (a file moved, a mail sent). The run
    fails instead, naming the tasks, where their results were looked for, and
    the setting that puts results where every host reads them.
    """
    by_slug = {slug: task for task, slug in flow.slugs.items()}
    restored, unreadable = {}, []
    for row in store.task_runs(run["id"]):
        task = by_slug.get(row["task_slug"])
        if task is None or row["map_index"] != -1 \
                or row["state"] not in (StateName.SUCCESS, StateName.CACHED):
            continue
        if isinstance(task, Parameter):
            continue  # its value is the run's own parameter: nothing to restore
        if not row["result_location"]:
            continue  # not checkpointed (checkpoint=False): it runs again, as asked
        reader = task.result or flow.result or PackedResult(location)
        try:
            value = reader.read(row["result_location"])
        except OrchestratorError as exc:
            unreadable.append((row, exc))
            continue
        restored[task] = st.Success("Restored from an earlier attempt.", result=value,
                                    location=row["result_location"])
    if unreadable:
        raise ResultError(_unreadable_message(run, unreadable, location))
    return restored


def _unreadable_message(run, unreadable, location):
    names = [repr(row["task_name"]) for row, _ in unreadable]
    tasks = (f"task {names[0]}" if len(names) == 1 else
             f"{len(names)} tasks ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    reasons = list(dict.fromkeys(str(exc) for _, exc in unreadable))  # one per file
    return (
        f"The run cannot resume: the results of {tasks} that finished in an earlier "
        f"attempt cannot be read on this host ({'; '.join(reasons[:3])}"
        f"{'; ...' if len(reasons) > 3 else ''}). The earlier attempt likely ran on another "
        f"host and kept them in its own results location (or they were lost with that "
        f"host's disk); this host's is {location}. Set "
        "[results] location in config.toml (or ORCHESTRATOR__RESULTS__LOCATION) on every host "
        "to one path or URL that every host can read (a shared mount, s3://bucket/prefix, "
        "...). The run fails rather than run those tasks again, which would repeat what "
        f"they did; start a new run with: orchestrator run {run['project']}/{run['flow_name']}")


def execute_flow_run(store, run_id, load_flow, agent=None, attempt=None, config=None):
    """Run flow run `run_id` in this process; returns the final state name.

    `load_flow(flow_record)` returns the Flow object (from its storage). An
    agent passes its name and the attempt it claimed: the run must be
    Submitted on that attempt (else AttemptLost). By hand, the run must be
    Scheduled, and starting it mints its attempt. `config` is the configuration
    the caller loaded already (default: loaded here).
    """
    run, flow_record = store.get_flow_run_and_flow(run_id)
    if run["state"] in TERMINAL_STATES:
        raise OrchestratorError(
            f"Flow run {run_id} ({run['name']}) already finished: {run['state']}. "
            f"Start a new run with: orchestrator run {run['project']}/{run['flow_name']}")
    if agent is not None and attempt is None and run["state"] == StateName.SUBMITTED \
            and run["agent"] == agent:
        attempt = run["attempt"]  # an agent of an earlier version: its claim's attempt
    # The id the agent gave this process (and recorded); taken out of the
    # environment, so that processes the flow starts do not claim it too.
    process_id = os.environ.pop(RUN_PROCESS_ID_ENV, None)
    try:
        started = store.start_flow_run(run_id, os.getpid(), attempt=attempt,
                                       process_id=process_id)
    except AttemptLost as exc:
        log_lost(store, run_id, exc)
        raise
    if started is None:
        run = store.get_flow_run(run_id)
        holder = f" by agent {run['agent']}" if run["agent"] else ""
        raise OrchestratorError(
            f"Flow run {run_id} is {run['state']}{holder}, so it is not started here; see "
            f"orchestrator explain {run_id}")
    attempt = started
    ownership = RunOwnership(store, run_id, attempt, agent=agent)
    config = config or load_config()
    # From now: loading the flow (imports, a Git fetch) may outlast the timeout.
    heartbeat = Heartbeat(store, run_id, attempt, config["services"]["heartbeat_interval"]
                          if flow_record["settings"].get("heartbeat", True) else None,
                          ownership)
    try:
        return _run_attempt(store, run, attempt, ownership, load_flow, flow_record, config,
                            heartbeat)
    except AttemptLost as exc:
        log_lost(store, run_id, exc)
        raise
    finally:
        heartbeat.stop()


def _run_attempt(store, run, attempt, ownership, load_flow, flow_record, config, heartbeat):
    run_id = run["id"]
    try:
        flow = load_flow(flow_record)
    except OrchestratorError as exc:
        why = f"Could not load the flow: {exc}"
        _finish(store, run_id, attempt, heartbeat, lambda: store.finish_flow_run(
            run_id, attempt, StateName.FAILED, why))
        return StateName.FAILED
    store.confirm_owner(run_id, attempt)  # still this attempt's after loading? (else: stop)
    run_logging.ensure_logging(config)
    reporter = ownership.reporter = StoreReporter(store, run_id, attempt, ownership, config,
                                                  watcher=heartbeat)
    handler = StoreLogHandler(reporter, run_id, redact=_RevealedSecrets())
    loggers = [logging.getLogger(run_logging.ROOT)] + [
        logging.getLogger(n) for n in config["logging"].get("extra_loggers") or ()]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with _run_signals(store, run_id, attempt, ownership, heartbeat):
            location = config["results"]["location"]
            if flow.result is None:
                flow.result = PackedResult(location)
            runner = FlowRunner(flow, reporter=reporter, inline_wait=INLINE_RETRY_SECONDS,
                                config=_with_checkpointing(config), backend=True)
            try:
                # A store that takes no connection now is waited for, not a failed run.
                # (A run that never started before has no earlier task states.)
                restored = {} if run["start_time"] is None else _until_written(
                    run_id, "read its earlier attempts' task states",
                    lambda: _restore_task_states(store, run, flow, location))
                state = runner.run(
                    parameters=run["parameters"], flow_run_id=str(run_id),
                    flow_run_name=run["name"],
                    context={ARTIFACT_KEEPER: reporter.artifact_keeper()},
                    scheduled_start_time=_dt.datetime.fromtimestamp(
                        run["scheduled_start_time"], _dt.timezone.utc),
                    task_states=restored)
            except OrchestratorError as exc:
                state = st.Failed(str(exc))
                logger.error("Flow run %s failed before it started: %s", run_id, exc)
        # Results on disk, then task states and logs in the store, then the final
        # state: each waits for room on a full disk. The heartbeat goes on meanwhile.
        _until_written(run_id, "write its results", lambda: _flush_results(run_id))
        for lg in loggers:
            lg.removeHandler(handler)
        # From now on the run records its end: a refused beat is that record's
        # doing, and no cancel makes the heartbeat stop the process while it does.
        heartbeat.finishing()
        rest = reporter.take_rest()  # written with the final state, in one transaction
        return _finish(store, run_id, attempt, heartbeat,
                       lambda: _record_final_state(store, run_id, attempt, state, rest))
    finally:
        try:
            PackedResult.flush_all()
        except (OSError, OrchestratorError):
            pass  # said above; a crash of the run loses nothing more than this
        for lg in loggers:
            lg.removeHandler(handler)
        reporter.close()


def _flush_results(run_id):
    """Write the run's buffered results; one that cannot be written at a URL is
    said in the run's log (a resumed run then says it cannot read it), and the
    run's state is recorded all the same: its tasks did their work."""
    try:
        PackedResult.flush_all()
    except OrchestratorError as exc:
        logger.error("Flow run %s: %s; a resumed run cannot restore these results", run_id,
                     exc)


def _finish(store, run_id, attempt, heartbeat, record):
    """Record how the run ended (waiting for room on a full disk), the heartbeat
    told first that a refusal after this write is this write's doing."""
    heartbeat.finishing()
    return _until_written(run_id, "record its final state", record)


@contextlib.contextmanager
def _run_signals(store, run_id, attempt, ownership, watcher):
    """While the flow runs (in the main thread, as `orchestrator execute` runs it):

    - SIGCONT (resumed after a stop): the main thread asks the store whether the
      run is still this attempt's before it goes on, so a task body that was
      frozen stops before its next line instead of racing the heartbeat thread
      (a sleep that the stop outlasted is over at once);
    - SIGTERM (a cancel, or the host shutting down): the run stops as
      `RunOwnership.terminate` says. The handler only asks the run's watcher
      (its Heartbeat), whose thread does the work (the main thread may hold the
      reporter's lock when the signal comes).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_resume(signum, frame):
        try:
            store.confirm_owner(run_id, attempt)
        except AttemptLost as exc:
            ownership.lost(exc)
        except Exception:  # the heartbeat thread says what is wrong with the store
            pass

    def on_terminate(signum, frame):
        watcher.terminate("SIGTERM: a cancel, or the host is stopping")

    previous = {signal.SIGCONT: signal.signal(signal.SIGCONT, on_resume),
                signal.SIGTERM: signal.signal(signal.SIGTERM, on_terminate)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _with_checkpointing(config):
    config["flows"] = dict(config["flows"], checkpointing=True)
    return config


def _record_final_state(store, run_id, attempt, state, report=None):
    """Record how the run ended, with the rest of its `report` (store keywords)."""
    report = report or {}
    if isinstance(state, st.Running):
        retry_at = _earliest_retry(state)
        if retry_at is not None:
            store.reschedule_flow_run(run_id, attempt, retry_at.timestamp(),
                                      f"Waiting for a task retry at {retry_at.isoformat()}",
                                      **report)
            return StateName.SCHEDULED
        store.pause_flow_run(run_id, attempt, state.message, **report)
        return StateName.PAUSED
    name = type(state).__name__
    if name not in TERMINAL_STATES:
        name = StateName.FAILED if state.is_failed() else StateName.SUCCESS
    store.finish_flow_run(run_id, attempt, name, state.message, **report)
    return name


def _earliest_retry(state):
    times = [s.start_time for s in (state.result or {}).values()
             if isinstance(s, st.Retrying) and s.start_time is not None]
    return min(times) if times else None
