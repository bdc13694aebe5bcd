"""Opening the database: SQLite under ORCHESTRATOR_HOME by default, or the
`ORCHESTRATOR_DATABASE_URL` (a `postgresql://` URL) when set.

SQLite runs in WAL mode with a busy timeout, foreign keys on and
`synchronous=NORMAL`; write transactions begin IMMEDIATE, so a writer waits
for the lock up front instead of failing half-way with "database is locked".
Migrations run under a lock on the whole database (a file lock beside an
SQLite file; an advisory lock on PostgreSQL, which every host shares), so
processes starting at once, on one host or many, apply each migration once.

On PostgreSQL each process keeps a small pool of connections, sized for it (a
run process: one, shared by its threads in turn): a store call takes one for
its length and gives it back, so a host's processes hold few of the server's
`max_connections`. A server that takes no more connections is a
`DatabaseUnreachable` (a StoreUnavailable): callers wait and try again, as
for a full disk.
"""

import contextlib
import errno
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import peewee as pw
from playhouse.db_url import parse as parse_url
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
from playhouse.migrate import migrate as migrate_columns
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from ..config import home_dir, private_dir
from . import models
from .errors import DatabaseUnreachable, DiskFull, StoreError

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 30000,
    "foreign_keys": 1,
    "synchronous": "normal",
    "cache_size": -16000,
}
_SQLITE_MAGIC = b"SQLite format 3\x00"


