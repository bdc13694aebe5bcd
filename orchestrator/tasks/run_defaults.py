"""Task templates: run arguments that fall back to what the constructor was given.

    class Query(Task):
        def __init__(self, db=None, query=None, **kwargs):
            self.db, self.query = db, query
            super().__init__(**kwargs)

        @defaults_from_attrs("db", "query")
        def run(self, db=None, query=None):
            ...

    q = Query(db="app.db")      # a template
    q(query="select 1")         # in a flow: db comes from the template

As in Prefect 1 (`prefect.utilities.tasks.defaults_from_attrs`), an argument
falls back to the attribute only when it is not passed at all; passing
`None` on purpose keeps `None`. An argument passed by position counts as
passed (Prefect 1 raises "got multiple values" there).
"""

import functools
import inspect

__all__ = ["defaults_from_attrs"]


def defaults_from_attrs(*attr_names):
    """Decorate a Task's `run` so each named keyword argument that is not given
    takes the task's attribute of the same name."""
    for name in attr_names:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(
                f"defaults_from_attrs({name!r}): pass the names of run()'s keyword "
                "arguments as strings, e.g. @defaults_from_attrs('db', 'query')")

    def decorate(run):
        # The names that positional arguments fill, after `self`.
        positional = [p.name for p in list(inspect.signature(run).parameters.values())[1:]
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

        @functools.wraps(run)
        def run_with_defaults(self, *args, **kwargs):
            given = set(positional[:len(args)])
            for name in attr_names:
                if name not in kwargs and name not in given:
                    kwargs[name] = getattr(self, name)
            return run(self, *args, **kwargs)

        return run_with_defaults

    return decorate
