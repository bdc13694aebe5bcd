"""Mapped tasks at run time: how the flow runner submits the children of a
mapped task. (Mapped graphs are built by `Task.map` and by `apply_map` in
`orchestrator.core.mapping`; this module runs them.)

    entry = submit_mapped(session, plan, upstream)  # a MappedEntry, or a State

Each edge into a mapped task gives its children one of three kinds of input:

- unmapped: every child gets the same upstream (the whole parent's Mapped
  state, if the upstream is mapped itself);
- mapped over a mapped parent: child i gets the parent's child i, so it starts
  as soon as that child finished, without waiting for the others (depth first);
- mapped over a list that must be computed first, to learn how many children
  there are: one task's result, or with flatten() a list of lists from one
  task or the lists a mapped parent's children returned. Child i gets item i.

The task has as many children as its shortest mapped input has items. The
inputs that are one state for the whole task (unmapped ones, and the lists
computed first) are checked once, before any child is submitted: a skipped
branch skips the task even when there is nothing to map over.
"""

from collections.abc import Iterable, Sequence

from ..core import signals
from ..core.states import Failed, Mapped, Success
from .task_runner import (_check_trigger, _check_upstream_finished, _check_upstream_skipped,
                          run_task, unwrap)

__all__ = ["MappedEntry", "run_mapped_child", "submit_mapped"]


class MappedEntry:
    """A mapped task in flight: its children's futures (or states). `collected`
    (the parent's Mapped state, as a future) is submitted only if a task
    downstream takes the parent whole."""

    __slots__ = ("_collected", "_session", "children")

    def __init__(self, children, session):
        self.children = children
        self._session = session
        self._collected = None

    @property
    def collected(self):
        if self._collected is None:
            self._collected = self._session.submit(_collect_mapped, *self.children)
        return self._collected


def _collect_mapped(*children):
    return Mapped("Ready to proceed with mapping.", map_states=[unwrap(c) for c in children])


def run_mapped_child(plan, indexed, map_index, *upstream):
    """Run child `map_index` of a mapped task. For the edges in `indexed`, the
    upstream is the whole state of a task that returned a sequence, and the
    child's input is its item `map_index` (taken here, on the worker that
    already holds the sequence, instead of shipping one state per item)."""
    if indexed:
        upstream = list(upstream)
        for j in indexed:
            items = unwrap(upstream[j]).result
            upstream[j] = Success("Mapped input.", result=items[map_index])
    return run_task(plan, map_index, *upstream)


def submit_mapped(session, plan, upstream):
    """Submit the children of the mapped task `plan`, given its upstream
    entries in edge order (futures, states or MappedEntry). Returns its
    MappedEntry, or the State the task ends in without children: stopped by
    a whole-task input, or given an input it cannot map over."""
    stopped = _whole_task_checks(session, plan, upstream)
    if stopped is not None:
        return stopped
    fast_map = hasattr(session, "map")
    try:
        inputs = _child_inputs(session, plan, upstream, fast_map)
    except signals.ENDRUN as end:  # an input it cannot map over
        return end.state
    if inputs.width and fast_map:
        children = _map_children(session, plan, inputs)
    else:
        children = _submit_children(session, plan, inputs)
    return MappedEntry(children, session)


# -- inputs that are one state for the whole task ----------------------------------
def _whole_task_checks(session, plan, upstream):
    """The state the task ends in because of its whole-task inputs, or None."""
    whole = [(edge, entry) for edge, entry in zip(plan.edges, upstream)
             if type(entry) is not MappedEntry or edge.flattened or not edge.mapped]
    if not whole:
        return None
    edges = [edge for edge, _ in whole]
    states = [unwrap(session.wait(entry.collected if type(entry) is MappedEntry else entry))
              for _, entry in whole]
    try:
        _check_upstream_finished(states)
        if plan.task.skip_on_upstream_skip:
            _check_upstream_skipped(states)
        unusable = _unusable_mapped_input(edges, states)
        if unusable is not None:
            _check_trigger(plan, states, edges)
            edge, state = unusable
            return Failed(
                f"Task {plan.name!r} cannot map over the result of "
                f"{edge.upstream_task.name!r}, which ended {type(state).__name__}.")
    except signals.Signal as sig:  # ENDRUN from a check, PAUSE or SKIP from the trigger
        return sig.state
    return None


def _unusable_mapped_input(edges, states):
    """The first (edge, state) of a mapped input from one task that did not
    succeed, so has nothing to map over; or None."""
    return next(((edge, state) for edge, state in zip(edges, states)
                 if edge.mapped and not isinstance(state, Mapped)
                 and not state.is_successful()), None)