def database_url(home=None, environ=None):
    environ = os.environ if environ is None else environ
    url = environ.get("ORCHESTRATOR_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{Path(home or home_dir()) / 'orchestrator.db'}"


def _check_home(home):
    try:
        private_dir(home)
    except OSError as exc:
        raise StoreError(
            f"Cannot create ORCHESTRATOR_HOME {home}: {exc.strerror}. Point "
            "ORCHESTRATOR_HOME at a directory you can write to."
        ) from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise StoreError(
            f"ORCHESTRATOR_HOME {home} is not writable; point ORCHESTRATOR_HOME at a "
            "directory you can write to, or fix its permissions."
        )


def _keep_private(path):
    """The database file readable by its owner only (it holds secrets); SQLite
    gives its -wal and -shm files the database's mode when it makes them."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if name.exists():
                stat = name.stat()
                if stat.st_mode & 0o077 and stat.st_uid == os.geteuid():
                    name.chmod(0o600)
    except OSError:
        pass  # not ours to change; opening it says what is wrong


def _check_sqlite_file(path):
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head != _SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not an SQLite database (it starts with {head[:8]!r}). Move it "
            "aside, or set ORCHESTRATOR_HOME to another directory."
        )


_open = {}
_open_lock = threading.Lock()


def open_database(home=None, url=None, connections=None, private=False, ahead=False):
    """Connect to the store's database and bring its schema up to date.

    One database object per URL per process: every Store in the process
    shares it (the models are bound through one proxy), so a task that opens
    a Store inside a run uses the run's connection, not a second one that
    would wait for the first one's lock. On PostgreSQL, `connections` caps
    the process's pool (default DEFAULT_CONNECTIONS); the first open of a URL
    in the process sets it. A `private` database is one no other process opens
    (a scratch store): it is migrated without taking the migration lock. One
    opened `ahead` (by a run's process before its run comes) is checked then,
    and the next open in the process takes that check instead of its own.
    """
    home = Path(home or home_dir())
    url = url or database_url(home)
    with _open_lock:
        if url not in _open:
            _open[url] = _connect(home, url, connections)
        db, lock_path = _open[url]
        models.database.initialize(db)
        if not ahead and url in _checked_ahead:
            _checked_ahead.discard(url)
            return db
    try:
        try:
            current = schema_version(db)  # one cheap query; the lock only to migrate
        except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
            if connection_error(exc, url) is not None:
                raise
            current = None  # migrate() says what is wrong
        if current != MIGRATIONS[-1][0]:
            with contextlib.nullcontext() if private else _MigrationLock(db, lock_path):
                migrate(db)
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        unreachable = connection_error(exc, url)
        if unreachable is None:
            raise
        raise unreachable from None
    finally:
        release_connection(db)
    if ahead:
        with _open_lock:
            _checked_ahead.add(url)
    return db


_checked_ahead = set()  # URLs opened ahead in this process, whose next open is checked


def close_database(url):
    """Close this process's connection to the database at `url` and forget it
    (a later open connects anew); what else opened it must be done with it.
    The models go back to the database opened before it, if one is open."""
    with _open_lock:
        opened = _open.pop(url, None)
        _checked_ahead.discard(url)
        if opened is not None and models.database.obj is opened[0]:
            earlier = [db for db, _ in _open.values()]
            models.database.initialize(earlier[-1] if earlier else None)
    if opened is not None:
        opened[0].close()


def embedded(home=None):
    """Is the store of `home` an SQLite file (not a PostgreSQL server)?"""
    return database_url(home).startswith("sqlite:")


def _connect(home, url, connections=None):
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        _check_home(path.parent)
        _check_sqlite_file(path)
        _keep_private(path)
        db = _SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE",
                             check_same_thread=False, timeout=30)
        lock_path = str(path) + ".migrate.lock"
    elif url.startswith(("postgres://", "postgresql://")):
        _check_home(home)
        settings = parse_url(url)
        if not settings.get("database"):
            raise StoreError(f"ORCHESTRATOR_DATABASE_URL {safe_url(url)!r} names no "
                             "database; use postgresql://user:pass@host/dbname")
        try:
            db = _PostgresqlPool(max_connections=connections or DEFAULT_CONNECTIONS,
                                 timeout=POOL_WAIT_SECONDS, **settings)
        except Exception as exc:
            raise StoreError(f"Cannot use ORCHESTRATOR_DATABASE_URL {safe_url(url)!r}: "
                             f"{exc}") from None
        lock_path = None  # the lock is in the database (see _MigrationLock)
    else:
        raise StoreError(
            f"ORCHESTRATOR_DATABASE_URL {url!r} is not supported; use "
            "sqlite:////absolute/path.db or postgresql://user:pass@host/db"
        )
    try:
        db.connect(reuse_if_open=True)
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        unreachable = connection_error(exc, url)
        if unreachable is not None:
            raise unreachable from None
        raise StoreError(f"Cannot open the database at {safe_url(url)}: {exc}") from None
    models.database.initialize(db)
    return db, lock_path


# -- connections on PostgreSQL --------------------------------------------------
DEFAULT_CONNECTIONS = 4   # a process's pool, unless it says what it needs
POOL_WAIT_SECONDS = 60    # a thread waits this long for a connection of its pool
MIGRATION_LOCK_SECONDS = 60
# pg_advisory_lock's two-key form (never meets a one-key lock): "orch" as the
# leadership locks (store/leadership.py), and "migr".
_MIGRATION_LOCK_KEY = (0x6F726368, 0x6D696772)


class _PostgresqlPool(PooledPostgresqlDatabase):
    """PostgreSQL with a pool of at most `max_connections` for the process.

    A thread holds a connection for one store call (`release_connection` gives
    it back), so threads share few connections; when all are busy a thread
    waits for one. Checking a connection out costs no round trip: one the
    server dropped fails its next query, which is reported as
    DatabaseUnreachable (the caller tries again) and the pool discards it.
    """

    def _is_closed(self, conn):
        return bool(conn.closed) or self._adapter.txn_status(conn) == self._adapter.txn_unknown

    def connect(self, reuse_if_open=False):
        try:
            return super().connect(reuse_if_open)
        except MaxConnectionsExceeded:
            raise DatabaseUnreachable(
                f"All {self._max_connections} database connections of this process "
                f"(pid {os.getpid()}) stayed busy for {POOL_WAIT_SECONDS} s; nothing was "
                "written. The call can be made again.") from None


def release_connection(db):
    """After a store call: give this thread's connection back to the process's
    pool (PostgreSQL), unless a transaction is still open on it. SQLite keeps
    its connection per thread: it costs the server nothing."""
    if isinstance(db, PooledPostgresqlDatabase) and not db.is_closed() \
            and not db.in_transaction():
        db.close()


class _MigrationLock:
    """The database-wide lock migrations run under: a file lock beside an SQLite
    file; on PostgreSQL a session-level advisory lock on the migrating
    connection, so processes on every host wait for each other."""

    def __init__(self, db, lock_path):
        self.db = db
        self.file_lock = None
        if lock_path:
            import filelock  # (here, on the rare path: a run process need not import it)

            self.file_lock = filelock.FileLock(lock_path, timeout=MIGRATION_LOCK_SECONDS)

    def __enter__(self):
        if self.file_lock is not None:
            self.file_lock.acquire()
            return self
        deadline = time.monotonic() + MIGRATION_LOCK_SECONDS
        while not self.db.execute_sql("SELECT pg_try_advisory_lock(%s, %s)",
                                      _MIGRATION_LOCK_KEY).fetchone()[0]:
            if time.monotonic() > deadline:
                raise StoreError(
                    f"Another process has been migrating the database for over "
                    f"{MIGRATION_LOCK_SECONDS} s (it holds advisory lock "
                    f"{_MIGRATION_LOCK_KEY}); if none is running, look for a stuck "
                    "session in pg_locks, then start again.")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info):
        if self.file_lock is not None:
            self.file_lock.release()
            return
        try:
            self.db.execute_sql("SELECT pg_advisory_unlock(%s, %s)", _MIGRATION_LOCK_KEY)
        except pw.DatabaseError:
            # A session lock outlives a pooled connection: drop it, and the lock.
            self.db.manual_close()



def connection_room(db):
    """On PostgreSQL, the server's connections: {"max": max_connections,
    "reserved": kept for superusers, "in_use": client connections now}; None
    on SQLite (connections cost it nothing)."""
    if not isinstance(db, pw.PostgresqlDatabase):
        return None
    settings = dict(db.execute_sql(
        "SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', "
        "'superuser_reserved_connections', 'reserved_connections')").fetchall())
    in_use, = db.execute_sql("SELECT count(*) FROM pg_stat_activity "
                             "WHERE backend_type = 'client backend'").fetchone()
    reserved = int(settings.get("superuser_reserved_connections", 0)) + int(
        settings.get("reserved_connections", 0))
    return {"max": int(settings["max_connections"]), "reserved": reserved,
            "in_use": int(in_use)}


# SQLSTATEs of a server that takes no connection now: too many clients (53300),
# starting up or shutting down (57P03, 57P01, 57P02), connection failures (08xxx).
_PG_UNREACHABLE = ("53300", "57P01", "57P02", "57P03")
_UNREACHABLE_WORDS = ("too many clients", "remaining connection slots are reserved",
                      "the database system is starting up",
                      "the database system is shutting down",
                      "the database system is in recovery mode",
                      "connection refused", "could not connect to server",
                      "server closed the connection unexpectedly",
                      "terminating connection due to administrator command",
                      "connection already closed", "no connection to the server",
                      "could not translate host name", "timeout expired")


def connection_error(exc, url):
    """The DatabaseUnreachable that database error `exc` (or one in its chain)
    means, or None: a PostgreSQL server that refuses or lost the connection."""
    if url is None or url.startswith("sqlite:"):
        return None
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DatabaseUnreachable):
            return exc
        text = str(exc)
        pgcode = getattr(exc, "pgcode", None) or ""
        if pgcode in _PG_UNREACHABLE or pgcode.startswith("08") or any(
                word in text.lower() for word in _UNREACHABLE_WORDS):
            return _unreachable(url, text)
        nested = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = nested or exc.__cause__ or exc.__context__
    return None


def _unreachable(url, text):
    where = urlsplit(url)
    server = f"{where.hostname or 'localhost'}:{where.port or 5432}"
    why = next((line.split("FATAL:", 1)[-1].strip() for line in text.splitlines()
                if line.strip()), "no answer")
    if "too many" in why or "slots are reserved" in why:
        return DatabaseUnreachable(
            f"PostgreSQL at {server} has no free connection ({why}). orchestrator tries "
            "again; to make room, give agents a lower --limit or raise the server's "
            "max_connections.")
    return DatabaseUnreachable(f"PostgreSQL at {server} takes no connection now ({why}). "
                               "orchestrator tries again once it does.")


def unavailable_error(exc, url):
    """The StoreUnavailable that database error `exc` means (a full disk, or a
    server that takes no connection), or None."""
    return disk_full_error(exc, url) or connection_error(exc, url)


def safe_url(url):
    """`url` without its password."""
    where = urlsplit(url)
    if where.password is None:
        return url
    return url.replace(f":{where.password}@", ":***@", 1)


class _SqliteDatabase(pw.SqliteDatabase):
    """SQLite whose ROLLBACK after a failed write is never an error of its own.

    A full disk or an I/O error makes SQLite roll the transaction back itself;
    peewee's ROLLBACK then fails with "cannot rollback - no transaction is
    active", which would hide the error that matters from the caller.
    """

    def rollback(self):
        try:
            super().rollback()
        except pw.OperationalError as exc:
            if "no transaction is active" not in str(exc):
                raise

    def _set_pragmas(self, conn):
        # One call for all of them: a run process opens a connection per run.
        conn.executescript("".join(f"PRAGMA {key} = {value};" for key, value in self._pragmas))


# -- a full disk ----------------------------------------------------------------
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
_PG_DISK_FULL = "53100"
_LOW_SPACE = 4 * 1024 * 1024  # an I/O error with less free than this is a full disk


def disk_full_error(exc, url):
    """The DiskFull that database error `exc` (or one in its chain) means, or None.

    SQLite says "database or disk is full" (or, when its WAL or shared memory
    cannot grow, an I/O error); PostgreSQL has the SQLSTATE 53100.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "sqlite_errorcode", None)
        text = str(exc)
        if isinstance(exc, sqlite3.Error) or "disk" in text:
            full = (code is not None and code & 0xFF == _SQLITE_FULL) \
                or "database or disk is full" in text
            io_error = (code is not None and code & 0xFF == _SQLITE_IOERR) \
                or "disk I/O error" in text
            if full or (io_error and _free_bytes(url) < _LOW_SPACE):
                return _sqlite_disk_full(url)
        if getattr(exc, "pgcode", None) == _PG_DISK_FULL:
            first = text.strip().splitlines()[0] if text.strip() else "disk full"
            return DiskFull(f"The disk of the PostgreSQL server is full ({first}). Free "
                            "some space there; orchestrator goes on once it can write.")
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _sqlite_disk_full(url)
        nested = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = nested or exc.__cause__ or exc.__context__
    return None


