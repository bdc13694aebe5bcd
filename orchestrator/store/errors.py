"""Errors the store raises: plain exceptions, so callers never see peewee."""

import threading
import time

# The domain errors live with the others; the store raises them too.
from ..exceptions import AttemptLost, Conflict, NotFound, OrchestratorError, Unavailable  # noqa: F401,E501


class StoreError(OrchestratorError):
    """The database cannot be opened, migrated or written."""


class StoreUnavailable(StoreError, Unavailable):
    """The database cannot be written now, but will be again (its disk is full, or
    its server takes no connection): the same call later works. Nothing was
    written."""


class DiskFull(StoreUnavailable):
    """The disk that holds the database is full."""


class DatabaseUnreachable(StoreUnavailable):
    """The database server takes no connection now: all its connections are in
    use ("too many clients"), it is starting or stopping, or it does not answer."""


class OutageLog:
    """Says once a minute, in one line, that the store cannot be written, and
    once that it can again: a full disk must not turn a service's log into a
    traceback every tick (which would fill what is left of the disk).

        outage = OutageLog(logger, probe=store.probe_write)
        try:
            step()
            outage.ok()
        except StoreUnavailable as exc:
            outage.failed("the agent", exc)

    A nearly full disk lets small writes through and fails larger ones, and a
    step that wrote nothing says nothing of the store: the store counts as
    writable again after QUIET seconds without a failure and a `probe` (a
    small write) that works.
    """

    EVERY = 60.0
    QUIET = 10.0

    def __init__(self, logger, probe=None, every=EVERY, quiet=QUIET):
        self.logger = logger
        self.probe = probe
        self.every = every
        self.quiet = quiet
        self.since = None       # when the current outage was first seen
        self._failed = None     # when a write last failed
        self._said = None       # when the outage was last said
        self._lock = threading.Lock()

    def failed(self, who, exc, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            self._failed = now
            if self.since is None:
                self.since = now
            if self._said is not None and now - self._said < self.every:
                return
            self._said = now
        self.logger.error("%s cannot write to the store: %s (said once a minute while it "
                          "lasts)", who, exc)

    def ok(self, now=None):
        """A step went well: if the store was unwritable and has been quiet long
        enough, say that it is writable again."""
        now = time.monotonic() if now is None else now
        if self.since is None or now - self._failed < self.quiet:
            return
        if self.probe is not None:
            try:
                self.probe()
            except StoreUnavailable:
                return  # still unwritable; the steps that write say so
        with self._lock:
            since, failed, self.since = self.since, self._failed, None
        if since is not None:
            self.logger.warning("The store can be written again (it could not be for "
                                "%.0f s).", failed - since)
