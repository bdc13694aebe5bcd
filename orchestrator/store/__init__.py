"""The embedded store: the only package that imports peewee.

`Store` is the facade the rest of the package uses; it returns plain values.
"""

from .errors import Conflict, NotFound, StoreError
from .store import TERMINAL_STATES, Store, default_run_name

__all__ = ["Store", "StoreError", "NotFound", "Conflict", "TERMINAL_STATES",
           "default_run_name"]
