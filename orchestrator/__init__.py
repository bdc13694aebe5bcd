"""orchestrator: write flows with the Prefect 1 API, run them in one process.

    from orchestrator import Flow, task, Parameter

    @task
    def say(name):
        print(f"hello {name}")

    with Flow("hello") as flow:
        say(Parameter("name", default="world"))

    flow.run()
"""

from .version import __version__

from . import (cache_validators, executors, results, serializers, signals,  # noqa: E402
               states, triggers)
from .core.context import Context, context, raise_on_exception  # noqa: E402
from .core.control_flow import case, ifelse, merge, switch  # noqa: E402
from .core.edge import Edge, flatten, mapped, unmapped  # noqa: E402
from .core.flow import Flow  # noqa: E402
from .core import ports as _ports  # noqa: E402
from .core.mapping import apply_map  # noqa: E402
from .core.resource_manager import ResourceManager, resource_manager  # noqa: E402
from .core.signals import pause_task  # noqa: E402
from .core.task import (DateTimeParameter, Parameter, Task, as_task, tags,  # noqa: E402
                        task)
from .engine.run_logging import get_logger  # noqa: E402
from .exceptions import OrchestratorError  # noqa: E402
from .tasks.run_defaults import defaults_from_attrs  # noqa: E402


def _run_flow(flow, **kwargs):
    from .engine.flow_runner import run_flow

    return run_flow(flow, **kwargs)


def _register_flow(flow, project_name, labels=None, idempotency_key=None):
    """`flow.register()`: into the local store; the flow's version number."""
    from . import service

    store = service.open_store()
    try:
        record, _ = service.register_flow(store, flow, project_name, labels=labels,
                                          idempotency_key=idempotency_key)
    finally:
        store.close()
    return record["version"]


def _visualize(flow, flow_state=None, filename=None, format=None):
    from .engine.visualize import flow_to_dot, render

    dot = flow_to_dot(flow, flow_state)
    if filename is not None:
        render(dot, filename, format or "pdf")
    return dot


def _task_logger(task_name):
    from .engine.run_logging import task_logger

    return task_logger(task_name)


def _read_secret(name):
    """A secret's value, looked up as a flow's `Secret(name).get()` looks it up."""
    from .tasks.secrets import Secret

    return Secret(name).get()


# The core imports nothing above it; what flows need from above is filled in here.
_ports.fill(run_flow=_run_flow, register_flow=_register_flow, visualize=_visualize,
            get_logger=get_logger, task_logger=_task_logger, read_secret=_read_secret)

__all__ = [
    "Flow", "Task", "task", "Parameter", "DateTimeParameter", "Edge", "unmapped",
    "mapped", "flatten", "case", "merge", "ifelse", "switch", "context", "get_logger",
    "signals", "states", "triggers", "executors", "results", "serializers",
    "cache_validators", "OrchestratorError", "Client", "__version__",
    # Prefect 1's utilities (prefect.utilities.tasks, .context, .debug; prefect.engine)
    "apply_map", "resource_manager", "ResourceManager", "tags", "as_task", "pause_task",
    "defaults_from_attrs", "Context", "raise_on_exception", "FlowRunner", "TaskRunner",
]

# Imported on first use: the client pulls in http.client (~15 ms) and the
# runners cloudpickle and the executors, which `import orchestrator` should not
# pay for in every process.
_LAZY = {
    "Client": ("client", "Client"),
    "FlowRunner": ("engine.flow_runner", "FlowRunner"),
    "TaskRunner": ("engine.task_runner", "TaskRunner"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