def _sqlite_path(url):
    return Path(url[len("sqlite:///"):]) if url and url.startswith("sqlite:///") else None


def _free_bytes(url):
    path = _sqlite_path(url)
    try:
        return shutil.disk_usage(path.parent).free if path else _LOW_SPACE
    except OSError:
        return _LOW_SPACE


def _sqlite_disk_full(url):
    path = _sqlite_path(url)
    if path is None:
        return DiskFull("The disk that holds the database is full. Free some space there; "
                        "orchestrator goes on once it can write.")
    return DiskFull(f"The disk that holds {path.parent} is full ({_free_bytes(url):,} bytes "
                    f"free), so {path.name} there cannot be written. Free some space on it; "
                    "orchestrator goes on once it can write.")


# -- migrations ---------------------------------------------------------------
def _create_initial_tables(db):
    # Only for databases made by schema version 1; new databases get the
    # current schema at once (see migrate()).
    db.create_tables(models.INITIAL_MODELS)


def _migrator(db):
    return PostgresqlMigrator(db) if isinstance(db, pw.PostgresqlDatabase) else SqliteMigrator(db)


def _add_agents(db):
    db.create_tables([models.Agent])


def _add_scheduling_and_limits(db):
    migrator = _migrator(db)
    migrate_columns(
        migrator.add_column("flow", "schedule_active", models.Flow.schedule_active),
        migrator.add_column("flow_run", "restarts", models.FlowRun.restarts),
        migrator.add_index("flow_run", ("flow_id", "auto_scheduled", "state",
                                        "scheduled_start_time"), False),
    )
    db.create_tables([models.ConcurrencyLimit, models.TaskSlot])


