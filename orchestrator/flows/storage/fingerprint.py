"""`flow_fingerprint(flow)`: a digest of what makes a flow behave as it does,
so registering an unchanged flow can keep its version."""

import functools
import hashlib
import inspect
import json
import re
import textwrap
import types


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 8

# Task attributes described field by field in `_describe_task`; any other
# attribute (a Constant's value, a result, a target, ...) is described generically.
_TASK_FIELDS = ("name", "slug", "tags", "max_retries", "retry_delay", "timeout", "trigger",
                "skip_on_upstream_skip", "checkpoint", "cache_for", "nout", "log_stdout",
                "run", "__doc__")


def _stable_repr(value):
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{type(value).__qualname__}: repr failed with {type(exc).__name__}>"
    return _ADDRESS.sub("", text)


def _json_key(value):
    return json.dumps(value, sort_keys=True)


def _describe_code(code, depth):
    return {
        "code": code.co_code.hex(),
        "consts": [_describe(c, depth + 1) for c in code.co_consts],
        "names": list(code.co_names),
    }


def _describe_function(fn, depth=0):
    """A function by its source (or bytecode), closure and defaults, never its identity."""
    try:
        body = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        body = _describe_code(fn.__code__, depth)
    closure = []
    for cell in fn.__closure__ or ():
        try:
            closure.append(_describe(cell.cell_contents, depth + 1))
        except ValueError:  # an empty cell
            closure.append(None)
    return {
        "function": fn.__qualname__,
        "body": body,
        "closure": closure,
        "defaults": _describe(fn.__defaults__, depth + 1),
        "kwdefaults": _describe(fn.__kwdefaults__, depth + 1),
    }


def _describe_trigger(trigger):
    """A trigger by name and closure (`some_successful(at_least=2)` keeps its 2).

    Not by source: a trigger is chosen by name, and a new release of the
    built-in triggers should not give every registered flow a new version.
    """
    if not isinstance(trigger, types.FunctionType):
        return _describe(trigger)
    closure = []
    for cell in trigger.__closure__ or ():
        try:
            closure.append(_describe(cell.cell_contents, 1))
        except ValueError:  # an empty cell
            closure.append(None)
    return {"trigger": trigger.__qualname__, "closure": closure}


def _describe(value, depth=0):
    """A JSON-able description of `value` that is the same in every process."""
    if depth > _MAX_DEPTH:
        return _stable_repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, complex)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [_describe(v, depth + 1) for v in value]]
    if isinstance(value, (set, frozenset)):
        # Set order depends on the per-process string hash seed: sort.
        return [type(value).__name__,
                sorted((_describe(v, depth + 1) for v in value), key=_json_key)]
    if isinstance(value, dict):
        items = [[_describe(k, depth + 1), _describe(v, depth + 1)] for k, v in value.items()]
        return ["dict", sorted(items, key=lambda kv: _json_key(kv[0]))]
    if isinstance(value, types.CodeType):
        return _describe_code(value, depth)
    if isinstance(value, types.FunctionType):
        return _describe_function(value, depth)
    if isinstance(value, types.MethodType):
        return ["method", _describe(value.__func__, depth + 1)]
    if isinstance(value, functools.partial):
        return ["partial", _describe(value.func, depth + 1), _describe(value.args, depth + 1),
                _describe(value.keywords, depth + 1)]
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', None)}.{value.__qualname__}"
    if type(value).__repr__ is object.__repr__ and hasattr(value, "__dict__"):
        # The default repr says nothing but the type: describe the attributes.
        return [type(value).__qualname__, _describe(vars(value), depth + 1)]
    return _stable_repr(value)


def _seconds(value):
    return value.total_seconds() if hasattr(value, "total_seconds") else _describe(value)


def _describe_task(task, slug):
    run = task.__dict__.get("run") or getattr(type(task), "run", None)
    if isinstance(run, types.MethodType):
        run = run.__func__
    return {
        "slug": slug,
        "type": type(task).__qualname__,
        "name": task.name,
        "max_retries": task.max_retries,
        "retry_delay": _seconds(task.retry_delay),
        "timeout": _describe(task.timeout),
        "trigger": _describe_trigger(task.trigger),
        "skip_on_upstream_skip": _describe(task.skip_on_upstream_skip),
        "checkpoint": _describe(task.checkpoint),
        "tags": sorted(map(str, task.tags)),
        "cache_for": _seconds(task.cache_for),
        "nout": task.nout,
        "log_stdout": _describe(task.log_stdout),
        "run": _describe(run),
        "attributes": {key: _describe(value) for key, value in vars(task).items()
                       if key not in _TASK_FIELDS},
    }


def flow_fingerprint(flow):
    """A sha256 (hex) of everything that decides how `flow` behaves.

    Covers each task (by slug: type, settings, its trigger by name and
    arguments, the source of its `run` or, without source, its bytecode, other
    attributes such as a Constant's value), the edges, keyword constants,
    parameters and their defaults (a callable default by its source, never by
    a value it returns), reference tasks, handlers and the schedule. Storage,
    run config and executor are not included: they say where and how a flow
    runs, not what it does. The same flow built in another process has the
    same fingerprint (no ids, addresses or hash-seed-dependent orders).
    """
    slugs = flow.slugs

    def slug_of(t):
        return slugs.get(t, t.name)

    description = {
        "name": flow.name,
        "tasks": sorted((_describe_task(t, slug_of(t)) for t in flow.tasks),
                        key=lambda d: d["slug"]),
        "edges": sorted(([slug_of(e.upstream_task), slug_of(e.downstream_task), e.key,
                          e.mapped, e.flattened] for e in flow.edges), key=_json_key),
        "constants": sorted(([slug_of(t), _describe(values)]
                             for t, values in flow.constants.items() if values), key=_json_key),
        "parameters": sorted(([p.name, p.required, _describe(p.default)]
                              for p in flow.parameters()), key=_json_key),
        "reference_tasks": sorted(slug_of(t) for t in flow.reference_tasks()),
        "state_handlers": _describe(flow.state_handlers),
        "terminal_state_handler": _describe(flow.terminal_state_handler),
        "result": _describe(flow.result),
        "schedule": _describe(flow.schedule) if flow.schedule is not None else None,
    }
    text = json.dumps(description, sort_keys=True, separators=(",", ":"), default=_stable_repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
