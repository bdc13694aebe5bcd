"""Tasks: the units of work in a flow, in the functional or subclass style.

    @task(max_retries=2, retry_delay=timedelta(seconds=5))
    def fetch(url): ...

    class Load(Task):
        def run(self, rows): ...

Calling a task inside `with Flow(...)` adds a copy of it to the flow with
edges from its arguments; calling `.run()` runs it as a plain function.
"""

import contextlib
import contextvars
import copy as _copy
import datetime as _dt
import inspect
import operator
import typing

from ..exceptions import TaskCallError, TaskDefinitionError
from . import ports
from .building import building_flow
from . import triggers as _triggers
from .edge import EdgeAnnotation

__all__ = ["Task", "FunctionTask", "task", "Parameter", "DateTimeParameter",
           "Constant", "GetItem", "as_task", "current_flow", "tags"]

_RESERVED = ("upstream_tasks", "mapped", "task_args", "flow")

# Tags every task made inside `with tags(...)` blocks gets, innermost block last.
_block_tags = contextvars.ContextVar("orchestrator_block_tags", default=frozenset())


@contextlib.contextmanager
def tags(*names):
    """Tag every task created in the block, as Prefect 1's `prefect.tags` does:

        with Flow("etl") as flow, tags("db", "nightly"):
            load()          # load.tags == {"db", "nightly"}
    """
    for name in names:
        if not isinstance(name, str):
            raise TaskDefinitionError(
                f"tags({', '.join(map(repr, names))}): tags are strings; {name!r} is a "
                f"{type(name).__name__}. Pass them one by one: tags('db', 'nightly')")
    token = _block_tags.set(_block_tags.get() | frozenset(names))
    try:
        yield
    finally:
        _block_tags.reset(token)


def current_flow():
    """The flow being built by the innermost `with Flow(...)` block, or None."""
    return building_flow.get()


def _seconds(value, what):
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TaskDefinitionError(
        f"{what}={value!r} is not a duration; pass seconds as a number or a datetime.timedelta"
    )


