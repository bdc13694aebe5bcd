"""Errors the store raises: plain exceptions, so callers never see peewee."""

import difflib

from ..exceptions import OrchestratorError


class StoreError(OrchestratorError):
    """The database cannot be opened, migrated or written."""


class NotFound(OrchestratorError, LookupError):
    """No such project, flow, run or secret."""

    @classmethod
    def named(cls, kind, name, known, fix=""):
        close = difflib.get_close_matches(str(name), [str(k) for k in known], n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return cls(f"No {kind} named {name!r}.{hint}{(' ' + fix) if fix else ''}")


class Conflict(OrchestratorError):
    """The request contradicts what is stored (e.g. a reused idempotency key)."""
