"""Use cases about flow runs: create, cancel and rename a run; read a run, its
task runs, its state history, its artifacts and its log."""

import datetime as _dt
import json

from ..core import validation
from ..core.states import TERMINAL_RUN_STATES, StateName, state_from_name
from ..core.task import Parameter, no_default
from ..engine.flow_runner import resolve_parameters
from ..exceptions import Conflict, InputError, ParameterError

__all__ = ["create_flow_run", "create_flow_run_here", "check_run_parameters",
           "cancel_flow_run", "rename_flow_run", "claim_run_here", "get_flow_run",
           "list_flow_runs", "task_runs", "state_history", "artifacts", "logs"]


def check_run_parameters(flow_record, parameters):
    """Check parameters against a registered flow's; raises ParameterError."""
    specs = {s["name"]: s for s in flow_record["parameters"]}
    stand_in = _FlowShape(flow_record["name"], [
        Parameter(s["name"], default=None if not s["required"] else no_default)
        for s in specs.values()])
    resolve_parameters(stand_in, parameters)
    for name, value in parameters.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f"Parameter {name!r} of flow {flow_record['name']!r}: {value!r} is not "
                "JSON-serializable; pass strings, numbers, lists or objects") from None


class _FlowShape:
    """Just enough of a Flow for resolve_parameters: a name and parameters."""

    def __init__(self, name, params):
        self.name = name
        self._params = set(params)

    def parameters(self):
        return self._params


def create_flow_run(store, flow_ref, project=None, parameters=None, name=None,
                    labels=None, scheduled_start_time=None, idempotency_key=None,
                    report=False):
    """Create a Scheduled run of the current version of a registered flow.

    With `report`, returns (run, created): created is False when the
    idempotency key found the run an earlier call made."""
    # What the caller gives is checked first, the same for every edge: a bad
    # value is a 400 / exit 2 whichever flow it names, and nothing is stored.
    parameters = validation.check_parameters({} if parameters is None else parameters)
    if name is not None:
        validation.check_name(name, "name", what="Run name")
    if isinstance(labels, str):
        labels = [labels]
    if labels is not None:
        labels = validation.check_labels(labels)
    if idempotency_key is not None:
        validation.check_idempotency_key(idempotency_key)
    flow = store.get_flow(flow_ref, project=project)
    parameters = dict(parameters)
    check_run_parameters(flow, parameters)
    when = scheduled_start_time
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            raise ParameterError(
                f"scheduled_start_time {when.isoformat()} has no time zone; add one, "
                "e.g. 2024-05-01T06:00:00+00:00")
        when = when.timestamp()
    return store.create_flow_run(
        flow["id"], parameters=parameters, name=name,
        labels=flow["labels"] if labels is None else labels,
        scheduled_start_time=when, idempotency_key=idempotency_key, report=report)


def create_flow_run_here(store, flow_ref, claimer, **options):
    """Create a run (as `create_flow_run`, with its options) claimed at once for
    `claimer`, a process that executes it itself (`orchestrator run --local`):
    one transaction, so no agent can take it first. Returns (run, created,
    attempt); attempt is None when the idempotency key found an earlier run."""
    with store.atomic():
        run, created = create_flow_run(store, flow_ref, report=True, **options)
        attempt = store.claim_run(run["id"], claimer) if created else None
    return run, created, attempt


def cancel_flow_run(store, run_id):
    """Cancel run `run_id`: at once if it has not started, else its agent (or its
    own heartbeat, when run by hand) stops its process. Returns the state it is
    in now (Cancelled or Cancelling); Conflict when it had already finished."""
    run = store.get_flow_run(run_id)
    state = store.request_cancel(run["id"])
    if state in TERMINAL_RUN_STATES and state != StateName.CANCELLED:
        raise Conflict(f"Flow run {run['id']} already finished: {state}; nothing to cancel")
    return state


def rename_flow_run(store, run_id, name):
    """Give run `run_id` the name `name`; returns the run."""
    name = validation.check_name(name, "name", what="Run name")
    run = store.get_flow_run(run_id)
    store.rename_flow_run(run["id"], name)
    return store.get_flow_run(run["id"])


def claim_run_here(store, run_id, claimer):
    """Claim Scheduled run `run_id` for this process (`orchestrator run --local`):
    the attempt it now owns, or None when the run is not Scheduled any more."""
    return store.claim_run(run_id, claimer)


def get_flow_run(store, run_id):
    """Run `run_id` (a whole number or its text), or NotFound."""
    return store.get_flow_run(run_id)


def list_flow_runs(store, flow=None, states=None, limit=50, before_id=None, since=None,
                   until=None):
    """Runs newest first, a page of at most `limit`: of every version of `flow` (id,
    NAME or PROJECT/NAME) when given, in one of `states`, scheduled between `since`
    and `until` (epoch seconds); `before_id` continues an earlier page."""
    for name in states or ():
        try:
            state_from_name(name)
        except ValueError as exc:
            raise InputError(str(exc), "state") from None
    flow_id = None
    if flow is not None:
        validation.check_storable(flow, "flow")
        flow_id = store.get_flow(flow)["id"]
    return store.list_flow_runs(flow_id=flow_id, all_versions=True, state=list(states or ())
                                or None, limit=limit, before_id=before_id, since=since,
                                until=until)


def task_runs(store, run_id):
    """The task runs of run `run_id` (NotFound when there is no such run)."""
    return store.task_runs(store.get_flow_run(run_id)["id"])


def state_history(store, run_id):
    """The states run `run_id` went through, oldest first (its tasks' left out)."""
    return [e for e in store.state_events(store.get_flow_run(run_id)["id"])
            if e["task_slug"] is None]


def artifacts(store, run_id):
    """The markdown reports and links the tasks of run `run_id` published."""
    return store.artifacts(store.get_flow_run(run_id)["id"])


def logs(store, run_id, after_id=0, min_level=0, limit=1000, task_slug=None):
    """Up to `limit` log lines of run `run_id` after line `after_id`, at `min_level`
    or above, of task `task_slug` when given."""
    return store.logs(run_id, after_id=after_id, min_level=min_level, limit=limit,
                      task_slug=task_slug)
