"""Branches: `case`, `merge`, `ifelse`, `switch`.

    with case(is_weekend, True):
        a = relax()
    with case(is_weekend, False):
        b = work()
    result = merge(a, b)

A branch that does not match ends Skipped, and so do the tasks that depend on
it; `merge` returns the result of the branch that ran.

`case` also works in the imperative API, as in Prefect 1: tasks added to a
flow with `flow.add_task(...)` (or `task.bind(..., flow=flow)`) while the
block is open belong to the branch.
"""

from .. import exceptions
from . import signals, triggers
from .flow import active_case
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
    """Tasks added to a flow in the block run only if `task`'s result equals `value`.

    The tasks join the branch as they are added to a flow (by calling them in
    `with Flow(...)`, or with `flow.add_task`); when the block closes, those
    with no upstream task inside it get the comparison as their upstream.
    """

    def __init__(self, task, value):
        if isinstance(value, Task):
            raise TypeError(
                f"case({task!r}, {value!r}): the value to compare with must be a "
                "constant, not a task; compare two tasks' results with a task "
                "(e.g. t1.is_equal(t2)) and branch on that: case(t1.is_equal(t2), True)")
        self.task = task
        self.value = value
        self._tasks = {}   # in the order they were added: slugs stay the same each build
        self._flow = None
        self._tokens = []

    def add_task(self, task, flow):
        """Flow.add_task's call: `task` was added to `flow` inside this block."""
        if self._flow is None:
            self._flow = flow
        elif self._flow is not flow:
            raise exceptions.TaskDefinitionError(
                f"case({self.task!r}, {self.value!r}) got tasks of two flows, "
                f"{self._flow.name!r} and {flow.name!r}; one case block belongs to one "
                "flow: open a case block per flow")
        self._tasks[task] = None

    def __enter__(self):
        self._tokens.append(active_case.set(self))
        return self

    def __exit__(self, *exc_info):
        active_case.reset(self._tokens.pop())
        if not self._tasks:
            return
        flow = self._flow
        # Bound after the block closed, so an outer case block takes it in.
        compare = CompareValue(self.value, name=f"case({self.value})")
        compare.bind(value=self.task, flow=flow)
        inside = set(self._tasks)
        for t in self._tasks:
            if not inside.intersection(flow.upstream_tasks(t)):
                flow.add_edge(compare, t)


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
