"""Branches: `case`, `merge`, `ifelse`, `switch`.

    with case(is_weekend, True):
        a = relax()
    with case(is_weekend, False):
        b = work()
    result = merge(a, b)

A branch that does not match ends Skipped, and so do the tasks that depend on
it; `merge` returns the result of the branch that ran.
"""

from .. import exceptions
from . import signals, triggers
from .task import Task, current_flow

__all__ = ["case", "merge", "ifelse", "switch", "CompareValue", "Merge"]


class CompareValue(Task):
    """Skips unless its input equals `value`."""

    def __init__(self, value, **kwargs):
        self.value = value
        kwargs.setdefault("name", f'CompareValue: "{value}"')
        super().__init__(**kwargs)

    def run(self, value):
        if value != self.value:
            raise signals.SKIP(f'Provided value "{value}" did not match "{self.value}"')


class Merge(Task):
    """Returns the first input that is not None (the branch that ran)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("skip_on_upstream_skip", False)
        kwargs.setdefault("trigger", triggers.not_all_skipped)
        super().__init__(**kwargs)

    def run(self, **task_results):
        ordered = sorted(task_results.items(), key=lambda kv: int(kv[0][4:]))
        return next((v for _, v in ordered if v is not None), None)


class _AsBool(Task):
    def run(self, x):
        return bool(x)


def merge(*tasks, flow=None):
    """A task returning the result of whichever of `tasks` was not skipped."""
    if not tasks:
        raise exceptions.TaskDefinitionError("merge() needs at least one task")
    return Merge()(flow=flow, **{f"task{i}": t for i, t in enumerate(tasks, 1)})


class case:
    """Tasks created in the block run only if `task`'s result equals `value`."""

    def __init__(self, task, value):
        self.task = task
        self.value = value
        self._flow = None

    def __enter__(self):
        flow = current_flow()
        if flow is None:
            raise exceptions.TaskDefinitionError(
                "case() is used inside a `with Flow(...)` block"
            )
        self._flow = flow
        self._compare = CompareValue(self.value, name=f"case({self.value})")
        self._compare.bind(value=self.task, flow=flow)
        self._before = set(flow._tasks)
        return self

    def __exit__(self, *exc_info):
        flow = self._flow
        added = [t for t in flow._tasks if t not in self._before and t is not self._compare]
        inside = set(added)
        for t in added:
            if not any(e.upstream_task in inside for e in flow._upstream[t]):
                flow.add_edge(self._compare, t)
        self._flow = None


def ifelse(condition, true_task, false_task, flow=None):
    """Run `true_task` if `condition`'s result is truthy, else `false_task`."""
    switch(_AsBool(name="as_bool")(condition, flow=flow),
           {True: true_task, False: false_task}, flow=flow)


def switch(condition, cases, flow=None):
    """Run the task in `cases` whose key equals `condition`'s result; skip the rest."""
    flow = flow if flow is not None else current_flow()
    if flow is None:
        raise exceptions.TaskDefinitionError(
            "switch() and ifelse() need a flow: call them inside `with Flow(...)`"
        )
    for value, branch in cases.items():
        compare = CompareValue(value)
        compare.bind(value=condition, flow=flow)
        branch.set_upstream(compare, flow=flow)
