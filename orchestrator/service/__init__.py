"""Use cases: what the CLI and the REST API do, over one Store.

Every function takes the store first and returns plain values; errors are
OrchestratorError subclasses with messages meant for the user. What users
give (names, labels, parameters, keys) is checked here with
`orchestrator.validation`, before anything is stored, so the CLI, the REST
API and library tasks refuse the same inputs with the same messages.
"""

import datetime as _dt
import hashlib
import json

from ..core import validation
from ..core.task import Parameter, no_default
from ..engine.flow_runner import resolve_parameters
from ..exceptions import Conflict, InputError, NotFound, ParameterError
from ..store import TERMINAL_STATES

__all__ = ["register_flow", "register_from_ref", "create_flow_run", "check_run_parameters",
           "load_flow", "parameter_specs", "cancel_flow_run", "set_schedule_active",
           "concurrency_limits", "concurrency_limit", "set_secret"]


def parameter_specs(flow):
    """How a flow's parameters are recorded: name, required, default (JSON), and
    whether the default is computed at run time."""
    specs = []
    for p in sorted(flow.parameters(), key=lambda p: p.name):
        spec = {"name": p.name, "required": p.required, "callable_default": callable(p.default)}
        if not callable(p.default):
            try:
                json.dumps(p.default)
                spec["default"] = p.default
            except (TypeError, ValueError):
                spec["default"] = repr(p.default)
        else:
            spec["default"] = None
        specs.append(spec)
    return specs


def register_flow(store, flow, project_name, labels=None, idempotency_key=None):
    """Register `flow` in `project_name`; returns (flow record, is_new_version)."""
    from ..flows.run_configs import LocalRun
    from ..flows.storage import Local, flow_fingerprint

    if isinstance(labels, str):
        labels = [labels]
    if labels is not None:
        labels = validation.check_labels(labels)
    flow.validate()
    storage = flow.storage or Local()
    run_config = flow.run_config or LocalRun()
    all_labels = sorted(set(run_config.labels) | set(storage.labels) | set(labels or ()))
    project = store.get_project(project_name)["name"]
    run_config_ref = run_config.to_ref()
    schedule_ref = flow.schedule.to_ref() if flow.schedule is not None else None
    settings = flow.service_settings()
    identity = hashlib.sha256(json.dumps({
        "flow": idempotency_key or flow_fingerprint(flow),
        "storage": storage.settings_ref(), "labels": all_labels, "run_config": run_config_ref,
        "schedule": schedule_ref, "settings": settings,
    }, sort_keys=True, default=str).encode()).hexdigest()
    try:
        current = store.get_flow(flow.name, project=project)
    except NotFound:
        current = None
    if current is not None and current["fingerprint"] == identity:
        return current, False
    if flow.schedule is not None:
        shape = {"name": flow.name, "parameters": parameter_specs(flow)}
        for clock in flow.schedule.clocks:
            try:
                check_run_parameters(shape, dict(clock.parameter_defaults or {}))
            except ParameterError as exc:
                raise ParameterError(f"A clock of the schedule of {flow.name!r}: {exc}") from None
    version = store.next_flow_version(project, flow.name)
    storage.add_flow(flow, project, version)
    return store.register_flow(
        project, flow.name, fingerprint=identity, storage=storage.to_ref(),
        parameters=parameter_specs(flow), labels=all_labels, run_config=run_config_ref,
        schedule=schedule_ref, settings=settings, version=version)


def register_from_ref(store, project, storage_ref, flow_name=None, labels=None):
    """Load a flow from a storage reference (Script, Module, Git) and register it:
    (flow record, is_new_version). This runs the flow's code: the API has a child
    process do it (`orchestrator register-ref`), so that code cannot harm the server."""
    from ..flows.storage import Storage

    store.get_project(project)
    storage = Storage.from_ref(storage_ref)
    flow = storage.get_flow(flow_name)
    flow.storage = storage
    return register_flow(store, flow, project, labels=labels)


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


def load_flow(flow_record):
    """The Flow object of a registered flow, from its storage."""
    from ..flows.storage import Storage

    return Storage.from_ref(flow_record["storage"]).get_flow(flow_record["name"])


# -- runs, schedules and limits: one function each, for the CLI and the REST API ------
def cancel_flow_run(store, run_id):
    """Cancel run `run_id`: at once if it has not started, else its agent (or its
    own heartbeat, when run by hand) stops its process. Returns the state it is
    in now (Cancelled or Cancelling); Conflict when it had already finished."""
    run = store.get_flow_run(run_id)
    state = store.request_cancel(run["id"])
    if state in TERMINAL_STATES and state != "Cancelled":
        raise Conflict(f"Flow run {run['id']} already finished: {state}; nothing to cancel")
    return state


def set_schedule_active(store, flow_ref, active, project=None):
    """Pause (active=False) or resume a flow's schedule; pausing deletes its future
    auto-scheduled runs. Returns (flow, runs deleted); Conflict when the flow has
    no schedule."""
    flow = store.get_flow(flow_ref, project=project)
    if not flow.get("schedule"):
        raise Conflict(
            f"Flow {flow['project']}/{flow['name']} has no schedule to "
            f"{'resume' if active else 'pause'}; give it one with "
            "Flow(..., schedule=CronSchedule('0 6 * * *')) and register it again")
    return store.set_schedule_active(flow["id"], active)


LIMIT_KINDS = ("label", "tag")


def concurrency_limits(store):
    """Every concurrency limit, label limits first: dicts with kind, label, limit and
    holders (the ids of the runs holding it)."""
    return [concurrency_limit(store, kind, label, limit) for kind in LIMIT_KINDS
            for label, limit in sorted(store.concurrency_limits(kind).items())]


def concurrency_limit(store, kind, label, limit):
    """One limit as a dict, with the runs holding it now."""
    holders = (store.limit_holders(label=label) if kind == "label"
               else store.tag_slot_holders(label))
    return {"kind": kind, "label": label, "limit": limit, "holders": holders}


# -- secrets -------------------------------------------------------------------------
def set_secret(store, name, value):
    """Store secret `name` with `value`: text, not empty (an empty secret is a value
    that never arrived). The value is never part of a message."""
    name = validation.check_name(name, "name", "Secret name")
    if not isinstance(value, str):
        raise InputError("A secret's value must be text; encode other data as JSON text",
                         "value")
    if not value:
        raise InputError(f"Secret {name!r} would be empty; give it a value", "value")
    store.set_secret(name, value)
    return name