class Task:
    """A unit of work. Subclass it and define `run`, or use `@task` on a function.

    Settings (all optional): name, slug, tags, max_retries + retry_delay,
    timeout (seconds or timedelta), trigger, skip_on_upstream_skip,
    cache_for + cache_validator + cache_key, checkpoint, result, target,
    state_handlers [(task, old_state, new_state) -> state or None],
    on_failure (task, state), log_stdout, task_run_name, nout.
    """

    def __init__(self, name=None, slug=None, tags=None, max_retries=None,
                 retry_delay=None, timeout=None, trigger=None,
                 skip_on_upstream_skip=True, cache_for=None, cache_validator=None,
                 cache_key=None, checkpoint=None, state_handlers=None,
                 on_failure=None, log_stdout=False, result=None, target=None,
                 task_run_name=None, nout=None):
        self.name = name or type(self).__name__
        self.slug = slug
        self.tags = _tag_set(tags, self.name) | _block_tags.get()
        max_retries = 0 if max_retries is None else max_retries
        if not isinstance(max_retries, int) or max_retries < 0:
            raise TaskDefinitionError(
                f"Task {self.name!r}: max_retries={max_retries!r} must be a whole number >= 0"
            )
        if max_retries > 0 and retry_delay is None:
            raise TaskDefinitionError(
                f"Task {self.name!r}: a datetime.timedelta `retry_delay` must be provided "
                f"if max_retries > 0 (got max_retries={max_retries}); "
                "e.g. retry_delay=timedelta(seconds=10)"
            )
        if retry_delay is not None and max_retries == 0:
            raise TaskDefinitionError(
                f"Task {self.name!r}: a `max_retries` argument greater than 0 must be "
                "provided if specifying a retry delay"
            )
        self.max_retries = max_retries
        self.retry_delay = (_dt.timedelta(seconds=_seconds(retry_delay, "retry_delay"))
                            if retry_delay is not None else None)
        self.timeout = _seconds(timeout, "timeout")
        if self.timeout is not None and self.timeout <= 0:
            raise TaskDefinitionError(f"Task {self.name!r}: timeout={timeout!r} must be positive")
        self.trigger = trigger or _triggers.all_successful
        if not callable(self.trigger):
            raise TaskDefinitionError(
                f"Task {self.name!r}: trigger={trigger!r} is not callable; pass a function "
                "such as orchestrator.triggers.all_finished"
            )
        self.skip_on_upstream_skip = skip_on_upstream_skip
        self.cache_for = (_dt.timedelta(seconds=_seconds(cache_for, "cache_for"))
                          if cache_for is not None else None)
        self.cache_validator = cache_validator
        self.cache_key = cache_key
        self.checkpoint = checkpoint
        self.result = result
        self.target = target
        self.state_handlers = handler_list(state_handlers, f"Task {self.name!r}")
        if on_failure is not None:
            self.state_handlers.append(_on_failure_handler(on_failure))
        self.log_stdout = log_stdout
        self.task_run_name = task_run_name
        if nout is not None and (not isinstance(nout, int) or nout < 1):
            raise TaskDefinitionError(f"Task {self.name!r}: nout={nout!r} must be a positive int")
        self.nout = nout
        _check_run_signature(self)

    def __repr__(self):
        return f"<Task: {self.name}>"

    @property
    def logger(self):
        """This task's logger, the one `get_logger()` gives inside its run
        (`orchestrator.task.<name>`): `self.logger` in `run`, `task.logger` in a
        state handler. Its records go to the run's log with the run's flow,
        task and map index."""
        custom = self.__dict__.get("_logger")
        if custom is not None:
            return custom
        return ports.call("task_logger", self.name)  # the engine's logging

    @logger.setter
    def logger(self, value):
        # A Prefect 1 subclass may set its own logger in __init__.
        self.__dict__["_logger"] = value

    # `==` and hashing stay object identity (the C defaults, fast in the
    # engine's dicts); use `is_equal` for a task that compares results.

    # -- running -------------------------------------------------------------
    def run(self):
        """The work. Subclasses override this; its arguments are the task's inputs."""

    # -- building flows ------------------------------------------------------
    def copy(self, **task_args):
        """A copy of this task with some settings changed."""
        new = _copy.copy(self)
        new.tags = set(self.tags)
        new.state_handlers = list(self.state_handlers)
        if new.slug is not None:
            new.slug = f"{new.slug}-copy"
        for key, value in task_args.items():
            if not hasattr(new, key):
                raise AttributeError(
                    f"{self!r} does not have {key} as an attribute; task_args takes "
                    "the task's settings (name, tags, max_retries, ...)"
                )
            if key == "tags":
                value = _tag_set(value, new.name)
            elif key == "state_handlers":
                value = handler_list(value, f"Task {new.name!r}")
            elif key == "retry_delay" and value is not None:
                value = _dt.timedelta(seconds=_seconds(value, "retry_delay"))
            elif key == "timeout":
                value = _seconds(value, "timeout")
            setattr(new, key, value)
        new.tags |= _block_tags.get()
        if new.max_retries and new.retry_delay is None:
            raise TaskDefinitionError(
                f"Task {new.name!r}: a datetime.timedelta `retry_delay` must be provided "
                f"if max_retries > 0"
            )
        return new

    def __call__(self, *args, mapped=False, task_args=None, upstream_tasks=None,
                 flow=None, **kwargs):
        """Add a copy of this task to the flow being built, fed by these arguments."""
        new = self.copy(**(task_args or {}))
        new.bind(*args, mapped=mapped, upstream_tasks=upstream_tasks, flow=flow, **kwargs)
        return new

    def map(self, *args, upstream_tasks=None, flow=None, task_args=None, **kwargs):
        """Add a copy that runs once per item of its inputs (see `unmapped`, `flatten`)."""
        new = self.copy(**(task_args or {}))
        new.bind(*args, mapped=True, upstream_tasks=upstream_tasks, flow=flow, **kwargs)
        return new

    def bind(self, *args, mapped=False, upstream_tasks=None, flow=None, **kwargs):
        """Bind inputs to this very task (not a copy) in the flow being built."""
        flow = self._flow_for(flow, "calling")
        callargs = self._bind_arguments(args, kwargs)
        if mapped:
            for key, value in callargs.items():
                self._check_mappable(key, value)
        self.tags |= _block_tags.get()
        flow.set_dependencies(task=self, upstream_tasks=upstream_tasks,
                              keyword_tasks=callargs, mapped=mapped)
        return self

    def _check_mappable(self, key, value):
        """A constant mapped over must be a list or other sequence; fail now,
        while the flow is built, as Prefect 1 does, not when it runs."""
        if isinstance(value, EdgeAnnotation):
            if value.annotations.get("mapped") is False:
                return
            value = value.task
        if _contains_task(value):
            return
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise TaskCallError(
                f"Task {self.name!r} cannot map over {key}={value!r}: it is a "
                f"{type(value).__name__}, not a list or other sequence. Pass a list, "
                f"or unmapped({value!r}) to give every mapped child the whole value.")

    def _flow_for(self, flow, doing):
        flow = flow if flow is not None else current_flow()
        if flow is None:
            raise TaskDefinitionError(
                f"{doing.capitalize()} task {self.name!r} outside a `with Flow(...)` block "
                f"has no flow to add it to. Do it inside the block, pass flow=..., or "
                f"call {self.name}.run(...) to run the function directly."
            )
        return flow

    def _bind_arguments(self, args, kwargs):
        signature = _signature(self)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            params = ", ".join(signature.parameters) or "no arguments"
            raise TaskCallError(
                f"Task {self.name!r} cannot be called with these arguments: {exc}. "
                f"Its run() takes ({params})."
            ) from None
        callargs = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                callargs.update(value)
            else:
                callargs[name] = value
        return callargs

    def set_upstream(self, task, flow=None, key=None, mapped=False):
        """Make `task` run before this one (passing its result as `key`, if given)."""
        flow = self._flow_for(flow, "setting dependencies of")
        flow.set_dependencies(task=self, upstream_tasks=[task] if key is None else None,
                              keyword_tasks={key: task} if key is not None else None,
                              mapped=mapped)
        return self

    def set_downstream(self, task, flow=None, key=None, mapped=False):
        """Make this task run before `task` (passing its result as `key`, if given)."""
        flow = self._flow_for(flow, "setting dependencies of")
        flow.set_dependencies(task=task, upstream_tasks=[self] if key is None else None,
                              keyword_tasks={key: self} if key is not None else None,
                              mapped=mapped)
        return self

    def set_dependencies(self, flow=None, upstream_tasks=None, downstream_tasks=None,
                         keyword_tasks=None, mapped=False):
        flow = self._flow_for(flow, "setting dependencies of")
        flow.set_dependencies(task=self, upstream_tasks=upstream_tasks,
                              downstream_tasks=downstream_tasks,
                              keyword_tasks=keyword_tasks, mapped=mapped)
        return self

    def __rshift__(self, other):
        self.set_downstream(other)
        return other

    def __lshift__(self, other):
        self.set_upstream(other)
        return other

    def __iter__(self):
        if not self.nout:
            raise TypeError(
                f"Task {self.name!r} is not iterable. If it returns several results, "
                "pass `nout` to the task decorator or constructor, or annotate its "
                "return type as Tuple[...]"
            )
        return (self[i] for i in range(self.nout))

    def __getitem__(self, key):
        name = f"{self.name}[{key!r}]"
        return GetItem(name=name, key=key)(self, flow=current_flow())

    def is_equal(self, other):
        """A task whose result is `self == other` (`==` itself stays identity)."""
        return _operator_task(operator.eq, "Equal", self, other)

    def is_not_equal(self, other):
        return _operator_task(operator.ne, "NotEqual", self, other)

    def not_(self):
        return _operator_task(operator.not_, "Not", self)

    def and_(self, other):
        return _operator_task(lambda a, b: a and b, "And", self, other)

    def or_(self, other):
        return _operator_task(lambda a, b: a or b, "Or", self, other)


