"""The embedded store: the only package that imports peewee.

`Store` is the facade the rest of the package uses; it returns plain values.
"""

from .errors import (AttemptLost, Conflict, DiskFull, NotFound, OutageLog, StoreError,
                     StoreUnavailable)
from .db import embedded
from .lifecycle import agent_takes
from .store import TERMINAL_STATES, Store, build_statements_ahead, default_run_name

__all__ = ["Store", "StoreError", "StoreUnavailable", "DiskFull", "AttemptLost", "NotFound",
           "Conflict", "OutageLog", "TERMINAL_STATES", "default_run_name", "agent_takes",
           "build_statements_ahead", "embedded"]
