"""Use cases about flows and projects: register a flow (from an object or a
storage reference), load it back, list and show flows, pause and resume their
schedules."""

import hashlib
import json

from ..core import validation
from ..exceptions import Conflict, NotFound, ParameterError
from . import runs as _runs

__all__ = ["create_project", "get_project", "register_flow", "register_from_ref", "load_flow",
           "parameter_specs", "list_flows", "get_flow", "flow_run_summary",
           "set_schedule_active"]


def create_project(store, name):
    """(project, created): an existing project is returned as it is."""
    return store.create_project(name)


def get_project(store, name):
    """Project `name`, or NotFound."""
    return store.get_project(name)


def list_flows(store, project=None, include_archived=False):
    """The current version of every flow (every version with `include_archived`),
    of `project` when given (none for a project that does not exist: a filter;
    `get_project` says whether it does)."""
    return store.list_flows(project=project, include_archived=include_archived)


def get_flow(store, ref, project=None):
    """A flow by id, NAME or PROJECT/NAME (its current version), or NotFound."""
    return store.get_flow(ref, project=project)


def flow_run_summary(store, flow_id):
    """A flow's recent runs (id, state) and the time of its next scheduled run."""
    return store.flow_run_summary(flow_id)


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
                _runs.check_run_parameters(shape, dict(clock.parameter_defaults or {}))
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


def load_flow(flow_record):
    """The Flow object of a registered flow, from its storage."""
    from ..flows.storage import Storage

    return Storage.from_ref(flow_record["storage"]).get_flow(flow_record["name"])


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
