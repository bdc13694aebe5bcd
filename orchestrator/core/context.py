"""The run context: a read-only view of what a task may want to know.

    from orchestrator import context
    context.parameters["day"], context.flow_run_name, context.map_index
    context.get("logger").info("hello")

It is a stack of plain mappings held in a `contextvars.ContextVar`: one
mapping per flow run, a small overlay per task run. Nothing is copied per task,
and each thread or asyncio task sees its own run. Assigning to it is an error:
values pass between tasks as parameters or return values, never through the
context (a change here would not reach tasks on other workers anyway).

`with context(key=value):` pushes a layer for the block, for tests and for
values a caller wants every task of a `flow.run()` to see.

`Context(a=1)` (Prefect 1's `prefect.utilities.context.Context`) makes a
read-only mapping of its own, with the same attribute access, that can be
given where a context is expected: `with context(Context(a=1)):`.
"""

import contextlib
import contextvars
from collections.abc import Mapping

from ..exceptions import ContextError
from . import ports

__all__ = ["context", "Context", "raise_on_exception"]

_stack = contextvars.ContextVar("orchestrator_context", default=())

_READ_ONLY = (
    "The run context is read-only, so {what} would not reach other tasks. "
    "Pass values between tasks as a Parameter or as a task's return value."
)


class Context(Mapping):
    """Read-only mapping over the current run's context layers (the `context`
    object), or over its own values when made as `Context(a=1)` or
    `Context({"a": 1})`."""

    __slots__ = ("_values",)

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "_values", dict(*args, **kwargs))

    def _layers(self):
        values = self._values
        return _stack.get() if values is None else (values,)

    def __getitem__(self, key):
        for layer in self._layers():
            if key in layer:
                return layer[key]
        if key == "logger" and self._values is None:
            return ports.call("get_logger")
        raise KeyError(key)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            where = "it is set only inside a run" if self._values is None else "this Context"
            raise AttributeError(
                f"context has no {name!r}; {where} "
                f"(available now: {', '.join(sorted(self)) or 'nothing'})"
            ) from None

    def get(self, key, default=None):
        for layer in self._layers():
            if key in layer:
                return layer[key]
        if key == "logger" and self._values is None:
            return self["logger"]
        return default

    def __contains__(self, key):
        return any(key in layer for layer in self._layers())

    def __iter__(self):
        seen = set()
        for layer in self._layers():
            for key in layer:
                if key not in seen:
                    seen.add(key)
                    yield key

    def __len__(self):
        return sum(1 for _ in self)

    def __setattr__(self, name, value):
        raise ContextError(_READ_ONLY.format(what=f"setting context.{name}"))

    def __setitem__(self, key, value):
        raise ContextError(_READ_ONLY.format(what=f"setting context[{key!r}]"))

    def __delattr__(self, name):
        raise ContextError(_READ_ONLY.format(what=f"deleting context.{name}"))

    __delitem__ = __delattr__

    def update(self, *args, **kwargs):
        raise ContextError(_READ_ONLY.format(what="context.update()"))

    def setdefault(self, key, default=None):
        raise ContextError(_READ_ONLY.format(what=f"context.setdefault({key!r})"))

    def to_dict(self):
        """A plain dict of everything visible now (inner layers win)."""
        return {key: self[key] for key in self}

    @contextlib.contextmanager
    def __call__(self, *args, **kwargs):
        """Push a layer of values for the duration of a `with` block."""
        layer = dict(*args, **kwargs)
        if self._values is not None:  # a Context of its own: its values, for the block
            before = self._values
            object.__setattr__(self, "_values", {**before, **layer})
            try:
                yield self
            finally:
                object.__setattr__(self, "_values", before)
            return
        token = _stack.set((layer,) + _stack.get())
        try:
            yield self
        finally:
            _stack.reset(token)

    def __reduce__(self):
        # The run context stands for "the current run's", in any process.
        if self._values is None:
            return "context"
        return (Context, (dict(self._values),))

    def __repr__(self):
        return f"<Context: {', '.join(sorted(self))}>"


def _run_context():
    live = Context.__new__(Context)
    object.__setattr__(live, "_values", None)
    return live


context = _run_context()


@contextlib.contextmanager
def raise_on_exception():
    """Inside this block, an error in a task, trigger or state handler of a
    flow run propagates out of `flow.run()` instead of becoming a Failed state,
    as Prefect 1's `prefect.utilities.debug.raise_on_exception` does: for
    debugging a flow (e.g. under pdb) and in tests. Signals (FAIL, SKIP, ...)
    still become states.

        with raise_on_exception():
            flow.run()      # raises the task's ZeroDivisionError
    """
    with context(raise_on_exception=True):
        yield


def push(layer):
    """Engine use: make `layer` the innermost mapping; returns a reset token."""
    return _stack.set((layer,) + _stack.get())


def push_stack(layers):
    """Engine use: replace the whole stack (a worker thread adopting a run's context)."""
    return _stack.set(layers)


def current_stack():
    return _stack.get()


def pop(token):
    _stack.reset(token)
