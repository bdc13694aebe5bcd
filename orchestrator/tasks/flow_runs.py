"""Tasks that act on flow runs: flow of flows, a child's results, and renaming.

    from orchestrator.tasks.flow_runs import (
        StartFlowRun, create_flow_run, get_task_run_result, wait_for_flow_run)

    with Flow("parent") as parent:
        child = create_flow_run(flow_name="child", project_name="etl",
                                parameters={"day": "2024-05-01"})
        wait_for_flow_run(child, raise_final_state=True)
        rows = get_task_run_result(child, "load-1")     # what task 'load' returned

        # Prefect 1's older task: create the run and wait, taking the child's state
        StartFlowRun(flow_name="child", project_name="etl", wait=True)(
            parameters={"day": "2024-05-02"})

    def rename_handler(flow, old_state, new_state):
        if new_state.is_running():
            RenameFlowRun().run(flow_run_name=f"report-{context.parameters['day']}")

In a run started by `orchestrator up`, these speak to its REST API (the agent
passes ORCHESTRATOR_API_URL to the run's process), so they work from any
process that can reach the server; elsewhere they use the local store.
A child run's default idempotency key is its parent run and task, so a
parent that is retried or restarted does not start a second child.

A child's task results are read from where the child checkpointed them (runs
from the store checkpoint every task), so `get_task_run_result` works on the
host that ran the child, or where its results are shared.
"""

import datetime as _dt
import logging
import math
import os
import re
import time

from ..core import signals
from ..core import states as _states
from ..core.context import context
from ..core.states import TERMINAL_RUN_STATES as TERMINAL_STATES
from ..core.states import StateName
from ..core.task import Task, task
from ..exceptions import InputError, OrchestratorError, ResultError
from .run_defaults import defaults_from_attrs

__all__ = ["RenameFlowRun", "StartFlowRun", "create_flow_run", "get_task_run_result",
           "wait_for_flow_run"]

logger = logging.getLogger(__name__)


class _LocalRuns:
    """The Client's flow-run methods over the local store (no server needed),
    answering with the documents the REST API answers with."""

    def __init__(self):
        from .. import service

        self.service = service
        self.store = service.open_store()

    def create_flow_run(self, flow, parameters=None, name=None, labels=None,
                        scheduled_start_time=None, idempotency_key=None):
        from ..service.documents import run_document

        return run_document(self.service.create_flow_run(
            self.store, flow, parameters=parameters, name=name, labels=labels,
            scheduled_start_time=scheduled_start_time, idempotency_key=idempotency_key))

    def get_flow_run(self, run_id):
        from ..service.documents import run_document

        return run_document(self.service.get_flow_run(self.store, run_id))

    def get_task_runs(self, run_id):
        from ..service.documents import task_run_document

        return [task_run_document(row) for row in self.service.task_runs(self.store, run_id)]

    def set_flow_run_name(self, run_id, name):
        self.service.rename_flow_run(self.store, run_id, name)

    def get_logs(self, run_id, after=None, level=None, limit=1000):
        from ..service.documents import log_document

        return [log_document(row) for row in self.service.logs(
            self.store, run_id, after_id=after or 0, min_level=level or 0, limit=limit)]

    def close(self):
        self.store.close()


def _runs_api():
    url = os.environ.get("ORCHESTRATOR_API_URL")
    if not url:
        return _LocalRuns()
    from ..client.rest import Client  # http.client only for runs that need it

    return Client(url)


class RenameFlowRun(Task):
    """Rename a flow run (default: the current one)."""

    def __init__(self, flow_run_id=None, flow_run_name=None, **kwargs):
        self.flow_run_id = flow_run_id
        self.flow_run_name = flow_run_name
        super().__init__(**kwargs)

    def run(self, flow_run_id=None, flow_run_name=None):
        run_id = flow_run_id or self.flow_run_id or context.get("flow_run_id")
        name = flow_run_name or self.flow_run_name
        if not name:
            raise OrchestratorError("RenameFlowRun needs flow_run_name=...")
        if flow_run_id is None and self.flow_run_id is None \
                and not context.get("running_with_backend", False):
            logger.warning("Not renaming to %r: this run was not started from the store "
                           "(flow.run()), so there is no stored run to rename", name)
            return False
        api = _runs_api()
        try:
            api.set_flow_run_name(int(run_id), name)
        finally:
            api.close()
        return True


