"""apply_map: map a function that builds tasks over inputs, item by item.

    def clean_if_dirty(row):
        with case(is_dirty(row), True):
            cleaned = clean(row)
        return merge(cleaned, row)

    with Flow("etl") as flow:
        rows = extract()
        results = apply_map(clean_if_dirty, rows)   # one branch per row

As in Prefect 1 (`prefect.apply_map`): `func` is called once, at build time,
with the inputs as tasks; every task it makes is mapped over the inputs, so
each item gets its own copy of the whole subgraph (branches included). Wrap
an input in `unmapped(...)` to give every item the whole value, in
`flatten(...)` to map over a list of lists flattened. `func` must not call
`.map()` itself. With `flow=`, `func` is called with `flow=` too.
"""

import itertools
from collections.abc import Sequence

from ..exceptions import TaskCallError, TaskDefinitionError
from .edge import EdgeAnnotation
from .flow import Flow, active_case, active_resource, inside_apply_map
from .task import Constant, Task, as_task, current_flow

__all__ = ["apply_map"]


def apply_map(func, *args, flow=None, **kwargs):
    """Call `func(*args, **kwargs)` once to build tasks, mapped over the inputs;
    returns what `func` returns (see the module docstring)."""
    called_with_flow = flow is not None
    if flow is None:
        flow = current_flow()
        if flow is None:
            raise TaskDefinitionError(
                f"apply_map({getattr(func, '__name__', func)}, ...) was called outside a "
                "`with Flow(...)` block, so it has no flow to add tasks to; call it "
                "inside the block or pass flow=... (then func is called with flow= too)")
    for value in itertools.chain(args, kwargs.values()):
        if not isinstance(value, (Task, EdgeAnnotation, Sequence)) or \
                isinstance(value, (str, bytes)):
            raise TaskCallError(
                f"apply_map cannot map over {value!r}: it is a {type(value).__name__}, "
                "not a task, a list or another sequence. Pass a list or a task, or "
                f"unmapped({value!r}) to give every item the whole value")

    before = set(flow._tasks)
    sub = Flow("apply_map")
    inputs = {}  # input task -> (mapped, is_constant, flattened)

    def input_task(value):
        mapped, flattened = True, False
        if isinstance(value, EdgeAnnotation):
            mapped = value.annotations.get("mapped", True)
            flattened = value.annotations.get("flattened", False)
        with _outside_blocks():  # an enclosing case/resource block gets the copies below
            made = as_task(value, flow=sub)
            constant = isinstance(made, Constant)
            if not constant:
                sub.add_task(made)
        inputs[made] = (mapped, constant, flattened)
        if not constant:
            flow.add_task(made)
        return made

    args = [input_task(a) for a in args]
    kwargs = {k: input_task(v) for k, v in kwargs.items()}
    with _outside_blocks():
        token = inside_apply_map.set(True)
        try:
            with sub:
                result = func(*args, flow=sub, **kwargs) if called_with_flow \
                    else func(*args, **kwargs)
        finally:
            inside_apply_map.reset(token)

    # The subgraph goes into the flow with every edge mapped, except edges from
    # inputs given unmapped and edges between the inputs' own helper tasks (the
    # task that gathers a list of tasks into one list keeps its plain edges).
    for t in sub._tasks:
        flow.add_task(t)
    for edge in sub._edges:
        if edge.downstream_task in inputs:
            mapped, flattened = edge.mapped, edge.flattened
        else:
            mapped, _, flattened = inputs.get(edge.upstream_task, (True, False, False))
        flow.add_edge(edge.upstream_task, edge.downstream_task, key=edge.key,
                      mapped=mapped, flattened=flattened)
    # A mapped constant input given to a task inside func became a constant of
    # that task; it must be mapped over, so it goes back to being an edge.
    mapped_constants = {id(made.value): made for made, (mapped, constant, _) in inputs.items()
                        if mapped and constant}
    for t, values in sub.constants.items():
        for key, value in values.items():
            made = mapped_constants.get(id(value))
            if made is None:
                flow.constants.setdefault(t, {})[key] = value
            else:
                flow.add_edge(made, t, key=key, mapped=True, flattened=inputs[made][2])

    # Each new task depends, at least through others, on every mapped input, so
    # all of them run once per item and in step with the inputs.
    new_tasks = set(sub._tasks) - before - set(inputs)
    for t in new_tasks:
        upstream = flow.upstream_tasks(t)
        if upstream & new_tasks:
            continue
        for made, (mapped, constant, flattened) in inputs.items():
            if made not in upstream and (mapped or not constant):
                flow.add_edge(made, t, mapped=mapped, flattened=flattened)
    return result


class _outside_blocks:
    """Close the open case and resource blocks for a while: tasks made here
    join them only when they are copied into the flow."""

    def __enter__(self):
        self._tokens = (active_case.set(None), active_resource.set(None))

    def __exit__(self, *exc_info):
        active_case.reset(self._tokens[0])
        active_resource.reset(self._tokens[1])
