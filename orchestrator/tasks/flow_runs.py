"""Tasks that act on flow runs.

    from orchestrator.tasks.flow_runs import RenameFlowRun

    def rename_handler(flow, old_state, new_state):
        if new_state.is_running():
            RenameFlowRun().run(flow_run_name=f"report-{context.parameters['day']}")

A run can also be named when it is created: `orchestrator run FLOW --name ...`.
"""

import logging

from ..core.context import context
from ..core.task import Task
from ..exceptions import OrchestratorError

__all__ = ["RenameFlowRun"]

logger = logging.getLogger(__name__)


class RenameFlowRun(Task):
    """Rename a flow run (default: the current one) in the store."""

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
        from ..store import Store

        store = Store.open()
        try:
            store.rename_flow_run(int(run_id), name)
        finally:
            store.close()
        return True