# -- creating a child run ------------------------------------------------------------
def _flow_ref(flow_id, flow_name, project_name):
    if flow_id is not None and flow_name:
        raise InputError(f"Received both flow_id={flow_id!r} and flow_name={flow_name!r}; "
                         "pass only one of them")
    if flow_id is None and not flow_name:
        raise InputError("No flow given: pass flow_id=... or flow_name=... (with "
                         "project_name=... when the name is in several projects)")
    if flow_id is not None:
        return flow_id
    return f"{project_name}/{flow_name}" if project_name else flow_name


def _labels_of(run_config, labels, who):
    """The labels a child run gets from `labels` and a per-run `run_config`.

    A run config given for one run can only choose its labels here: the rest
    (env, working_dir, ...) belongs to the flow as registered."""
    if run_config is None:
        return labels
    ref = run_config.to_ref() if hasattr(run_config, "to_ref") else None
    try:
        plain = type(run_config)().to_ref()
    except Exception:
        plain = None
    if ref is None or plain is None or {k: v for k, v in ref.items() if k != "labels"} != \
            {k: v for k, v in plain.items() if k != "labels"}:
        raise InputError(
            f"{who}: run_config={run_config!r} sets more than labels, and a run config for "
            "one run can only choose its labels here; give the rest (env, working_dir, ...) "
            "to the flow's run_config when you register it, and pass labels=[...] here")
    chosen = list(getattr(run_config, "labels", None) or ())
    return sorted(set(chosen) | set(labels or ())) if labels else chosen


def _no_context(given, who, name):
    if given:
        raise InputError(
            f"{who}: {name}={given!r} cannot be passed to a child run: a run's context "
            "is made from its flow and parameters. Pass the values as parameters=... "
            "(and read them with Parameter(...) in the child flow)")


def _default_idempotency_key():
    """The parent run and task (and map index): a retried or restarted parent
    finds the child it made instead of making another."""
    if not context.get("running_with_backend", False):
        return None
    index = context.get("map_index")
    return (f"flow-run-{context.get('flow_run_id')}-{context.get('task_slug')}"
            + ("" if index is None else f"-{index}"))


def _start_time(scheduled_start_time):
    if isinstance(scheduled_start_time, _dt.timedelta):
        return _dt.datetime.now(_dt.timezone.utc) + scheduled_start_time
    return scheduled_start_time


def _run_link(run_id):
    url = os.environ.get("ORCHESTRATOR_API_URL")
    return f"{url.rstrip('/')}/#/runs/{run_id}" if url else None


def _child_run_name(flow_name):
    """"<parent run's name>-<flow name>" in a run from the store, as Prefect 1
    names a child run (elsewhere the store names it)."""
    parent = context.get("flow_run_name")
    if not parent or not context.get("running_with_backend", False):
        return None
    return f"{parent}-{flow_name}"[:200]


def _create_run(flow, parameters, run_name, labels, scheduled_start_time, idempotency_key):
    if idempotency_key is None:
        idempotency_key = _default_idempotency_key()
    api = _runs_api()
    try:
        run = api.create_flow_run(flow, parameters=parameters, name=run_name, labels=labels,
                                  scheduled_start_time=_start_time(scheduled_start_time),
                                  idempotency_key=idempotency_key)
    finally:
        api.close()
    link = _run_link(run["id"])
    logger.info("Created flow run %s (%s) of %s%s", run["id"], run["name"], flow,
                f": {link}" if link else "")
    return run


@task(name="create_flow_run")
def create_flow_run(flow_id=None, flow_name=None, project_name="", parameters=None,
                    context=None, labels=None, run_name=None, run_config=None,
                    scheduled_start_time=None, idempotency_key=None):
    """Create a run of a registered flow (by id, or name and project); returns its id.

    `scheduled_start_time` is an aware datetime, or a timedelta from now.
    `run_config` may choose the run's labels; `context` cannot be passed on.
    """
    flow = _flow_ref(flow_id, flow_name, project_name)
    _no_context(context, "create_flow_run", "context")
    labels = _labels_of(run_config, labels, "create_flow_run")
    if not run_name and flow_name:
        run_name = _child_run_name(flow_name)
    run = _create_run(flow, parameters, run_name, labels, scheduled_start_time,
                      idempotency_key)
    return run["id"]


# -- waiting for it ------------------------------------------------------------------
def _copy_logs(api, run_id, after, page=1000):
    """Log here every line of run `run_id` after id `after`; the last id copied."""
    while True:
        lines = api.get_logs(run_id, after=after, limit=page)
        for line in lines:
            after = line["id"]
            logger.log(line["level"], "Flow run %s: %s", run_id, line["message"])
        if len(lines) < page:
            return after


