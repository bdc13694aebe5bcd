"""Opening the database: SQLite under ORCHESTRATOR_HOME by default, or the
`ORCHESTRATOR_DATABASE_URL` (a `postgresql://` URL) when set.

SQLite runs in WAL mode with a busy timeout, foreign keys on and
`synchronous=NORMAL`; write transactions begin IMMEDIATE, so a writer waits
for the lock up front instead of failing half-way with "database is locked".
Migrations run under a host-wide file lock, so two processes starting at once
apply each migration once.
"""

import errno
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import filelock
import peewee as pw
from playhouse.db_url import connect as connect_url
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
from playhouse.migrate import migrate as migrate_columns

from ..config import home_dir, private_dir
from . import models
from .errors import DiskFull, StoreError

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


def open_database(home=None, url=None):
    """Connect to the store's database and bring its schema up to date.

    One database object per URL per process: every Store in the process
    shares it (the models are bound through one proxy), so a task that opens
    a Store inside a run uses the run's connection, not a second one that
    would wait for the first one's lock.
    """
    home = Path(home or home_dir())
    url = url or database_url(home)
    with _open_lock:
        if url not in _open:
            _open[url] = _connect(home, url)
        db, lock_path = _open[url]
        models.database.initialize(db)
    try:
        current = schema_version(db)  # one cheap query; the lock only to migrate
    except (pw.DatabaseError, sqlite3.DatabaseError):
        current = None  # migrate() says what is wrong
    if current != MIGRATIONS[-1][0]:
        with filelock.FileLock(lock_path, timeout=60):
            migrate(db)
    return db


def _connect(home, url):
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
        try:
            db = connect_url(url)
        except Exception as exc:
            raise StoreError(f"Cannot use ORCHESTRATOR_DATABASE_URL {url!r}: {exc}") from None
        lock_path = str(home / "migrate.lock")
    else:
        raise StoreError(
            f"ORCHESTRATOR_DATABASE_URL {url!r} is not supported; use "
            "sqlite:////absolute/path.db or postgresql://user:pass@host/db"
        )
    try:
        db.connect(reuse_if_open=True)
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        raise StoreError(f"Cannot open the database at {url}: {exc}") from None
    models.database.initialize(db)
    return db, lock_path


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
]


def schema_version(db):
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
