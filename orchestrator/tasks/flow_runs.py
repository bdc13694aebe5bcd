"""Tasks that act on flow runs: flow of flows, and renaming.

    from orchestrator.tasks.flow_runs import create_flow_run, wait_for_flow_run

    with Flow("parent") as parent:
        child = create_flow_run(flow_name="child", project_name="etl",
                                parameters={"day": "2024-05-01"})
        wait_for_flow_run(child, raise_final_state=True)

    def rename_handler(flow, old_state, new_state):
        if new_state.is_running():
            RenameFlowRun().run(flow_run_name=f"report-{context.parameters['day']}")

In a run started by `orchestrator up`, these speak to its REST API (the agent
passes ORCHESTRATOR_API_URL to the run's process), so they work from any
process that can reach the server; elsewhere they use the local store.
A child run's default idempotency key is its parent run and task, so a
parent that is retried or restarted does not start a second child.
"""

import datetime as _dt
import logging
import os
import time

from ..core import signals
from ..core.context import context
from ..core.states import TERMINAL_RUN_STATES as TERMINAL_STATES
from ..core.task import Task, task
from ..exceptions import OrchestratorError

__all__ = ["RenameFlowRun", "create_flow_run", "wait_for_flow_run"]

logger = logging.getLogger(__name__)


class _LocalRuns:
    """The Client's flow-run methods over the local store (no server needed)."""

    def __init__(self):
        from ..store import Store

        self.store = Store.open()

    def create_flow_run(self, flow, parameters=None, name=None, labels=None,
                        scheduled_start_time=None, idempotency_key=None):
        from .. import service

        return service.create_flow_run(
            self.store, flow, parameters=parameters, name=name, labels=labels,
            scheduled_start_time=scheduled_start_time, idempotency_key=idempotency_key)

    def get_flow_run(self, run_id):
        return self.store.get_flow_run(run_id)

    def set_flow_run_name(self, run_id, name):
        self.store.rename_flow_run(int(run_id), name)

    def get_logs(self, run_id, after=None, level=None, limit=1000):
        return [dict(row, level_name=logging.getLevelName(row["level"]))
                for row in self.store.logs(int(run_id), after_id=after or 0, limit=limit)]

    def close(self):
        self.store.close()


def _runs_api():
    url = os.environ.get("ORCHESTRATOR_API_URL")
    if not url:
        return _LocalRuns()
    from ..client import Client  # http.client only for runs that need it

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


def _copy_logs(api, run_id, after, page=1000):
    """Log here every line of run `run_id` after id `after`; the last id copied."""
    while True:
        lines = api.get_logs(run_id, after=after, limit=page)
        for line in lines:
            after = line["id"]
            logger.log(line["level"], "Flow run %s: %s", run_id, line["message"])
        if len(lines) < page:
            return after


@task(name="create_flow_run")
def create_flow_run(flow_id=None, flow_name=None, project_name="", parameters=None,
                    labels=None, run_name=None, idempotency_key=None,
                    scheduled_start_time=None):
    """Create a run of a registered flow (by id, or name and project); returns its id."""
    if flow_id is None and not flow_name:
        raise OrchestratorError("create_flow_run needs flow_id=... or flow_name=... "
                                "(with project_name=... when the name is in several projects)")
    flow = flow_id if flow_id is not None else (
        f"{project_name}/{flow_name}" if project_name else flow_name)
    if idempotency_key is None and context.get("running_with_backend", False):
        index = context.get("map_index")
        idempotency_key = (f"flow-run-{context.get('flow_run_id')}-{context.get('task_slug')}"
                           + ("" if index is None else f"-{index}"))
    api = _runs_api()
    try:
        run = api.create_flow_run(flow, parameters=parameters, name=run_name, labels=labels,
                                  scheduled_start_time=scheduled_start_time,
                                  idempotency_key=idempotency_key)
    finally:
        api.close()
    logger.info("Created flow run %s (%s) of %s", run["id"], run["name"], flow)
    return run["id"]


@task(name="wait_for_flow_run")
def wait_for_flow_run(flow_run_id, stream_states=True, stream_logs=False,
                      raise_final_state=False, max_duration=_dt.timedelta(hours=12),
                      poll_interval=1.0):
    """Wait for a flow run to finish; returns the run (a dict).

    With `raise_final_state`, this task ends in the child's final state (Failed
    when the child failed). `stream_logs` copies the child's log lines here.
    """
    limit = max_duration.total_seconds() if isinstance(max_duration, _dt.timedelta) \
        else float(max_duration)
    deadline = time.monotonic() + limit
    api = _runs_api()
    seen_state, log_cursor = None, 0
    try:
        while True:
            run = api.get_flow_run(flow_run_id)
            if stream_states and run["state"] != seen_state:
                logger.info("Flow run %s (%s): %s%s", run["id"], run["name"], run["state"],
                            f": {run['message']}" if run.get("message") else "")
                seen_state = run["state"]
            if stream_logs:
                log_cursor = _copy_logs(api, run["id"], log_cursor)
            if run["state"] in TERMINAL_STATES:
                break
            if time.monotonic() >= deadline:
                raise signals.FAIL(f"Flow run {run['id']} is still {run['state']} after "
                                   f"{limit:.0f} s (max_duration)")
            time.sleep(poll_interval)
    finally:
        api.close()
    if raise_final_state:
        if run["state"] in ("Success", "Cached"):
            raise signals.SUCCESS(f"Flow run {run['id']} succeeded", result=run)
        if run["state"] == "Skipped":
            raise signals.SKIP(f"Flow run {run['id']} was skipped", result=run)
        raise signals.FAIL(f"Flow run {run['id']} ended {run['state']}: "
                           f"{run.get('message') or 'no message'}", result=run)
    return run