def _seconds(value, what):
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}={value!r} is not a duration; pass a datetime.timedelta "
                         "or a number of seconds") from None
    if math.isnan(seconds) or seconds < 0:
        raise InputError(f"{what}={value!r} must be a duration of 0 seconds or more")
    return seconds


def _watch_run(api, run_id, stream_states=True, stream_logs=False, max_duration=None,
               poll_interval=1.0):
    """Poll run `run_id` until it has finished (or `max_duration` seconds have
    passed: a FAIL); returns the run."""
    deadline = None if max_duration is None else time.monotonic() + max_duration
    seen_state, log_cursor = None, 0
    while True:
        run = api.get_flow_run(run_id)
        if stream_states and run["state"] != seen_state:
            logger.info("Flow run %s (%s): %s%s", run["id"], run["name"], run["state"],
                        f": {run['message']}" if run.get("message") else "")
            seen_state = run["state"]
        if stream_logs:
            log_cursor = _copy_logs(api, run["id"], log_cursor)
        if run["state"] in TERMINAL_STATES:
            return run
        if deadline is not None and time.monotonic() >= deadline:
            raise signals.FAIL(f"Flow run {run['id']} is still {run['state']} after "
                               f"{max_duration:.0f} s (max_duration)")
        time.sleep(poll_interval)


@task(name="wait_for_flow_run")
def wait_for_flow_run(flow_run_id, stream_states=True, stream_logs=False,
                      raise_final_state=False, max_duration=_dt.timedelta(hours=12),
                      poll_interval=1.0):
    """Wait for a flow run to finish; returns the run (a dict).

    With `raise_final_state`, this task ends in the child's final state (Failed
    when the child failed). `stream_logs` copies the child's log lines here.
    """
    api = _runs_api()
    try:
        run = _watch_run(api, flow_run_id, stream_states, stream_logs,
                         _seconds(max_duration, "max_duration"), poll_interval)
    finally:
        api.close()
    if raise_final_state:
        if run["state"] in (StateName.SUCCESS, StateName.CACHED):
            raise signals.SUCCESS(f"Flow run {run['id']} succeeded", result=run)
        if run["state"] == StateName.SKIPPED:
            raise signals.SKIP(f"Flow run {run['id']} was skipped", result=run)
        raise signals.FAIL(f"Flow run {run['id']} ended {run['state']}: "
                           f"{run.get('message') or 'no message'}", result=run)
    return run


class StartFlowRun(Task):
    """Create a run of a registered flow; with `wait=True`, wait for it to finish
    and end in its final state (Prefect 1's `prefect.tasks.prefect.StartFlowRun`).

    Returns the child run's id. Settings given to the constructor are defaults
    that the call in the flow may override. `labels` (ours) and `run_config`
    choose the child's labels; `new_flow_context` cannot be passed on.
    """

    def __init__(self, flow_name=None, project_name=None, parameters=None,
                 run_config=None, wait=False, new_flow_context=None, run_name=None,
                 scheduled_start_time=None, poll_interval=_dt.timedelta(seconds=10),
                 create_link_artifact=True, labels=None, **kwargs):
        for value in (parameters or {}).values():
            if isinstance(value, Task):
                raise TypeError(
                    f"StartFlowRun: parameters given to the constructor hold the task "
                    f"{value.name!r}; pass static values to StartFlowRun(...) and tasks when "
                    "calling it in the flow: StartFlowRun(...)(parameters={...})")
        self.flow_name = flow_name
        self.project_name = project_name
        self.parameters = parameters
        self.run_config = run_config
        self.wait = wait
        self.new_flow_context = new_flow_context
        self.run_name = run_name
        self.scheduled_start_time = scheduled_start_time
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        if self.poll_interval <= 0:
            raise InputError(f"StartFlowRun: poll_interval={poll_interval!r} must be more "
                             "than 0 seconds")
        self.create_link_artifact = create_link_artifact
        self.labels = labels
        if flow_name:
            kwargs.setdefault("name", f"Flow {flow_name}")
        super().__init__(**kwargs)

    @defaults_from_attrs("flow_name", "project_name", "parameters", "run_config",
                         "new_flow_context", "run_name", "scheduled_start_time", "labels")
    def run(self, flow_name=None, project_name=None, parameters=None, run_config=None,
            new_flow_context=None, run_name=None, idempotency_key=None,
            scheduled_start_time=None, labels=None):
        if flow_name is None:
            raise InputError("StartFlowRun: must provide a flow name: "
                             "StartFlowRun(flow_name=..., project_name=...)")
        who = f"StartFlowRun {self.name!r}"
        _no_context(new_flow_context, who, "new_flow_context")
        labels = _labels_of(run_config, labels, who)
        run = _create_run(_flow_ref(None, flow_name, project_name), parameters, run_name,
                          labels, scheduled_start_time, idempotency_key)
        if not self.wait:
            return run["id"]
        api = _runs_api()
        try:
            final = _watch_run(api, run["id"], poll_interval=self.poll_interval)
        finally:
            api.close()
        raise _signal_for(final)


