"""Flow: a graph of tasks and its validation.

    with Flow("etl") as flow:
        day = Parameter("day", default=date.today)
        rows = extract(day)
        load(transform(rows))
    state = flow.run(day="2024-05-01")

Running lives in `orchestrator.engine`; `Flow.run` and `Flow.visualize` only
hand the flow over to it.
"""

import contextvars
import copy as _copy
from collections import deque

from ..exceptions import FlowValidationError, OrchestratorError, TaskDefinitionError
from . import lateness, ports
from .building import building_flow
from .edge import Edge, EdgeAnnotation
from .task import Constant, Parameter, Task, as_task, handler_list, is_constant_input

__all__ = ["Flow", "FlowRunError"]

_building = building_flow  # (the name this module has always used)
# The innermost open `case` block and resource block: tasks added to a flow
# while one is open belong to it (see Flow.add_task).
active_case = contextvars.ContextVar("orchestrator_active_case", default=None)
active_resource = contextvars.ContextVar("orchestrator_active_resource", default=None)
# True while apply_map() builds its function's tasks, which it maps itself.
inside_apply_map = contextvars.ContextVar("orchestrator_inside_apply_map", default=False)


class FlowRunError(OrchestratorError, RuntimeError, ValueError):
    """A flow was asked to run or register where it cannot: inside its own
    `with Flow(...)` block. (Prefect 1 raises RuntimeError for run() and
    ValueError for register() there; this is both.)"""


class _RunArgumentError(OrchestratorError, TypeError, ValueError):
    """flow.run() was given an argument it does not take (a ValueError in
    Prefect 1, a TypeError here before)."""

LATE_RUN_POLICIES = lateness.POLICIES


def _seconds_or_none(value, flow_name, what):
    import datetime as _dt

    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise FlowValidationError(
            f"Flow {flow_name!r}: {what}={value!r} must be a duration (seconds or a "
            "datetime.timedelta) >= 0, or None")
    return float(value)