def _index_scheduled_flows(db):
    migrator = _migrator(db)
    migrate_columns(migrator.add_index("flow", ("archived", "schedule_active"), False))


def _add_run_attempts(db):
    # Plain ADD COLUMN with a default: no table rebuild, on either database. (A
    # table made by an earlier migration from today's model has the column.)
    for table, column, kind in (("flow_run", "attempt", "INTEGER NOT NULL DEFAULT 0"),
                                ("agent", "strict_labels", "BOOLEAN NOT NULL DEFAULT FALSE")):
        if column not in {c.name for c in db.get_columns(table)}:
            db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')


def _never_reuse_run_ids(db):
    """SQLite: rebuild flow_run with AUTOINCREMENT (a table's only way to get it),
    rows, ids and indexes kept; foreign keys are off while migrations run, so
    dropping the old table deletes nothing else."""
    if not isinstance(db, pw.SqliteDatabase):
        return
    table_sql, = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'flow_run'").fetchone()
    if "AUTOINCREMENT" in table_sql:
        return
    key = '"id" INTEGER NOT NULL PRIMARY KEY'
    if key not in table_sql:
        raise StoreError("The flow_run table has an unexpected shape; nothing was changed. "
                         "Please report it.")
    indexes = [sql for sql, in db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'flow_run' "
        "AND sql IS NOT NULL").fetchall()]
    columns = ", ".join(f'"{c.name}"' for c in db.get_columns("flow_run"))
    db.execute_sql(table_sql.replace('CREATE TABLE "flow_run"', 'CREATE TABLE "flow_run_new"', 1)
                   .replace(key, key + " AUTOINCREMENT", 1))
    db.execute_sql(f'INSERT INTO "flow_run_new" ({columns}) SELECT {columns} FROM "flow_run"')
    db.execute_sql('DROP TABLE "flow_run"')
    db.execute_sql('ALTER TABLE "flow_run_new" RENAME TO "flow_run"')
    for sql in indexes:
        db.execute_sql(sql)