def _define_operators():
    ops = {
        "add": operator.add, "sub": operator.sub, "mul": operator.mul,
        "truediv": operator.truediv, "floordiv": operator.floordiv,
        "mod": operator.mod, "pow": operator.pow, "and": operator.and_,
        "or": operator.or_, "xor": operator.xor,
    }
    for name, fn in ops.items():
        def forward(self, other, fn=fn, name=name):
            return _operator_task(fn, name.capitalize(), self, other)

        def backward(self, other, fn=fn, name=name):
            return _operator_task(fn, name.capitalize(), other, self)

        setattr(Task, f"__{name}__", forward)
        setattr(Task, f"__r{name}__", backward)
    for name, fn in {"gt": operator.gt, "ge": operator.ge,
                     "lt": operator.lt, "le": operator.le}.items():
        setattr(Task, f"__{name}__",
                lambda self, other, fn=fn, name=name:
                _operator_task(fn, name.capitalize(), self, other))


class _OperatorTask(Task):
    def __init__(self, fn, name):
        self.fn = fn
        super().__init__(name=name)

    def run(self, a, b=None):
        return self.fn(a) if self.fn is operator.not_ else self.fn(a, b)


def _operator_task(fn, name, a, b=None):
    flow = current_flow()
    if flow is None:
        raise TaskDefinitionError(
            f"Operators on tasks ({name}) build new tasks and only work inside a "
            "`with Flow(...)` block"
        )
    if fn is operator.not_:
        return _OperatorTask(fn, name)(a, flow=flow)
    return _OperatorTask(fn, name)(a, b, flow=flow)


