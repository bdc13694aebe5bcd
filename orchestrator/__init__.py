"""orchestrator: write flows with the Prefect 1 API, run them in one process.

    from orchestrator import Flow, task, Parameter

    @task
    def say(name):
        print(f"hello {name}")

    with Flow("hello") as flow:
        say(Parameter("name", default="world"))

    flow.run()
"""

__version__ = "0.1.0"

from . import (cache_validators, executors, results, serializers, signals,  # noqa: E402
               states, triggers)
from .core.context import context  # noqa: E402
from .core.control_flow import case, ifelse, merge, switch  # noqa: E402
from .core.edge import Edge, flatten, mapped, unmapped  # noqa: E402
from .core.flow import Flow  # noqa: E402
from .core.task import DateTimeParameter, Parameter, Task, task  # noqa: E402
from .engine.run_logging import get_logger  # noqa: E402
from .exceptions import OrchestratorError  # noqa: E402

__all__ = [
    "Flow", "Task", "task", "Parameter", "DateTimeParameter", "Edge", "unmapped",
    "mapped", "flatten", "case", "merge", "ifelse", "switch", "context", "get_logger",
    "signals", "states", "triggers", "executors", "results", "serializers",
    "cache_validators", "OrchestratorError", "Client", "__version__",
]


def __getattr__(name):
    # The client imports http.client (~15 ms): only for those who use it, not
    # for every flow run's process.
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
