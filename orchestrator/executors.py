"""Executors: `LocalExecutor`, `LocalDaskExecutor`, `DaskExecutor`."""

from .engine.executors import *  # noqa: F401,F403
from .engine.executors import __all__  # noqa: F401