_define_operators()


def _tag_set(tags, task_name):
    if tags is None:
        return set()
    if isinstance(tags, str):
        raise TaskDefinitionError(
            f"Task {task_name!r}: tags={tags!r} is a string, which would make one "
            f"tag per character; pass a list: tags=[{tags!r}]"
        )
    try:
        members = list(tags)
    except TypeError:
        raise TaskDefinitionError(
            f"Task {task_name!r}: tags={tags!r} is not a list; tags must be a list of "
            "strings, e.g. tags=['etl', 'daily']"
        ) from None
    bad = [t for t in members if not isinstance(t, str)]
    if bad:
        raise TaskDefinitionError(
            f"Task {task_name!r}: tags must be a list of strings, but {bad[0]!r} is a "
            f"{type(bad[0]).__name__}; e.g. tags=['etl', 'daily']"
        )
    return set(members)


def handler_list(handlers, owner):
    """`handlers` as a new list of callables. A single function, or anything not
    a list of callables, is a TaskDefinitionError naming `owner` ("Task 'load'")."""
    if handlers is None:
        return []
    if callable(handlers):
        name = getattr(handlers, "__name__", None) or repr(handlers)
        raise TaskDefinitionError(
            f"{owner}: state_handlers must be a list of functions; got a function: "
            f"pass [{name}]"
        )
    if isinstance(handlers, (str, bytes)) or not hasattr(handlers, "__iter__"):
        raise TaskDefinitionError(
            f"{owner}: state_handlers must be a list of functions; got {handlers!r}. "
            "Pass e.g. state_handlers=[my_handler]"
        )
    members = list(handlers)
    for handler in members:
        if not callable(handler):
            raise TaskDefinitionError(
                f"{owner}: state handler {handler!r} is not callable; state_handlers must "
                "be a list of functions (obj, old_state, new_state) -> new state or None"
            )
    return members


def _on_failure_handler(callback):
    def handler(task, old_state, new_state):
        if new_state.is_failed():
            callback(task, new_state)
        return new_state

    handler.__name__ = f"on_failure({getattr(callback, '__name__', callback)!s})"
    return handler


