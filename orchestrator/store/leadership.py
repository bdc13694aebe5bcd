"""Locks that one process per database holds: who leads the scheduler, who
leads the reaper.

    lock = leader_lock(store, "scheduler")
    lock.acquire()     # True when this process holds it now (never waits)
    lock.holds()       # still held? (False once its session is gone)
    lock.release()

On PostgreSQL the lock is a session-level advisory lock, taken on a
connection of its own that the leader keeps for as long as it leads: when the
leader dies, or its connection drops, or the server restarts, the session ends
and the lock is free for another host at once. (A process that stands by
holds no connection: it asks again at its next tick.) The key is the pair
(`ADVISORY_NAMESPACE`, the role's number in `ROLE_KEYS`); `pg_locks` shows the
holder, and `pg_stat_activity` names it ("orchestrator scheduler HOST:PID").

On SQLite the lock is a file next to the database file
(`orchestrator.db.scheduler.lock`), so every process that opens that database
file, whatever its ORCHESTRATOR_HOME, shares it; the kernel frees it when the
holder dies.

A lock elects who does the work, it does not make the work safe: between a
check and the work the lock can be lost, and another process can start. The
work is safe anyway (scheduled runs have unique keys, the reaper's writes are
compare-and-sets on the run's attempt); leadership only keeps it from being
done, and logged, by every host.
"""

import os
import socket
from pathlib import Path

import filelock
import peewee as pw

from ..config import home_dir

ADVISORY_NAMESPACE = 0x6F726368  # "orch": the first key of every leadership lock
ROLE_KEYS = {"scheduler": 1, "reaper": 2}


def leader_lock(store, role, lock_path=None):
    """The lock that elects the process leading `role` ("scheduler" or "reaper")
    for `store`'s database. `lock_path` puts SQLite's lock file elsewhere (it
    has no meaning on PostgreSQL)."""
    if role not in ROLE_KEYS:
        raise ValueError(f"Leadership role {role!r} is unknown; use one of "
                         f"{', '.join(sorted(ROLE_KEYS))}")
    if isinstance(store.db, pw.PostgresqlDatabase):
        return AdvisoryLock(store.db, role)
    if lock_path is None:
        database = str(store.db.database or "")
        lock_path = (f"{database}.{role}.lock" if database and database != ":memory:"
                     else home_dir() / f"{role}.lock")
    return FileLock(lock_path)


class FileLock:
    """SQLite: a file lock, taken without waiting and kept until released."""

    def __init__(self, path):
        self.path = Path(path)
        self.where = str(self.path)
        self.problem = None
        self._lock = None

    def acquire(self):
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Not thread-local: the status page asks from another thread.
            self._lock = filelock.FileLock(str(self.path), thread_local=False)
        if self._lock.is_locked:
            return True
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        except OSError as exc:
            self.problem = f"cannot use the lock file {self.path}: {exc.strerror or exc}"
            return False
        self.problem = None
        return True

    def holds(self):
        return self._lock is not None and self._lock.is_locked

    def release(self):
        if self._lock is not None and self._lock.is_locked:
            self._lock.release(force=True)


class AdvisoryLock:
    """PostgreSQL: `pg_try_advisory_lock(ADVISORY_NAMESPACE, role key)` on a
    connection of its own (never one of the store's pool, whose sessions come and
    go), held while this process leads."""

    def __init__(self, db, role):
        self.role = role
        self.key = (ADVISORY_NAMESPACE, ROLE_KEYS[role])
        self.where = (f"PostgreSQL advisory lock ({self.key[0]}, {self.key[1]}) on "
                      f"database {db.database}")
        self.problem = None  # why the last attempt could not ask the database
        self._db = db
        self._conn = None

    def acquire(self):
        if self._conn is not None and self.holds():
            return True
        try:
            self._conn = self._connect()
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key)
                taken = cur.fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - any driver error: not leading, say why
            self.problem = _first_line(exc)
            self._close()
            return False
        self.problem = None
        if not taken:
            self._close()  # one standing by keeps no connection open
        return bool(taken)

    def holds(self):
        """Whether this session still holds the lock (asked of the server: a dropped
        connection or a restarted server is noticed here)."""
        if self._conn is None:
            return False
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                            "AND pid = pg_backend_pid() AND granted AND classid = %s "
                            "AND objid = %s AND objsubid = 2)", self.key)
                held = cur.fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - the session is gone or unusable
            self.problem = _first_line(exc)
            held = False
        if not held:
            self._close()
        return bool(held)

    def release(self):
        """Close the session: the server frees the lock with it."""
        self._close()

    def _connect(self):
        import psycopg2

        params = dict(self._db.connect_params)
        # The client notices a vanished server; the server (below) a vanished
        # client, and frees the lock for another host within about 25 seconds.
        for key, value in (("connect_timeout", 10), ("keepalives", 1),
                           ("keepalives_idle", 10), ("keepalives_interval", 5),
                           ("keepalives_count", 3)):
            params.setdefault(key, value)
        params["application_name"] = (f"orchestrator {self.role} "
                                      f"{socket.gethostname()}:{os.getpid()}")[:63]
        database = self._db.database
        params.setdefault("dsn" if database.startswith("postgresql://") else "dbname", database)
        conn = psycopg2.connect(**params)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = '10s'; SET tcp_keepalives_idle = 10; "
                        "SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")
            if conn.server_version >= 140000:
                # A server-wide idle timeout must not end the leader's quiet session.
                cur.execute("SET idle_session_timeout = 0")
        return conn

    def _close(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
