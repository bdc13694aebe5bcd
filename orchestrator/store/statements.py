"""Statements the store runs on its hot paths, built by peewee once per SQL dialect.

Building a query is most of the cost of a one-row indexed statement. A statement
here is defined once, by a function that builds its peewee query from stand-ins
for its values; its SQL text is kept per dialect (SQLite, PostgreSQL), and each
call puts its own values where the stand-ins were:

    @statement("attempt_of")
    def _(run_id):
        return m.FlowRun.select(m.FlowRun.attempt).where(m.FlowRun.id == run_id)

    execute(db, "attempt_of", 12).fetchone()

A statement whose form depends on the call (which columns a state change sets)
is `shaped`: its builder takes the shape (any hashable value) and a list of
stand-ins, and a text is kept per shape; `shapes=` names the ones to build ahead.

A process builds a text the first time it runs it, which costs as much as it
saves if the process runs it once: a run process. `build_ahead(url)` builds every
text for the dialect of `url` before it is needed; the warm-start process calls it
before it forks, so the run processes find them all built.
"""

import peewee as pw

__all__ = ["statement", "execute", "build_ahead", "dialect"]

_STAND_INS = 64  # the most values a statement takes
_BUILDERS = {}   # name -> (build, shaped, shapes to build ahead)
_TEXTS = {}      # (dialect, name, shape) -> _Text
# Databases of each dialect that only render SQL (never connected).
_RENDERERS = {"sqlite": pw.SqliteDatabase(None), "postgresql": pw.PostgresqlDatabase(None)}


class _StandIn:
    """Stands for value number `index` while a statement is built."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


# Passed to builders: a value peewee puts in the SQL as a parameter, unconverted.
_NODES = tuple(pw.Value(_StandIn(i), converter=False) for i in range(_STAND_INS))


class _Text:
    """A statement's SQL for one dialect, and where each value goes."""

    __slots__ = ("sql", "slots")

    def __init__(self, query, renderer):
        self.sql, params = renderer.get_sql_context().sql(query).query()
        # (index of the caller's value, or None and a constant of the statement)
        self.slots = tuple((p.index, None) if isinstance(p, _StandIn) else (None, p)
                           for p in params)

    def params(self, values):
        return [constant if i is None else values[i] for i, constant in self.slots]


def statement(name, shaped=False, shapes=()):
    """Register the builder of statement `name` (a decorator): it takes the
    stand-ins of the statement's values, or (shaped) the shape and a list of
    stand-ins."""
    def register(build):
        if name in _BUILDERS:
            raise ValueError(f"statement {name!r} is defined twice")
        _BUILDERS[name] = (build, shaped, tuple(shapes))
        return build
    return register


def dialect(db):
    return "sqlite" if isinstance(db, pw.SqliteDatabase) else "postgresql"


def execute(db, name, *values, shape=None):
    """Run statement `name` on `db` with `values`; the cursor."""
    text = _text(dialect(db), name, shape)
    return db.execute_sql(text.sql, text.params(values))


def _text(kind, name, shape):
    text = _TEXTS.get((kind, name, shape))
    if text is None:
        build, shaped, _ = _BUILDERS[name]
        query = build(shape, list(_NODES)) if shaped else build(*_NODES[:_arity(build)])
        text = _TEXTS[(kind, name, shape)] = _Text(query, _RENDERERS[kind])
    return text


def _arity(build):
    return build.__code__.co_argcount


def build_ahead(url):
    """Build every statement's text (and its named shapes) for the dialect of
    database URL `url`."""
    kind = "sqlite" if url.startswith("sqlite:") else "postgresql"
    for name, (_, shaped, shapes) in _BUILDERS.items():
        for shape in (shapes if shaped else (None,)):
            _text(kind, name, shape)
