"""Run configs: what a flow run needs from the agent that runs it (`LocalRun`,
`UniversalRun`, Prefect 1's `DockerRun`, ...).

A public import path; the implementation is `orchestrator.flows.run_configs`."""

from .flows.run_configs import *  # noqa: F401,F403
from .flows.run_configs import __all__  # noqa: F401
