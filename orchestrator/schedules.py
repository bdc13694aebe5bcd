"""Schedules: when a registered flow runs (`Schedule`, `CronClock`,
`IntervalClock`, `CronSchedule`, ...).

A public import path; the implementation is `orchestrator.core.schedules`."""

from .core.schedules import *  # noqa: F401,F403
from .core.schedules import __all__  # noqa: F401