# -- the children's inputs --------------------------------------------------------
class _ChildInputs:
    """What the children of one mapped task get, edge by edge in edge order:
    a column (one upstream per child), one upstream every child gets whole,
    or (`indexed` edges) a task's sequence of which child i takes item i."""

    __slots__ = ("columns", "fixed", "indexed", "lengths")

    def __init__(self):
        self.columns = []  # per edge: a list of child upstreams, or None
        self.fixed = []    # per edge: the one upstream every child gets, or None
        self.indexed = []  # edges whose child input is item i of the upstream's result
        self.lengths = []  # the length of each mapped input

    def add_whole(self, upstream):
        self.columns.append(None)
        self.fixed.append(upstream)

    def add_column(self, column):
        self.columns.append(column)
        self.fixed.append(None)
        self.lengths.append(len(column))

    def add_indexed(self, upstream, length):
        self.indexed.append(len(self.columns))
        self.columns.append(None)
        self.fixed.append(upstream)
        self.lengths.append(length)

    @property
    def width(self):
        """How many children: as many as the shortest mapped input has items."""
        return min(self.lengths) if self.lengths else 0


def _child_inputs(session, plan, upstream, fast_map):
    """The children's inputs, edge by edge. Raises ENDRUN(Failed) for an input
    the task cannot map over."""
    inputs = _ChildInputs()
    for edge, entry in zip(plan.edges, upstream):
        if not edge.mapped:
            inputs.add_whole(entry.collected if type(entry) is MappedEntry else entry)
        elif type(entry) is MappedEntry:
            inputs.add_column(_flatten_children(session, plan, edge, entry)
                              if edge.flattened else entry.children)
        else:
            items = _mapped_items(session, plan, edge, entry)
            if fast_map and not edge.flattened and isinstance(items, Sequence):
                # On a cluster, children take their item from the list where it
                # already is, instead of one state per item shipped from here.
                inputs.add_indexed(entry, len(items))
            else:
                inputs.add_column([Success("Mapped input.", result=x) for x in items])
    return inputs


def _mapped_items(session, plan, edge, entry):
    """The items of one task's result that a task maps over, one level
    flattened for flatten(). Raises ENDRUN(Failed) if the result is not a
    sequence (of sequences, for flatten())."""
    items = unwrap(session.wait(entry)).result
    if edge.flattened:
        if not _is_sequence(items) or not all(_is_sequence(i) for i in items):
            raise signals.ENDRUN(Failed(
                f"Task {plan.name!r} flattens the result of "
                f"{edge.upstream_task.name!r}, which is not a list of lists "
                f"(got {type(items).__name__}); flatten() removes one level "
                "of nesting."))
        return [x for inner in items for x in inner]
    if not _is_sequence(items):
        raise signals.ENDRUN(Failed(
            f"Task {plan.name!r} maps over the result of "
            f"{edge.upstream_task.name!r}, which is a {type(items).__name__}, "
            "not a list or other sequence. Return a list from "
            f"{edge.upstream_task.name!r}, or pass it with unmapped(...) to "
            "give every child the whole value."))
    return items


def _flatten_children(session, plan, edge, entry):
    """Child inputs from a mapped parent's children, one level flattened:
    a child that did not succeed stands as one failed input. Raises
    ENDRUN(Failed) if a child's result is not a list."""
    column = []
    for child in session.wait(list(entry.children)):
        child = unwrap(child)
        if not child.is_successful():
            column.append(child)
            continue
        if not _is_sequence(child.result):
            raise signals.ENDRUN(Failed(
                f"Task {plan.name!r} flattens the children of "
                f"{edge.upstream_task.name!r}, and one returned a "
                f"{type(child.result).__name__}, not a list; flatten() removes one "
                "level of nesting."))
        column.extend(Success("Mapped input.", result=x) for x in child.result)
    return column


def _is_sequence(value):
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict))


# -- submitting the children ------------------------------------------------------
def _map_children(session, plan, inputs):
    """All children in one call to a session that can map (a cluster's)."""
    n = inputs.width
    indexed = tuple(inputs.indexed)
    args = [list(range(n))]
    for column, value in zip(inputs.columns, inputs.fixed):
        args.append(column[:n] if column is not None else [value] * n)
    return session.map(
        lambda i, *ups, _plan=plan, _ix=indexed: run_mapped_child(_plan, _ix, i, *ups),
        *args)


def _submit_children(session, plan, inputs):
    """The children submitted one by one."""
    submit = session.submit
    columns, fixed = inputs.columns, inputs.fixed
    indexed = tuple(inputs.indexed)
    children = []
    for i in range(inputs.width):
        ups = [column[i] if column is not None else value
               for column, value in zip(columns, fixed)]
        children.append(submit(run_mapped_child, plan, indexed, i, *ups))
    return children
