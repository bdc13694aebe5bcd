"""SQLite tasks: one query, or a whole script, against a database file.

    from orchestrator.tasks.sqlite import SQLiteQuery, SQLiteScript

    create = SQLiteScript(db="app.db", script="CREATE TABLE IF NOT EXISTS t (x INTEGER);")
    count = SQLiteQuery(db="app.db")

    with Flow("db") as flow:
        made = create()
        rows = count(query="SELECT count(*) FROM t WHERE x > ?", data=(3,),
                     upstream_tasks=[made])           # [(n,)]

As Prefect 1's `prefect.tasks.database.sqlite`: SQLiteQuery runs one statement
and returns every row it gives (a list of tuples); SQLiteScript runs a script
of several statements and returns None. Unlike Prefect 1, a query that
changes rows (INSERT, UPDATE, DELETE) is committed: Prefect 1 closes the
connection without committing, so such a change is silently lost.
"""

import sqlite3
from contextlib import closing

from ..core.task import Task
from ..exceptions import InputError
from .run_defaults import defaults_from_attrs

__all__ = ["SQLiteQuery", "SQLiteScript"]


def _check_db(task, db):
    if db is None:
        raise InputError(f"{type(task).__name__} {task.name!r}: the db must be specified; "
                         "pass db='path/to/file.db' to the task or when calling it")


class SQLiteQuery(Task):
    """Runs one SQL statement (with `data` for its `?` placeholders); returns its rows."""

    def __init__(self, db=None, query=None, data=(), **kwargs):
        self.db = db
        self.query = query
        self.data = data
        super().__init__(**kwargs)

    @defaults_from_attrs("db", "query", "data")
    def run(self, db=None, query=None, data=()):
        _check_db(self, db)
        if query is None:
            raise InputError(f"SQLiteQuery {self.name!r}: the query string must be "
                             "specified; pass query='SELECT ...' to the task or when calling it")
        if "?" in query and not data:
            raise InputError(
                f"SQLiteQuery {self.name!r}: the query has '?' placeholders but no data; "
                "the data inputs must be specified as a tuple, e.g. data=(3,)")
        with closing(sqlite3.connect(db)) as conn:
            with conn:  # commits a change, rolls back on an error
                with closing(conn.cursor()) as cursor:
                    cursor.execute(query, data)
                    return cursor.fetchall()


class SQLiteScript(Task):
    """Runs a script of SQL statements; returns None."""

    def __init__(self, db=None, script=None, **kwargs):
        self.db = db
        self.script = script
        super().__init__(**kwargs)

    @defaults_from_attrs("db", "script")
    def run(self, db=None, script=None):
        _check_db(self, db)
        if script is None:
            raise InputError(f"SQLiteScript {self.name!r}: the query script string must be "
                             "specified; pass script='CREATE TABLE ...;' to the task or when "
                             "calling it")
        with closing(sqlite3.connect(db)) as conn:
            with closing(conn.cursor()) as cursor:
                cursor.executescript(script)
