"""The scheduler: creates the runs of every active schedule ahead of time and
deals with late runs, in bounded steps.

    scheduler = Scheduler(store)
    if scheduler.is_leader():       # one scheduler per database (daemons/leadership.py)
        scheduler.run_once()        # one tick; run_once(now=...) in tests
    scheduler.run(stop_event)       # loop until the event is set

Only the leader ticks: on PostgreSQL a session-level advisory lock elects one
scheduler among every host and process sharing the database, on SQLite a
lock file next to the database file. A process that does not lead asks again
at every tick, so another one takes over within a tick of the leader's end.
Two schedulers at once (a leader that lost its lock mid-tick) still create
each run once: see the idempotency keys below.

Each tick, for every flow whose schedule is active:

- it makes sure the next `horizon_runs` (10) runs and at least the next
  `horizon` (1 hour) of runs exist, counting from now or from the latest run
  already scheduled. Each run's parameters are its clock's
  `parameter_defaults` (the flow's own defaults are filled in when the run
  starts, so a callable default is called then, not frozen now); its labels
  are the clock's labels, else the flow's. A run's idempotency key names the
  flow's version group and its time, so two schedulers (or a tick racing a
  re-registration) cannot create it twice.
- after the flow is registered again, the older versions' future runs are
  replaced by the new version's, and their due or late ones are handed to the
  new version.
- late runs (auto-scheduled, still Scheduled, later than the flow's
  `max_lateness`, or `late_after` when it has none) follow the flow's
  `late_runs` policy: "run_all" leaves them to run (but with `max_lateness`
  set, runs later than it end Skipped); "run_latest" keeps only the latest
  late run and skips the older ones; "skip" skips them all. Every skipped run
  ends Skipped with a message saying why.

A tick does bounded work whatever the store holds: at most `late_budget` late
runs are changed per tick, in batches of `late_batch`, each one short
transaction on indexed queries; 100,000 late runs after a long downtime are
worked off over a few ticks while the agent keeps claiming runs. Missed
schedule times are not backfilled: runs are created from now on.

Pausing a schedule wins over a tick in flight: a tick creates a flow's runs
only while the flow's row says its schedule is active, read in the
transaction that inserts them (on PostgreSQL the row is locked FOR SHARE, so
a pause waits for that insert and then deletes its runs; on SQLite the
transaction holds the write lock). A tick that read the flow list before a
pause creates nothing for the paused flow.
"""

import datetime as _dt
import json
import logging
import threading
import time

from ..core import lateness
from ..exceptions import OrchestratorError
from ..core.schedules import Schedule, ScheduleError
from .leadership import Leadership

logger = logging.getLogger(__name__)

UTC = _dt.timezone.utc
_EPSILON = 1e-6  # one microsecond: "after now - epsilon" includes now


