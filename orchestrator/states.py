"""Run states (`from orchestrator.states import Success, Failed, ...`)."""

from .core.states import *  # noqa: F401,F403
from .core.states import __all__  # noqa: F401
