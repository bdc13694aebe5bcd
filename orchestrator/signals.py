"""Signals a task raises to end in a chosen state (`FAIL`, `RETRY`, `SKIP`, ...)."""

from .core.signals import *  # noqa: F401,F403
from .core.signals import __all__  # noqa: F401