_SIGNATURES = {}


def _signature(task):
    run = task.run
    key = getattr(run, "__func__", run)
    try:
        return _SIGNATURES[key]
    except KeyError:
        sig = _SIGNATURES[key] = inspect.signature(run)
        return sig
    except TypeError:  # unhashable callable
        return inspect.signature(run)


def _check_run_signature(task):
    run = task.run
    if inspect.iscoroutinefunction(run) or inspect.isasyncgenfunction(run):
        raise TaskDefinitionError(
            f"Task {task.name!r}: run() is an `async def` function, and async tasks are "
            "not supported (calling it only makes a coroutine). Make it a plain `def` "
            "and call asyncio.run(...) inside it for async code."
        )
    sig = _signature(task)
    for name, param in sig.parameters.items():
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TaskDefinitionError(
                f"Task {task.name!r}: run() takes {name!r} as a positional-only argument "
                "(before `/`), which is not supported because task inputs are passed by "
                "keyword; remove the `/` from its signature"
            )
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TaskDefinitionError(
                f"Task {task.name!r}: run() takes *{name}, which is not supported because "
                "task inputs are passed by keyword; use named arguments or one list argument"
            )
        if name in _RESERVED:
            raise TaskDefinitionError(
                f"Task {task.name!r}: run() has an argument named {name!r}, which is "
                f"reserved for flow building ({', '.join(_RESERVED)}); rename it"
            )


class FunctionTask(Task):
    """A task whose `run` is a plain function (what `@task` makes)."""

    def __init__(self, fn, name=None, **kwargs):
        if not callable(fn):
            raise TaskDefinitionError(f"@task needs a function, got {fn!r}")
        self.run = fn
        if kwargs.get("nout") is None:
            kwargs["nout"] = _nout_from_annotation(fn)
        super().__init__(name=name or getattr(fn, "__name__", type(self).__name__), **kwargs)
        self.__doc__ = getattr(fn, "__doc__", None)

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)


def _nout_from_annotation(fn):
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:
        # Unresolvable annotations only lose the nout inference.
        return None
    if typing.get_origin(ret) is tuple:
        args = typing.get_args(ret)
        if args and args[-1] is not Ellipsis:
            return len(args)
    return None


def task(fn=None, **task_init_kwargs):
    """Make a function a task: `@task` or `@task(max_retries=1, retry_delay=...)`."""
    if fn is None:
        return lambda fn: FunctionTask(fn=fn, **task_init_kwargs)
    return FunctionTask(fn=fn, **task_init_kwargs)


class _NoDefault:
    def __repr__(self):
        return "no_default"

    def __reduce__(self):
        return "no_default"


no_default = _NoDefault()


class Parameter(Task):
    """A named input of a flow, given when the flow runs.

    `Parameter("day")` is required; `Parameter("day", default=None)` is not.
    A callable default is called when each run starts, so
    `Parameter("day", default=date.today)` is the run's date, not the day the
    flow was defined or registered.
    """

    def __init__(self, name, default=no_default, required=None, tags=None):
        if not isinstance(name, str) or not name:
            raise TaskDefinitionError(f"Parameter name {name!r} must be a non-empty string")
        if required is None:
            required = default is no_default
        self.required = bool(required)
        self.default = None if default is no_default else default
        super().__init__(name=name, slug=name, tags=tags)

    def __repr__(self):
        return f"<Parameter: {self.name}>"

    def copy(self, name=None, **task_args):
        new = super().copy(**task_args)
        if name is not None:
            new.name = name
        new.slug = new.name
        return new

    def __call__(self, *args, flow=None, **kwargs):
        """Add this parameter (itself, not a copy) to the flow being built; returns it."""
        if args or kwargs:
            raise TaskDefinitionError(
                f"Parameter {self.name!r} takes no arguments when called: calling it only "
                f"adds it to the flow. Give its value when the flow runs: "
                f"flow.run({self.name}=...)"
            )
        flow = flow if flow is not None else current_flow()
        if flow is None:
            raise TaskDefinitionError(
                f"Calling Parameter {self.name!r} adds it to the flow being built, but it "
                "was called outside a `with Flow(...)` block. Call it inside the block, "
                "pass flow=..., or use flow.add_task(...)"
            )
        flow.add_task(self)
        return self

    def default_value(self):
        """The default for one run: a callable default is called now."""
        default = self.default
        return default() if callable(default) else default

    def run(self):
        from .context import context

        return context["parameters"][self.name]