def _add_artifacts(db):
    # A new table and its indexes: plain CREATEs, nothing rebuilt.
    db.create_tables([models.Artifact])


def _add_process_identity(db):
    # Who runs a process, and on which host (boot and PID namespace): plain
    # ADD COLUMNs, as in _add_run_attempts.
    for table, column in (("agent", "uid"), ("agent", "host_id"),
                          ("flow_run", "host_id"), ("flow_run", "process_id")):
        if column not in {c.name for c in db.get_columns(table)}:
            db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" VARCHAR(255)')


def _add_task_slot_leases(db):
    # A slot belongs to its run's attempt and has a lease: plain ADD COLUMNs,
    # as in _add_run_attempts.
    for column, kind in (("attempt", "INTEGER NOT NULL DEFAULT 0"),
                         ("expires", "DOUBLE PRECISION")):
        if column not in {c.name for c in db.get_columns("task_slot")}:
            db.execute_sql(f'ALTER TABLE "task_slot" ADD COLUMN "{column}" {kind}')


# Indexes that migration 10 drops: each only repeats the start of a composite
# index of its table (see models.py).
_PREFIX_INDEXES = ("flow_run_flow_id", "state_event_flow_run_id", "log_flow_run_id",
                   "artifact_flow_run_id")


def _index_listings(db):
    """Listings read one page through an index whatever their filters (see
    Store.list_flow_runs): indexes for runs of a flow in some states, newest
    first, and for runs in a time range (of a flow), latest scheduled first.
    The foreign-key indexes that repeat the start of a composite index go: every
    insert wrote them for nothing. Plain CREATE and DROP INDEX; no table rebuilt."""
    migrator = _migrator(db)
    # A table made by an earlier migration from today's model has its indexes.
    existing = {index.name for index in db.get_indexes("flow_run")}
    migrate_columns(*[
        migrator.add_index("flow_run", columns, False)
        for columns in (("flow_id", "state", "id"), ("scheduled_start_time", "id"),
                        ("flow_id", "scheduled_start_time", "id"))
        if "_".join(("flow_run",) + columns) not in existing])
    # IF EXISTS: such a table also lacks the ones that go.
    for name in _PREFIX_INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')


