"""Who leads: one scheduler and one reaper act per database, whatever the
number of hosts and processes sharing it.

    leadership = Leadership(store, "scheduler")
    if leadership.is_leader():      # asked at every tick: take it, or check it
        scheduler.run_once()
    leadership.leading              # the answer of the last tick (for status pages)
    leadership.release()            # another process may lead now

The lock is the database's (see store/leadership.py): a PostgreSQL advisory
lock held on a session of its own, or, on SQLite, a file next to the database
file. A process that does not lead asks again at its next tick, so when the
leader dies another process takes over within a tick; a leader whose session
is gone (a dropped connection, a restarted server) notices at its next tick,
says so and stands by until it can lead again.
"""

import logging
import threading

from ..store.leadership import leader_lock

logger = logging.getLogger(__name__)


class Leadership:
    """Whether this process leads `role` ("scheduler" or "reaper") for its
    database. See the module docstring."""

    def __init__(self, store, role, lock_path=None):
        self.role = role
        self.lock = leader_lock(store, role, lock_path)
        self.leading = False
        self._told = None  # the problem last logged, so each is logged once
        self._mutex = threading.Lock()  # ticks and a status page may ask at once

    @property
    def where(self):
        """The lock, in words (a file path, or the advisory lock's keys)."""
        return self.lock.where

    def is_leader(self):
        """Lead if nobody else does, or check that this process still does; never
        waits for the lock."""
        with self._mutex:
            if self.leading and not self.lock.holds():
                self.leading = False
                logger.warning("Leadership: this process lost the %s lock (%s: %s); it "
                               "stands by and takes the lock again when it is free",
                               self.role, self.where, self.lock.problem or "released")
            if not self.leading:
                self.leading = self.lock.acquire()
                if self.leading:
                    logger.info("Leadership: this process leads the %s for the database "
                                "(%s)", self.role, self.where)
                self._say_problem()
            return self.leading

    def release(self):
        """Give the lock up (another process may take it at its next tick)."""
        with self._mutex:
            self.lock.release()
            self.leading = False

    def _say_problem(self):
        problem = self.lock.problem
        if problem and problem != self._told:
            logger.warning("Leadership: cannot ask whether this process may lead the %s "
                           "(%s): %s; it stands by and asks again at its next tick",
                           self.role, self.where, problem)
        self._told = problem
