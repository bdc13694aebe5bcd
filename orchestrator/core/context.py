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
"""

import contextlib
import contextvars
from collections.abc import Mapping

from ..exceptions import ContextError

__all__ = ["context", "Context"]

_stack = contextvars.ContextVar("orchestrator_context", default=())

_READ_ONLY = (
    "The run context is read-only, so {what} would not reach other tasks. "
    "Pass values between tasks as a Parameter or as a task's return value."
)


class Context(Mapping):
    """Read-only mapping over the current run's context layers."""

    __slots__ = ()

    def __getitem__(self, key):
        for layer in _stack.get():
            if key in layer:
                return layer[key]
        if key == "logger":
            from ..engine.run_logging import get_logger

            return get_logger()
        raise KeyError(key)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"context has no {name!r}; it is set only inside a run "
                f"(available now: {', '.join(sorted(self)) or 'nothing'})"
            ) from None

    def get(self, key, default=None):
        for layer in _stack.get():
            if key in layer:
                return layer[key]
        if key == "logger":
            return self["logger"]
        return default

    def __contains__(self, key):
        return any(key in layer for layer in _stack.get())

    def __iter__(self):
        seen = set()
        for layer in _stack.get():
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

    def to_dict(self):
        """A plain dict of everything visible now (inner layers win)."""
        return {key: self[key] for key in self}

    @contextlib.contextmanager
    def __call__(self, *args, **kwargs):
        """Push a layer of values for the duration of a `with` block."""
        layer = dict(*args, **kwargs)
        token = _stack.set((layer,) + _stack.get())
        try:
            yield self
        finally:
            _stack.reset(token)

    def __repr__(self):
        return f"<Context: {', '.join(sorted(self))}>"


context = Context()


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