class Flow:
    """A named graph of tasks. Build it in a `with` block or with `add_edge`."""

    def __init__(self, name, schedule=None, executor=None, run_config=None,
                 storage=None, tasks=None, edges=None, reference_tasks=None,
                 state_handlers=None, on_failure=None, validate=None, result=None,
                 terminal_state_handler=None, late_runs="run_all", max_lateness=None,
                 max_concurrent_runs=None, heartbeat=True, max_restarts=0):
        if not isinstance(name, str) or not name.strip():
            raise FlowValidationError(f"A flow needs a non-empty name, got {name!r}")
        self.name = name
        if schedule is not None and not hasattr(schedule, "to_ref"):
            raise FlowValidationError(
                f"Flow {name!r}: schedule={schedule!r} is not a schedule; use one from "
                "orchestrator.schedules, e.g. schedule=CronSchedule('0 6 * * *')")
        self.schedule = schedule
        # How the services treat this flow's runs (see `orchestrator up`).
        if late_runs not in LATE_RUN_POLICIES:
            raise FlowValidationError(
                f"Flow {name!r}: late_runs={late_runs!r} is not a policy; use one of "
                f"{', '.join(LATE_RUN_POLICIES)}")
        self.late_runs = late_runs
        self.max_lateness = _seconds_or_none(max_lateness, name, "max_lateness")
        if max_concurrent_runs is not None and (
                isinstance(max_concurrent_runs, bool) or not isinstance(max_concurrent_runs, int)
                or max_concurrent_runs < 1):
            raise FlowValidationError(
                f"Flow {name!r}: max_concurrent_runs={max_concurrent_runs!r} must be a "
                "positive whole number, or None for no limit")
        self.max_concurrent_runs = max_concurrent_runs
        self.heartbeat = bool(heartbeat)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) \
                or max_restarts < 0:
            raise FlowValidationError(
                f"Flow {name!r}: max_restarts={max_restarts!r} must be a whole number >= 0")
        self.max_restarts = max_restarts
        self.executor = executor
        self.run_config = run_config
        self.storage = storage
        self.result = result
        self.terminal_state_handler = terminal_state_handler
        self.state_handlers = handler_list(state_handlers, f"Flow {name!r}")
        if on_failure is not None:
            self.state_handlers.append(_flow_on_failure(on_failure))
        self.constants = {}
        self.slugs = {}
        self._tasks = {}
        self._edges = {}
        self._upstream = {}
        self._downstream = {}
        self._slug_counts = {}
        self._slug_index = set()
        self._reference_tasks = set()
        self._cleanup_tasks = set()  # resource blocks' cleanups (see reference_tasks)
        self._version = 0
        self._sorted_cache = None
        for t in tasks or ():
            self.add_task(t)
        for e in edges or ():
            self.add_edge(e.upstream_task, e.downstream_task, key=e.key,
                          mapped=e.mapped, flattened=e.flattened, validate=validate)
        if reference_tasks:
            self.set_reference_tasks(reference_tasks)

    def __repr__(self):
        return f"<Flow: name={self.name!r}>"

    # `with flow:` may be entered again inside itself, so the contextvars tokens
    # are a stack. It lives on the flow only while a block is open: a token
    # cannot be pickled and means nothing to a copy or in another process.
    def __enter__(self):
        self.__dict__.setdefault("_building_tokens", []).append(_building.set(self))
        return self

    def __exit__(self, *exc_info):
        tokens = self.__dict__["_building_tokens"]
        _building.reset(tokens.pop())
        if not tokens:
            del self.__dict__["_building_tokens"]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_building_tokens", None)
        return state

    # -- contents ------------------------------------------------------------
    @property
    def tasks(self):
        return set(self._tasks)

    @property
    def edges(self):
        return set(self._edges)

    def __len__(self):
        return len(self._tasks)

    def __iter__(self):
        return iter(self._tasks)

    def __contains__(self, task):
        return task in self._tasks

    def add_task(self, task):
        """Add `task` to the flow (without edges) and return it."""
        if task in self._tasks:
            return task
        if not isinstance(task, Task):
            raise TaskDefinitionError(
                f"Flow {self.name!r} can only hold tasks; got {task!r} "
                f"({type(task).__name__}). Decorate the function with @task."
            )
        slug = task.slug
        if slug is None:
            count = self._slug_counts.get(task.name, 0) + 1
            self._slug_counts[task.name] = count
            slug = f"{task.name}-{count}"
            while slug in self._slug_index:
                count += 1
                self._slug_counts[task.name] = count
                slug = f"{task.name}-{count}"
        elif slug in self._slug_index:
            if isinstance(task, Parameter):
                raise TaskDefinitionError(
                    f"Flow {self.name!r} already has a parameter named {slug!r}; "
                    "parameter names must be unique. Reuse the same Parameter object, "
                    "or give the second one another name."
                )
            raise TaskDefinitionError(
                f"Flow {self.name!r} already has a task with the slug {slug!r}; "
                "give this task another slug, or leave slug unset."
            )
        self._tasks[task] = None
        self.slugs[task] = slug
        self._slug_index.add(slug)
        self._upstream[task] = []
        self._downstream[task] = []
        self._changed()
        if getattr(task, "resource_role", None) == "cleanup":
            self.__dict__.setdefault("_cleanup_tasks", set()).add(task)
        # As in Prefect 1, parameters and constants stay root tasks; any other
        # new task joins the open case and resource blocks, even when it is
        # added with flow.add_task outside `with Flow(...)`.
        if not isinstance(task, (Parameter, Constant)):
            case = active_case.get()
            if case is not None:
                case.add_task(task, self)
            resource = active_resource.get()
            if resource is not None:
                resource.add_task(task, self)
        return task

    def add_edge(self, upstream_task, downstream_task, key=None, mapped=False,
                 flattened=False, validate=None):
        """Make `downstream_task` depend on `upstream_task`; returns the Edge."""
        edge = Edge(upstream_task, downstream_task, key=key, mapped=mapped,
                    flattened=flattened)
        if isinstance(downstream_task, Parameter):
            raise TaskDefinitionError(
                f"Parameter {downstream_task.name!r} cannot depend on task "
                f"{getattr(upstream_task, 'name', upstream_task)!r}: parameters are root "
                "tasks whose values come from the run. Make the task that needs both "
                "depend on them instead")
        if mapped and inside_apply_map.get():
            raise TaskDefinitionError(
                f"Task {getattr(downstream_task, 'name', downstream_task)!r} is mapped "
                "inside a function given to apply_map(), which maps every task it "
                "makes already; call the task plainly there (not .map())")
        if key is not None and not mapped and not flattened \
                and isinstance(upstream_task, Constant):
            # As in Prefect 1, a Constant given as an argument is kept as a
            # constant input, not as a task of the flow.
            self.add_task(downstream_task)
            self._check_one_source(downstream_task, key)
            self.constants.setdefault(downstream_task, {})[key] = upstream_task.value
            return edge
        self.add_task(upstream_task)
        self.add_task(downstream_task)
        if edge in self._edges:
            return edge
        if key is not None:
            self._check_one_source(downstream_task, key)
            if key in self.constants.get(downstream_task, {}):
                del self.constants[downstream_task][key]
        self._edges[edge] = None
        self._upstream[downstream_task].append(edge)
        self._downstream[upstream_task].append(edge)
        self._changed()
        if validate:
            self._check_acyclic()
        return edge

    def _check_one_source(self, task, key):
        for existing in self._upstream[task]:
            if existing.key == key:
                raise TaskDefinitionError(
                    f"Argument {key!r} of task {task.name!r} already comes from "
                    f"{existing.upstream_task.name!r}; a task argument can have one "
                    "source only")

    def chain(self, *tasks, validate=None):
        """Run `tasks` one after another; returns the edges made."""
        return [self.add_edge(a, b, validate=validate) for a, b in zip(tasks, tasks[1:])]

    def set_dependencies(self, task, upstream_tasks=None, downstream_tasks=None,
                         keyword_tasks=None, mapped=False, validate=None):
        """Add `task` with upstream tasks, downstream tasks and keyword inputs.

        Keyword inputs that are tasks become edges; literal values are kept as
        constants of the task, unless they are mapped over.
        """
        self.add_task(task)
        for up in upstream_tasks or ():
            is_mapped, flattened = mapped, False
            if isinstance(up, EdgeAnnotation):
                is_mapped = up.annotations.get("mapped", is_mapped)
                flattened = up.annotations.get("flattened", False)
                up = up.task
            up = as_task(up, flow=self)
            self.add_edge(up, task, mapped=is_mapped, flattened=flattened,
                          validate=validate)
        for down in downstream_tasks or ():
            self.add_edge(task, as_task(down, flow=self), validate=validate)
        for key, value in (keyword_tasks or {}).items():
            is_mapped, flattened = mapped, False
            if isinstance(value, EdgeAnnotation):
                is_mapped = value.annotations.get("mapped", is_mapped)
                flattened = value.annotations.get("flattened", False)
                value = value.task
            if not isinstance(value, Task) and not (is_mapped or flattened) \
                    and is_constant_input(value):
                self.constants.setdefault(task, {})[key] = value
                continue
            self.add_edge(as_task(value, flow=self), task, key=key,
                          mapped=is_mapped, flattened=flattened,
                          validate=validate)

    def _changed(self):
        self._version += 1
        self._sorted_cache = None

    # -- queries -------------------------------------------------------------
    def edges_to(self, task):
        return set(self._upstream.get(task, ()))

    def edges_from(self, task):
        return set(self._downstream.get(task, ()))

    def upstream_tasks(self, task):
        return {e.upstream_task for e in self._upstream.get(task, ())}

    def downstream_tasks(self, task):
        return {e.downstream_task for e in self._downstream.get(task, ())}

    def root_tasks(self):
        return {t for t in self._tasks if not self._upstream[t]}

    def terminal_tasks(self):
        return {t for t in self._tasks if not self._downstream[t]}

    def reference_tasks(self):
        """The tasks whose states decide the flow's state (default: the terminal
        tasks, where a resource block's setup and cleanup do not count, as in
        Prefect 1: a block's last tasks decide, not its cleanup)."""
        if self._reference_tasks:
            return set(self._reference_tasks)
        downstream = self._downstream
        if not getattr(self, "_cleanup_tasks", None):  # (a flow pickled before it existed)
            return {t for t in self._tasks if not downstream[t]}
        return {t for t in self._tasks
                if getattr(t, "resource_role", None) not in ("init", "cleanup")
                and all(getattr(e.downstream_task, "resource_role", None) == "cleanup"
                        for e in downstream[t])}

    def set_reference_tasks(self, tasks):
        """Decide the flow's state by these tasks (a list) instead of the terminal ones."""
        if isinstance(tasks, Task):
            raise FlowValidationError(
                f"Flow {self.name!r}: set_reference_tasks takes a list of tasks; got the "
                f"single task {tasks.name!r}: pass a list, e.g. [{tasks.name}]"
            )
        if isinstance(tasks, (str, bytes)) or not hasattr(tasks, "__iter__"):
            raise FlowValidationError(
                f"Flow {self.name!r}: reference tasks must be a list of tasks; got "
                f"{tasks!r}. Pass e.g. flow.set_reference_tasks([load])"
            )
        tasks = list(tasks)
        for t in tasks:
            if not isinstance(t, Task):
                raise FlowValidationError(
                    f"Flow {self.name!r}: reference task {t!r} is not a task "
                    f"({type(t).__name__}); pass the task objects, e.g. "
                    "flow.set_reference_tasks([load])"
                )
        foreign = [t.name for t in tasks if t not in self._tasks]
        if foreign:
            raise FlowValidationError(
                f"Reference tasks {', '.join(map(repr, foreign))} are not in flow "
                f"{self.name!r}; add them to the flow first"
            )
        self._reference_tasks = set(tasks)

    def parameters(self):
        """The flow's Parameter tasks."""
        return {t for t in self._tasks if isinstance(t, Parameter)}

    def get_tasks(self, name=None, slug=None, tags=None, task_type=None):
        """Tasks matching every given filter."""
        found = []
        for t in self._tasks:
            if name is not None and t.name != name:
                continue
            if slug is not None and self.slugs.get(t) != slug:
                continue
            if tags is not None and not set(tags) <= t.tags:
                continue
            if task_type is not None and not isinstance(t, task_type):
                continue
            found.append(t)
        return found

    def sorted_tasks(self):
        """Tasks in a topological order (Kahn's algorithm, stable, O(V+E)).

        Cached until the graph changes. Raises FlowValidationError naming a cycle.
        """
        if self._sorted_cache is not None:
            return self._sorted_cache
        waiting = {t: len(self._upstream[t]) for t in self._tasks}
        ready = deque(t for t, n in waiting.items() if n == 0)
        order = []
        while ready:
            t = ready.popleft()
            order.append(t)
            for e in self._downstream[t]:
                d = e.downstream_task
                waiting[d] -= 1
                if waiting[d] == 0:
                    ready.append(d)
        if len(order) != len(self._tasks):
            stuck = {t for t, n in waiting.items() if n > 0}
            raise FlowValidationError(self._describe_cycle(stuck))
        self._sorted_cache = tuple(order)
        return self._sorted_cache

    def _describe_cycle(self, stuck):
        # Walk upstream inside the stuck set until a task repeats: that is a cycle.
        start = next(t for t in self._tasks if t in stuck)
        path, seen = [start], {start: 0}
        current = start
        while True:
            current = next(e.upstream_task for e in self._upstream[current]
                           if e.upstream_task in stuck)
            if current in seen:
                cycle = path[seen[current]:] + [current]
                break
            seen[current] = len(path)
            path.append(current)
        cycle.reverse()
        names = " -> ".join(repr(t.name) for t in cycle)
        return (
            f"Flow {self.name!r} has a cycle: {names}. Each arrow means 'runs before'; "
            "a flow must be acyclic, so remove one of these dependencies."
        )

    def _check_acyclic(self):
        self._sorted_cache = None
        self.sorted_tasks()

    def validate(self):
        """Check the graph: edges within the flow, reference tasks present, no cycle."""
        for edge in self._edges:
            for t in (edge.upstream_task, edge.downstream_task):
                if t not in self._tasks:
                    raise FlowValidationError(
                        f"Flow {self.name!r} has an edge to task {t.name!r}, which is not "
                        "in the flow; add it with flow.add_task"
                    )
        missing = [t.name for t in self._reference_tasks if t not in self._tasks]
        if missing:
            raise FlowValidationError(
                f"Flow {self.name!r}: reference tasks {missing} are not in the flow"
            )
        self.sorted_tasks()
        return True

    # -- whole-flow operations ----------------------------------------------
    def copy(self):
        new = _copy.copy(self)
        new._tasks = dict(self._tasks)
        new._edges = dict(self._edges)
        new._upstream = {t: list(v) for t, v in self._upstream.items()}
        new._downstream = {t: list(v) for t, v in self._downstream.items()}
        new.constants = {t: dict(v) for t, v in self.constants.items()}
        new.slugs = dict(self.slugs)
        new._slug_counts = dict(self._slug_counts)
        new._slug_index = set(self._slug_index)
        new._reference_tasks = set(self._reference_tasks)
        new._cleanup_tasks = set(getattr(self, "_cleanup_tasks", ()))
        new.state_handlers = list(self.state_handlers)
        return new

    def replace(self, old, new, validate=True):
        """Put `new` (a task, or a value made a Constant) where `old` is: its
        edges, constant inputs and place among the reference tasks."""
        if old not in self._tasks:
            raise FlowValidationError(
                f"Task {getattr(old, 'name', old)!r} is not in flow {self.name!r}, so it "
                "cannot be replaced; pass a task of this flow (see flow.get_tasks())")
        new = as_task(new, flow=self)
        edges = [e for e in self._edges if old in (e.upstream_task, e.downstream_task)]
        constants = self.constants.pop(old, None)
        for edge in edges:
            del self._edges[edge]
            self._upstream[edge.downstream_task].remove(edge)
            self._downstream[edge.upstream_task].remove(edge)
        del self._tasks[old]
        getattr(self, "_cleanup_tasks", set()).discard(old)
        self._slug_index.discard(self.slugs.pop(old))
        del self._upstream[old], self._downstream[old]
        self._changed()
        self.add_task(new)
        for edge in edges:
            self.add_edge(new if edge.upstream_task is old else edge.upstream_task,
                          new if edge.downstream_task is old else edge.downstream_task,
                          key=edge.key, mapped=edge.mapped, flattened=edge.flattened)
        # Constant inputs are keyed edges kept apart; they move with the edges
        # (Prefect 1 leaves them behind on the old task).
        if constants:
            self.constants.setdefault(new, {}).update(constants)
        if old in self._reference_tasks:
            self._reference_tasks.discard(old)
            self._reference_tasks.add(new)
        if validate:
            self.validate()

    def update(self, flow, validate=None):
        """Add every task, edge and constant of another flow to this one."""
        for t in flow._tasks:
            self.add_task(t)
        for e in flow._edges:
            self.add_edge(e.upstream_task, e.downstream_task, key=e.key,
                          mapped=e.mapped, flattened=e.flattened, validate=validate)
        for t, values in flow.constants.items():
            self.constants.setdefault(t, {}).update(values)

    def run(self, parameters=None, executor=None, context=None, task_states=None,
            **kwargs):
        """Run the flow in this process and return its final State.

        Extra keyword arguments are parameter values. The state's `.result` maps
        every task to its State.
        """
        if self.__dict__.get("_building_tokens"):
            raise FlowRunError(
                f"flow.run() was called inside the `with Flow({self.name!r})` block that "
                "builds the flow; call it after the block, once the flow is complete")
        run_on_schedule = kwargs.pop("run_on_schedule", None)
        if run_on_schedule:
            raise OrchestratorError(
                f"flow.run(run_on_schedule={run_on_schedule!r}): flow.run() runs flow "
                f"{self.name!r} once, now. Schedules run under `orchestrator up`: register "
                "the flow and start it there; drop run_on_schedule here"
            )
        if "return_tasks" in kwargs:
            raise _RunArgumentError(
                "flow.run() always returns every task's state in state.result; "
                "drop the return_tasks argument (FlowRunner(flow).run(return_tasks=[...]) "
                "returns only some)"
            )
        params = dict(parameters or {})
        params.update(kwargs)
        return ports.call("run_flow", self, parameters=params, executor=executor,
                          context=context, task_states=task_states)

    def service_settings(self):
        """The settings the services read, as recorded at registration."""
        return {"late_runs": self.late_runs, "max_lateness": self.max_lateness,
                "max_concurrent_runs": self.max_concurrent_runs,
                "heartbeat": self.heartbeat, "max_restarts": self.max_restarts}

    def register(self, project_name, labels=None, idempotency_key=None):
        """Register this flow in the local store; returns its version number.

        Unchanged flows keep their version; a changed one gets the next. Pass
        `idempotency_key` to decide yourself what counts as unchanged.
        """
        if self.__dict__.get("_building_tokens"):
            raise FlowRunError(
                f"flow.register() was called inside the `with Flow({self.name!r})` block "
                "that builds the flow; call it after the block, once the flow is complete")
        return ports.call("register_flow", self, project_name, labels=labels,
                          idempotency_key=idempotency_key)

    def visualize(self, flow_state=None, filename=None, format=None):
        """The flow as Graphviz DOT text; with `filename`, also render it (needs graphviz)."""
        return ports.call("visualize", self, flow_state, filename, format)


def _flow_on_failure(callback):
    def handler(flow, old_state, new_state):
        if new_state.is_failed():
            callback(flow, new_state)
        return new_state

    return handler


