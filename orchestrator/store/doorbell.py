"""The doorbell: how an agent in another process learns at once that a run may
be due, instead of at its next poll.

Whatever makes a run Scheduled rings it: a run created (by the API, the CLI, a
schedule, a library task), a claim given back, a run scheduled again.
- SQLite (one host): ringing touches a small file beside the database; a
  listener is told by the kernel (inotify, on Linux), or else looks at the
  file's time every 10 ms (a `stat`, no query, no lock).
- PostgreSQL (any host): a trigger on flow_run NOTIFYs `orchestrator_runs`
  whenever a row becomes Scheduled (migration 11); a listener LISTENs on a
  connection of its own and wakes when the server says so.

A missed ring costs nothing worse than the agent's poll interval.
"""

import os
import select
import socket
import time

import peewee as pw

CHANNEL = "orchestrator_runs"
LOOK_EVERY = 0.01  # seconds between looks at the SQLite doorbell file, without inotify
_IN_MODIFY, _IN_ATTRIB, _IN_DELETE_SELF, _IN_MOVE_SELF = 0x2, 0x4, 0x400, 0x800


def bell_path(db):
    """The SQLite doorbell's file (None on PostgreSQL)."""
    if isinstance(db, pw.SqliteDatabase):
        return db.database + ".due"
    return None


def ring(db):
    """Say that runs may be due (SQLite; PostgreSQL's trigger rings itself)."""
    path = bell_path(db)
    if path is None:
        return
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.utime(path)
        except OSError:
            pass  # a bell that cannot ring: agents find the run at their next poll
    except OSError:
        pass


class Listener:
    """Waits for the doorbell. `wait(timeout)` is True when it rang (since the
    last wait), False when the time ran out."""

    def __init__(self, db):
        self._path = bell_path(db)
        self._conn = None
        self._seen = None
        self._notify = None  # an inotify descriptor watching the bell file
        if self._path is None:
            self._conn = _listen(db)
        else:
            ring(db)  # the file exists from now on, to be watched
            self._notify = _watch(self._path)
            self._seen = self._stamp()

    def _stamp(self):
        try:
            return os.stat(self._path).st_mtime_ns
        except OSError:
            return None

    def wait(self, timeout):
        if self._conn is not None:
            return self._wait_for_notice(timeout)
        if self._notify is not None:
            return self._wait_for_kernel(timeout)
        deadline = time.monotonic() + timeout
        while True:
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(LOOK_EVERY, left))

    def _wait_for_kernel(self, timeout):
        ready, _, _ = select.select([self._notify], [], [], timeout)
        if not ready:
            return False
        try:
            events = os.read(self._notify, 4096)
        except BlockingIOError:
            return False
        if any(int.from_bytes(events[i + 4:i + 8], "little") & (_IN_DELETE_SELF | _IN_MOVE_SELF)
               for i in _event_offsets(events)):
            os.close(self._notify)  # the file went: watch the new one
            self._notify = _watch(self._path)
        return True

    def _wait_for_notice(self, timeout):
        ready, _, _ = select.select([self._conn], [], [], timeout)
        if not ready:
            return False
        self._conn.poll()
        rang = bool(self._conn.notifies)
        self._conn.notifies.clear()
        return rang

    def close(self):
        if self._notify is not None:
            os.close(self._notify)
            self._notify = None
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: S110 - closing anyway
                pass
            self._conn = None


def _watch(path):
    """An inotify descriptor told when the file at `path` is touched; None where
    there is no inotify (the listener then looks at the file's time)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, os.fsencode(path),
                                  _IN_MODIFY | _IN_ATTRIB | _IN_DELETE_SELF | _IN_MOVE_SELF) < 0:
            os.close(fd)
            return None
        return fd
    except (OSError, AttributeError):
        return None


def _event_offsets(data):
    """Where each inotify event starts in `data` (16 bytes of header, then its name)."""
    offset = 0
    while offset + 16 <= len(data):
        yield offset
        offset += 16 + int.from_bytes(data[offset + 12:offset + 16], "little")


def _listen(db):
    import psycopg2

    params = dict(db.connect_params)
    database = db.database
    params.setdefault("dsn" if database.startswith("postgresql://") else "dbname", database)
    params.setdefault("connect_timeout", 10)
    params["application_name"] = f"orchestrator doorbell {socket.gethostname()}:{os.getpid()}"
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {CHANNEL}")
    return conn