class DateTimeParameter(Parameter):
    """A Parameter whose value arrives as an ISO 8601 string and runs as an aware datetime.

    A value without a UTC offset ("2024-05-01T06:00:00", "2024-05-01", or a naive
    datetime) is taken as UTC, as Prefect 1 (pendulum) does, so it compares with
    `datetime.now(timezone.utc)`; a trailing "Z" means UTC.
    """

    def run(self):
        value = super().run()
        if value is None:
            return None
        if not isinstance(value, _dt.datetime):
            text = str(value)
            if text[-1:] in ("Z", "z"):  # fromisoformat takes "Z" only from Python 3.11
                text = text[:-1] + "+00:00"
            try:
                value = _dt.datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"Parameter {self.name!r}: {value!r} is not an ISO 8601 datetime "
                    "such as 2024-05-01T06:00:00+00:00"
                ) from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value


class Constant(Task):
    """A task that returns a fixed value (made for mapped literal inputs)."""

    def __init__(self, value, name=None, **kwargs):
        self.value = value
        if name is None:
            text = repr(value)
            name = text if len(text) <= 8 else f"Constant[{type(value).__name__}]"
        super().__init__(name=name, **kwargs)

    def run(self):
        return self.value


class GetItem(Task):
    """`task[key]`: one item of another task's result."""

    def __init__(self, key, **kwargs):
        self.key = key
        super().__init__(**kwargs)

    def run(self, task_result):
        return task_result[self.key]


class _Collection(Task):
    def __init__(self, kind, size, keys=None, **kwargs):
        self.kind = kind
        self.size = size
        self.keys = keys
        super().__init__(name=kind.__name__.capitalize(), **kwargs)

    def run(self, **items):
        if self.kind is dict:
            if "values" in items:  # as Prefect 1 builds it: a keys and a values list
                return dict(zip(items["keys"], items["values"]))
            values = [items[f"item_{i}"] for i in range(self.size)]
            return dict(zip(self.keys, values))
        return self.kind([items[f"item_{i}"] for i in range(self.size)])


def _contains_task(value):
    if isinstance(value, (Task, EdgeAnnotation)):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_contains_task(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_task(v) for v in value.values())
    return False


def as_task(value, flow=None):
    """`value` as a task: tasks as they are, collections of tasks as a collection
    task, anything else as a Constant."""
    if isinstance(value, Task):
        return value
    if isinstance(value, EdgeAnnotation):  # unmapped(x) and the like: x itself
        return as_task(value.task, flow=flow)
    if isinstance(value, (list, tuple, set, frozenset, dict)) and _contains_task(value):
        flow = flow if flow is not None else current_flow()
        if isinstance(value, dict):
            # Prefect 1's graph: a Dict task fed a list of keys and a List task
            # of the values (so flows see the same tasks, and their states).
            collection = _Collection(dict, len(value))
            collection.bind(flow=flow, keys=list(value.keys()), values=list(value.values()))
            return collection
        items = list(value)
        kind = type(value) if type(value) in (list, tuple, set, frozenset) else list
        collection = _Collection(kind, len(items))
        collection.bind(flow=flow, **{f"item_{i}": v for i, v in enumerate(items)})
        return collection
    return Constant(value)


def is_constant_input(value):
    """True when `value` can be stored as a literal input instead of a task."""
    return not _contains_task(value)