def _signal_for(run):
    """The signal that ends a task in the final state of flow run `run`, with
    Prefect 1's message ("<id> finished in state <Success: "...">")."""
    state = _states.state_from_name(run["state"])(run.get("message"))
    try:
        signal = signals.signal_from_state(state)
    except ValueError:  # Cancelled: no signal of its own, so the task fails
        signal = signals.FAIL
    return signal(f"{run['id']} finished in state {state!r}", result=run["id"])


# -- a child's results ---------------------------------------------------------------
_PACKED = re.compile(r"#\d+\+\d+$")


def _read_result(location):
    """A checkpointed value, from where the run that made it wrote it.

    Runs from the store pack results into one file per run (`file#offset+length`);
    a task with its own `result=LocalResult(...)` wrote a file. Both are
    pickled unless the task chose JSONSerializer, which is tried second."""
    from ..core.results import LocalResult, PackedResult
    from ..core.serializers import JSONSerializer, PickleSerializer

    packed = _PACKED.search(location) is not None
    last_error = None
    for serializer in (PickleSerializer(), JSONSerializer()):
        reader = (PackedResult(os.path.dirname(location), serializer=serializer) if packed
                  else LocalResult(serializer=serializer, validate_dir=False))
        try:
            return reader.read(location)
        except ResultError:
            raise
        except Exception as exc:  # not this serializer's bytes: try the next
            last_error = exc
    raise ResultError(f"The result at {location} cannot be read with the pickle or JSON "
                      f"serializer: {last_error}")


def _task_run(task_runs, run_id, task_slug, map_index):
    for row in task_runs:
        index = row["map_index"]
        if row["task_slug"] == task_slug and (-1 if index is None else index) == map_index:
            return row
    slugs = sorted({row["task_slug"] for row in task_runs})
    where = f"{task_slug!r}" if map_index == -1 else f"{task_slug!r} with map_index {map_index}"
    raise InputError(
        f"Flow run {run_id} has no task run {where}; its task slugs are "
        f"{', '.join(slugs) or 'none'}. A task's slug is its name and a number, "
        "e.g. 'load-1' (see `orchestrator show RUN`)")


def _task_result(row, run_id):
    index = row["map_index"]
    shown = row["task_slug"] + (f"[{index}]" if index is not None and index >= 0 else "")
    if row["state"] not in (StateName.SUCCESS, StateName.CACHED):
        raise signals.FAIL(
            f"Task run {shown} of flow run {run_id} ended {row['state']}"
            f"{': ' + row['message'] if row.get('message') else ''}, so it has no result")
    if not row.get("result_location"):
        raise signals.FAIL(
            f"Task run {shown} of flow run {run_id} succeeded but its result was not "
            "kept (checkpoint=False, or the run was not started from the store)")
    return _read_result(row["result_location"])


@task(name="get_task_run_result")
def get_task_run_result(flow_run_id, task_slug, map_index=-1, poll_time=5):
    """The result of task `task_slug` (e.g. 'load-1') in flow run `flow_run_id`,
    once that run has finished; for a mapped task with map_index -1, the list
    of its children's results."""
    if not task_slug:
        raise InputError("get_task_run_result: task_slug is empty; pass the task's slug, "
                         "e.g. 'load-1' (a task's slug is its name and a number)")
    if str(context.get("flow_run_id")) == str(flow_run_id):
        raise InputError(
            f"get_task_run_result: flow_run_id={flow_run_id!r} is the flow run this task "
            "belongs to, which cannot finish while this task waits for it; pass the id "
            "of another run (e.g. what create_flow_run returned)")
    api = _runs_api()
    try:
        _watch_run(api, flow_run_id, stream_states=False,
                   poll_interval=_seconds(poll_time, "poll_time"))
        task_runs = api.get_task_runs(flow_run_id)
    finally:
        api.close()
    row = _task_run(task_runs, flow_run_id, task_slug, map_index)
    if row["state"] == StateName.MAPPED and map_index == -1:
        children = sorted((r for r in task_runs if r["task_slug"] == task_slug
                           and r["map_index"] is not None and r["map_index"] >= 0),
                          key=lambda r: r["map_index"])
        return [_task_result(child, flow_run_id) for child in children]
    return _task_result(row, flow_run_id)