def _notify_due_runs(db):
    """PostgreSQL: a run that becomes Scheduled NOTIFYs the doorbell's channel
    (store/doorbell.py), so a listening agent on any host wakes at once. (SQLite
    rings a file beside the database instead: nothing to add.) Identical
    notices of one transaction reach listeners once."""
    if not isinstance(db, pw.PostgresqlDatabase):
        return
    db.execute_sql("CREATE OR REPLACE FUNCTION orchestrator_run_due() RETURNS trigger AS $$ "
                   "BEGIN PERFORM pg_notify('orchestrator_runs', ''); RETURN NULL; END $$ "
                   "LANGUAGE plpgsql")
    db.execute_sql('DROP TRIGGER IF EXISTS flow_run_due ON "flow_run"')
    db.execute_sql('CREATE TRIGGER flow_run_due AFTER INSERT OR UPDATE OF state ON "flow_run" '
                   "FOR EACH ROW WHEN (NEW.state = 'Scheduled') "
                   "EXECUTE PROCEDURE orchestrator_run_due()")


MIGRATIONS = [
    (1, _create_initial_tables),
    (2, _add_agents),
    (3, _add_scheduling_and_limits),
    (4, _index_scheduled_flows),
    (5, _add_run_attempts),
    (6, _never_reuse_run_ids),
    (7, _add_artifacts),
    (8, _add_process_identity),
    (9, _add_task_slot_leases),
    (10, _index_listings),
    (11, _notify_due_runs),
]


def schema_version(db):
    if isinstance(db, pw.SqliteDatabase):  # one statement (every process opens with this)
        try:
            return db.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        except pw.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
    if not db.table_exists("schema_version"):
        return 0
    row = models.SchemaVersion.select(pw.fn.MAX(models.SchemaVersion.version)).scalar()
    return row or 0


def migrate(db):
    """Apply every migration newer than the database, each in its own transaction."""
    try:
        current = schema_version(db)
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        raise StoreError(
            f"The database is not readable as an orchestrator store ({exc}); move it "
            "aside or set ORCHESTRATOR_HOME to another directory."
        ) from None
    latest = MIGRATIONS[-1][0]
    if current > latest:
        raise StoreError(
            f"The database has schema version {current}, newer than this orchestrator "
            f"knows ({latest}); upgrade orchestrator."
        )
    if current == 0:
        # A new database: the current schema at once, every migration applied.
        with db.atomic():
            db.create_tables(models.ALL_MODELS)
            _notify_due_runs(db)  # what the models do not describe
            for version, _ in MIGRATIONS:
                models.SchemaVersion.create(version=version, applied=time.time())
        return
    sqlite = isinstance(db, pw.SqliteDatabase)
    if sqlite:
        # SQLite changes some columns by rebuilding their table; with foreign keys
        # on, dropping the old table would cascade and delete every run, task run
        # and log line. The pragma works only outside a transaction.
        db.pragma("foreign_keys", 0)
    try:
        for version, step in MIGRATIONS:
            if version <= current:
                continue
            with db.atomic():
                step(db)
                if sqlite and db.execute_sql("PRAGMA foreign_key_check").fetchone():
                    raise StoreError(f"Migration {version} would break the database's "
                                     "references; nothing was changed. Please report it.")
                models.SchemaVersion.create(version=version, applied=time.time())
    finally:
        if sqlite:
            db.pragma("foreign_keys", 1)