class Scheduler:
    """Creates scheduled runs and handles late ones. See the module docstring."""

    def __init__(self, store, lock_path=None, horizon_runs=10,
                 horizon=_dt.timedelta(hours=1),
                 late_after=_dt.timedelta(seconds=lateness.LATE_AFTER_SECONDS),
                 late_batch=1000, late_budget=10000, max_future_runs=1000, interval=5.0):
        self.store = store
        # `lock_path`: SQLite's lock file elsewhere than beside the database file.
        self.leadership = Leadership(store, "scheduler", lock_path=lock_path)
        self.horizon_runs = int(horizon_runs)
        self.horizon = _seconds(horizon)
        self.late_after = _seconds(late_after)
        self.late_batch = int(late_batch)
        self.late_budget = int(late_budget)
        # A 1-second interval would otherwise need 3,600 runs for the hour.
        self.max_future_runs = int(max_future_runs)
        self.interval = float(interval)
        self._schedules = {}     # schedule ref (JSON text) -> Schedule
        self._settled = {}       # (project, name) -> flow id whose older versions are done
        self._checked = {}       # (flow id, parameters JSON) -> error text or None
        self._reported = set()   # problems already logged, so each is logged once
        self._late_start = 0     # rotates which flow's late runs go first

    # -- leadership -----------------------------------------------------------------
    def is_leader(self):
        """True when this scheduler leads for the database: takes the lock when
        it is free (without waiting), else checks it still holds it."""
        return self.leadership.is_leader()

    def release(self):
        """Give the scheduler lock up (another process may take it)."""
        self.leadership.release()

    # -- the loop ---------------------------------------------------------------
    def run(self, stop=None):
        """Tick every `interval` seconds while leader, until `stop` is set."""
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                if self.is_leader():
                    try:
                        self.run_once()
                    except Exception:  # the loop must outlive a bad tick; say what happened
                        logger.exception("Scheduler: a tick failed; trying again")
                stop.wait(self.interval)
        finally:
            self.release()

    def run_once(self, now=None):
        """One tick at `now` (epoch seconds or an aware datetime; the clock when None).

        Returns a summary: {"flows", "created", "skipped", "adopted", "deleted"}.
        """
        now = _epoch(now)
        summary = {"flows": 0, "created": 0, "skipped": 0, "adopted": 0, "deleted": 0}
        late = []
        for flow in self.store.scheduled_flows():
            summary["flows"] += 1
            try:
                self._settle_versions(flow, now, summary)
                # Runs at exactly `now` count as upcoming: they are due, not missed.
                state = self.store.auto_run_summary(flow["id"], now - _EPSILON)
                summary["created"] += self._create_runs(flow, now, state)
                threshold = self._late_threshold(flow, now)
                if threshold is not None and state["oldest"] is not None \
                        and state["oldest"] < threshold:
                    late.append(flow)
            except OrchestratorError as exc:
                self._report(("flow", flow["id"], str(exc)), "Scheduler: flow %s/%s: %s",
                             flow["project"], flow["name"], exc)
            except Exception:  # one flow's trouble must not stop the others' schedules
                key = ("crash", flow["id"])
                if key not in self._reported:
                    self._reported.add(key)
                    logger.exception("Scheduler: flow %s/%s (id %s) could not be scheduled; "
                                     "the other flows go on", flow["project"], flow["name"],
                                     flow["id"])
        summary["skipped"] = self._handle_late(late, now)
        return summary

    # -- creating runs ------------------------------------------------------------
    def _schedule(self, flow):
        text = json.dumps(flow["schedule"], sort_keys=True)
        schedule = self._schedules.get(text)
        if schedule is None:
            try:
                schedule = Schedule.from_ref(flow["schedule"])
            except ScheduleError as exc:
                raise ScheduleError(f"its stored schedule cannot be read ({exc})") from None
            if len(self._schedules) > 10000:
                self._schedules.clear()
            self._schedules[text] = schedule
        return schedule

    def _create_runs(self, flow, now, state):
        """Create the runs the horizon lacks; returns how many were created."""
        count, latest = state["future"], state["latest"]
        horizon_end = now + self.horizon
        if count >= self.max_future_runs or (
                count >= self.horizon_runs and latest is not None and latest >= horizon_end):
            return 0
        schedule = self._schedule(flow)
        # From the latest run already there, or from now (an event at exactly
        # now included: it is due, not missed).
        start = latest if latest is not None and latest > now else now - _EPSILON
        runs = []
        examined = 0  # events looked at, made into runs or not: bounds the loop
        for event in schedule.events(_dt.datetime.fromtimestamp(start, UTC)):
            when = event.start_time.timestamp()
            have = count + examined
            if have >= self.max_future_runs or (have >= self.horizon_runs
                                                and when > horizon_end):
                break
            examined += 1
            parameters = dict(event.parameter_defaults)
            if not self._parameters_fit(flow, parameters):
                continue
            runs.append({"scheduled_start_time": when, "parameters": parameters,
                         "labels": list(event.labels) or list(flow["labels"] or []),
                         # Events of one time differ by their clock's values.
                         "variant": [parameters, list(event.labels)]
                         if parameters or event.labels else None})
        if not runs:
            return 0
        created = self.store.create_auto_runs(flow["id"], runs, now=now,
                                              group=(flow["project"], flow["name"]))
        if created:
            logger.debug("Scheduler: flow %s/%s: created runs %s", flow["project"],
                         flow["name"], created)
        return len(created)

    def _parameters_fit(self, flow, parameters):
        """Whether a clock's parameters suit the flow (checked once per flow version)."""
        from ..service import check_run_parameters

        key = (flow["id"], json.dumps(parameters, sort_keys=True))
        if key not in self._checked:
            try:
                check_run_parameters(flow, parameters)
                self._checked[key] = None
            except OrchestratorError as exc:
                self._checked[key] = str(exc)
        problem = self._checked[key]
        if problem is not None:
            self._report(
                key, "Scheduler: flow %s/%s: no runs are created for its clock with "
                "parameter_defaults=%s: %s Fix the clock's parameter_defaults (or give "
                "the Parameter a default) and register the flow again.",
                flow["project"], flow["name"], json.dumps(parameters, sort_keys=True),
                problem)
        return problem is None

    def _settle_versions(self, flow, now, summary):
        """Once per new version: replace the older versions' pending auto runs."""
        group = (flow["project"], flow["name"])
        if self._settled.get(group) == flow["id"]:
            return
        adopted, deleted = self.store.adopt_auto_runs_of_other_versions(
            flow["id"], now, limit=self.late_budget)
        summary["adopted"] += adopted
        summary["deleted"] += deleted
        if adopted or deleted:
            logger.info("Scheduler: flow %s/%s version %s: took over %d due runs of older "
                        "versions and deleted %d of their future runs", flow["project"],
                        flow["name"], flow["version"], adopted, deleted)
        if adopted < self.late_budget and deleted < self.late_budget:
            self._settled[group] = flow["id"]

    # -- late runs -------------------------------------------------------------------
    def _late_threshold(self, flow, now):
        """Runs scheduled before this epoch are late under the flow's policy, or
        None when its policy leaves late runs alone."""
        settings = flow["settings"] or {}
        if lateness.policy(settings) == "run_all":
            limit = lateness.skipped_after(settings, self.late_after)
            return None if limit is None else now - limit
        return now - lateness.late_after(settings, self.late_after)

    def _handle_late(self, flows, now):
        """Skip late runs per policy, at most `late_budget` this tick; returns how many."""
        if not flows:
            return 0
        start = self._late_start % len(flows)
        self._late_start += 1
        budget = self.late_budget
        skipped = 0
        for flow in flows[start:] + flows[:start]:
            if budget <= 0:
                break
            settings = flow["settings"] or {}
            policy = lateness.policy(settings)
            before = self._late_threshold(flow, now)
            message = _late_message(flow, policy, settings.get("max_lateness"))
            while budget > 0:
                try:
                    count, _ = self.store.skip_late_auto_runs(
                        flow["id"], before, message, now=now,
                        limit=min(self.late_batch, budget),
                        keep_latest=policy == "run_latest")
                except OrchestratorError as exc:
                    self._report(("late", flow["id"], str(exc)), "Scheduler: flow %s/%s: "
                                 "late runs: %s", flow["project"], flow["name"], exc)
                    break
                skipped += count
                budget -= count
                if count < min(self.late_batch, budget + count):
                    break
        if skipped:
            logger.info("Scheduler: skipped %d late runs", skipped)
        return skipped

    def _report(self, key, message, *args):
        if key not in self._reported:
            self._reported.add(key)
            logger.error(message, *args)


def _late_message(flow, policy, max_lateness):
    name = f"{flow['project']}/{flow['name']}"
    if policy == "run_latest":
        return (f"Skipped: a later run of flow {name} (run {{latest}}) was late too, and "
                "late_runs='run_latest' runs only the latest late run")
    if policy == "skip" and max_lateness is None:
        return (f"Skipped: it was {{late}} s late and flow {name} has late_runs='skip'; "
                "use late_runs='run_all' to run late runs")
    return (f"Skipped: it would have started {{late}} s late, more than max_lateness "
            f"{float(max_lateness):g} s of flow {name}; raise max_lateness to run such runs")


def _seconds(value):
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def _epoch(now):
    if now is None:
        return time.time()
    if isinstance(now, _dt.datetime):
        if now.tzinfo is None:
            raise ScheduleError(f"Scheduler.run_once(now={now.isoformat()}): now has no "
                                "time zone; pass an aware datetime or epoch seconds")
        return now.timestamp()
    return float(now)
