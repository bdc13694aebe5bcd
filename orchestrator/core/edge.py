"""Edges of a flow's graph, and the markers that change how an input is mapped."""

from ..exceptions import TaskDefinitionError

__all__ = ["Edge", "EdgeAnnotation", "unmapped", "mapped", "flatten"]


class Edge:
    """`upstream_task` must finish before `downstream_task`; with `key`, its
    result is passed as that keyword argument. `mapped` maps over the result;
    `flattened` removes one level of nesting first."""

    __slots__ = ("upstream_task", "downstream_task", "key", "mapped", "flattened", "_hash")

    def __init__(self, upstream_task, downstream_task, key=None, mapped=False,
                 flattened=False):
        if upstream_task is downstream_task:
            name = getattr(upstream_task, "name", upstream_task)
            raise TaskDefinitionError(
                f"An edge cannot connect task {name!r} to itself: a task cannot run "
                "before itself. Use a copy of the task (task.copy()) as the upstream, "
                "or LOOP to run it again")
        if key is not None and not (isinstance(key, str) and key.isidentifier()):
            raise ValueError(
                f"Edge key {key!r} is not a valid argument name; use a Python identifier"
            )
        object.__setattr__(self, "upstream_task", upstream_task)
        object.__setattr__(self, "downstream_task", downstream_task)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "mapped", bool(mapped))
        object.__setattr__(self, "flattened", bool(flattened))
        object.__setattr__(self, "_hash", hash(
            (id(upstream_task), id(downstream_task), key, self.mapped, self.flattened)))

    def __setattr__(self, name, value):
        raise AttributeError("Edges are immutable; add a new edge instead")

    @property
    def tasks(self):
        return {self.upstream_task, self.downstream_task}

    def __eq__(self, other):
        return (
            type(other) is Edge
            and self.upstream_task is other.upstream_task
            and self.downstream_task is other.downstream_task
            and self.key == other.key
            and self.mapped == other.mapped
            and self.flattened == other.flattened
        )

    def __hash__(self):
        return self._hash

    def __reduce__(self):
        return (Edge, (self.upstream_task, self.downstream_task, self.key,
                       self.mapped, self.flattened))

    def __repr__(self):
        key = f"(key={self.key})" if self.key else ""
        how = " mapped" if self.mapped else ""
        return f"<Edge{how}{key}: {self.upstream_task.name} to {self.downstream_task.name}>"


class EdgeAnnotation:
    """A marker around a task's input that says how its edge is made."""

    __slots__ = ("task", "annotations")

    def __init__(self, task):
        if isinstance(task, EdgeAnnotation):
            self.annotations = dict(task.annotations)
            self.task = task.task
        else:
            self.annotations = {}
            self.task = task

    @property
    def value(self):
        """The wrapped task or value (Prefect 1's name for it)."""
        return self.task

    def __repr__(self):
        return f"{type(self).__name__}({self.task!r})"


class unmapped(EdgeAnnotation):
    """Pass this input whole to every mapped child: `add.map(xs, unmapped(10))`."""

    def __init__(self, task):
        super().__init__(task)
        self.annotations["mapped"] = False


class mapped(EdgeAnnotation):
    """Map over this input even in a plain call."""

    def __init__(self, task):
        super().__init__(task)
        self.annotations["mapped"] = True


class flatten(EdgeAnnotation):
    """Remove one level of nesting before mapping: `inc.map(flatten(lists))`."""

    def __init__(self, task):
        super().__init__(task)
        self.annotations["flattened"] = True
