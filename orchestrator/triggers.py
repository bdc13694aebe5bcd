"""Triggers: functions of upstream states that decide whether a task runs."""

from .core.triggers import *  # noqa: F401,F403
from .core.triggers import __all__  # noqa: F401
