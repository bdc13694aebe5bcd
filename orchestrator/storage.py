"""Flow storage: where a registered flow is kept (`Local`, `Script`, `Module`,
`Git` and Prefect 1's `GitHub`, `S3`, ...).

A public import path; the implementation is `orchestrator.flows.storage`."""

from .flows.storage import *  # noqa: F401,F403
from .flows.storage import __all__  # noqa: F401
