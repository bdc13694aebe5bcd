"""Run states: small immutable objects with `is_*()` predicates.

The class hierarchy is the one Prefect 1 users know, so `isinstance` checks and
predicates keep their meaning:

    State
    ├── Pending ── Scheduled ── Retrying, Paused, Queued, Resume
    │         └── Submitted
    ├── Running ── Cancelling
    └── Finished
        ├── Success ── Cached, Mapped, Skipped
        ├── Failed ── TriggerFailed, TimedOut, ValidationFailed
        ├── Looped
        └── Cancelled

A state's `result` is the task's return value (for a failure, the exception);
`location` is where a checkpointed result was written, if it was.

States never change once made, so one state object can be shared by every
task and thread that reads it. A state handler may still write to the state
it is handed, as Prefect 1 handlers do (`new_state.message = ...`): it gets a
draft, a copy that is open for writing only while the handler runs (see
`call_state_handler`).
"""

import datetime as _dt
import enum as _enum
import time as _time

from .context import context as _run_context

__all__ = [
    "State", "Pending", "Scheduled", "Retrying", "Paused", "Queued", "Submitted",
    "Running", "Cancelling", "Finished", "Success", "Cached", "Mapped", "Skipped",
    "Failed", "TriggerFailed", "TimedOut", "ValidationFailed", "Looped", "Cancelled",
    "Resume", "state_from_name", "call_state_handler", "StateName",
]

_set = object.__setattr__
_UTC = _dt.timezone.utc
# ids of the drafts state handlers are running with now: only these take writes.
_open_drafts = set()


class State:
    """Base state. Immutable: make a new one instead of changing this one."""

    __slots__ = ("message", "result", "context", "location", "_time")
    color = "#999999"

    def __init__(self, message=None, result=None, context=None, location=None):
        _set(self, "message", message)
        _set(self, "result", result)
        _set(self, "context", context)
        _set(self, "location", location)
        _set(self, "_time", _time.time())

    def __setattr__(self, name, value):
        if id(self) in _open_drafts:
            _write_draft(self, name, value)
            return
        raise AttributeError(
            f"{type(self).__name__} states are immutable; make a new state with "
            f"state.replace({name}=...) instead of setting {name!r} (a state handler "
            "may set attributes of the new_state it is given)"
        )

    def __delattr__(self, name):
        raise AttributeError(
            f"{type(self).__name__} states are immutable; create a new state "
            f"instead of deleting {name!r}"
        )

    @property
    def timestamp(self):
        """When the state was created, as an aware UTC datetime."""
        return _dt.datetime.fromtimestamp(self._time, _UTC)

    @timestamp.setter
    def timestamp(self, value):
        # Only reached on a draft (see __setattr__); a naive datetime is UTC.
        if isinstance(value, str):
            try:
                value = _dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"state.timestamp = {value!r}: not an ISO 8601 time; give a "
                                 "datetime, e.g. datetime.now(timezone.utc)") from None
        if isinstance(value, _dt.datetime):
            value = _aware(value).timestamp()
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"state.timestamp = {value!r}: give a datetime (or seconds since the epoch)")
        _set(self, "_time", float(value))

    def _extra(self):
        return ()

    def __eq__(self, other):
        # As in Prefect 1: the same class, an equal result and equal details
        # (start time, run count, cached inputs, map states, ...); the message,
        # context, location and creation time do not take part.
        if type(self) is not type(other):
            return False
        if not _same(self.result, other.result):
            return False
        return all(_same(getattr(self, name), getattr(other, name))
                   for name in _compared_names(type(self)))

    def __hash__(self):
        # Only fields that __eq__ compares, so equal states hash alike.
        return hash((type(self).__name__, self._extra()))

    def __repr__(self):
        if self.message:
            return f'<{type(self).__name__}: "{self.message}">'
        return f"<{type(self).__name__}>"

    def __reduce__(self):
        return (_rebuild, (type(self), self._fields()))

    def _fields(self):
        return {name: getattr(self, name, None) for name in _slot_names(type(self))}

    def replace(self, **changes):
        """A copy of this state with some fields changed (same class)."""
        fields = self._fields()
        fields.update(changes)
        return _rebuild(type(self), fields)

    # Predicates. Each is a plain isinstance check so they stay cheap on the hot path.
    def is_pending(self):
        return isinstance(self, Pending)

    def is_scheduled(self):
        return isinstance(self, Scheduled)

    def is_submitted(self):
        return isinstance(self, Submitted)

    def is_queued(self):
        return isinstance(self, Queued)

    def is_retrying(self):
        return isinstance(self, Retrying)

    def is_paused(self):
        return isinstance(self, Paused)

    def is_running(self):
        return isinstance(self, Running)

    def is_cancelling(self):
        return isinstance(self, Cancelling)

    def is_finished(self):
        return isinstance(self, Finished)

    def is_successful(self):
        return isinstance(self, Success)

    def is_failed(self):
        return isinstance(self, Failed)

    def is_skipped(self):
        return isinstance(self, Skipped)

    def is_mapped(self):
        return isinstance(self, Mapped)

    def is_cached(self):
        return isinstance(self, Cached)

    def is_looped(self):
        return isinstance(self, Looped)

    def is_cancelled(self):
        return isinstance(self, Cancelled)

    def is_meta_state(self):
        return False


_SLOT_NAMES = {}


def _slot_names(cls):
    names = _SLOT_NAMES.get(cls)
    if names is None:
        names = _SLOT_NAMES[cls] = tuple(
            name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ()))
    return names


def _rebuild(cls, fields):
    state = cls.__new__(cls)
    for name, value in fields.items():
        _set(state, name, value)
    return state


_NOT_COMPARED = frozenset(("message", "result", "context", "location"))
_COMPARED_NAMES = {}


def _compared_names(cls):
    names = _COMPARED_NAMES.get(cls)
    if names is None:
        names = _COMPARED_NAMES[cls] = tuple(
            n for n in _slot_names(cls) if not n.startswith("_") and n not in _NOT_COMPARED)
    return names


def _same(a, b):
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        # e.g. arrays, whose == is elementwise and has no single truth value
        return False


# -- drafts: what state handlers write to ------------------------------------------
def _write_draft(state, name, value):
    if name in ("start_time", "cached_result_expiration") and value is not None:
        value = _aware(value)
    elif name == "map_states":
        value = list(value or ())
        _set(state, "_summary", None)
    elif name == "timestamp":
        State.timestamp.fset(state, value)
        return
    if name.startswith("_") or name not in _slot_names(type(state)):
        known = sorted({n for n in _slot_names(type(state)) if not n.startswith("_")}
                       | {"timestamp"})
        raise AttributeError(
            f"A {type(state).__name__} state has no attribute {name!r} to set; a state "
            f"handler may set {', '.join(known)}")
    _set(state, name, value)


def call_state_handler(handler, owner, old_state, new_state):
    """Call `handler(owner, old_state, draft)` and return the state it leads to.

    The draft is a copy of `new_state` that the handler may write to, as Prefect
    1 handlers do (`new_state.message = ...`, `new_state.context["k"] = v`),
    until it returns; `new_state` itself, which other tasks may share, is never
    changed. The handler's return value wins; when it returns None, the draft
    (with whatever it set) is the new state.
    """
    fields = new_state._fields()
    if fields.get("context") is None:
        fields["context"] = {}
    draft = _rebuild(type(new_state), fields)
    key = id(draft)
    _open_drafts.add(key)
    try:
        out = handler(owner, old_state, draft)
    finally:
        _open_drafts.discard(key)
    return draft if out is None else out


class Pending(State):
    """Not started yet: waiting for upstream tasks or an agent."""

    __slots__ = ("cached_inputs",)
    color = "#d3d3d3"

    def __init__(self, message=None, result=None, context=None, location=None,
                 cached_inputs=None):
        super().__init__(message, result, context, location)
        _set(self, "cached_inputs", cached_inputs)


class Scheduled(Pending):
    """Pending until `start_time`, an aware datetime (default: now, as in Prefect 1;
    a naive one is UTC)."""

    __slots__ = ("start_time",)
    color = "#ffab00"

    def __init__(self, message=None, result=None, start_time=None, context=None,
                 location=None, cached_inputs=None):
        super().__init__(message, result, context, location, cached_inputs)
        _set(self, "start_time", _aware(start_time) if start_time is not None
             else self._default_start_time())

    def _default_start_time(self):
        return _dt.datetime.fromtimestamp(self._time, _UTC)

    def _extra(self):
        return (self.start_time,)


class Retrying(Scheduled):
    """Scheduled to run again at `start_time`; `run_count` runs happened so far."""

    __slots__ = ("run_count",)
    color = "#ffca28"

    def __init__(self, message=None, result=None, start_time=None, context=None,
                 location=None, cached_inputs=None, run_count=None):
        super().__init__(message, result, start_time, context, location, cached_inputs)
        if run_count is None:  # as in Prefect 1: the run count of the task run now
            run_count = _run_context.get("task_run_count", 1)
        _set(self, "run_count", run_count)

    def _extra(self):
        return (self.start_time, self.run_count)


class Paused(Scheduled):
    """Waiting for someone to resume it (manual approval); `start_time`, if
    given, is when it resumes by itself (default None: never)."""

    __slots__ = ()
    color = "#cfd8dc"

    def _default_start_time(self):
        return None


class Resume(Scheduled):
    """Given for a paused task in `task_states`: run it now, past its pause
    (`pause_task` and `manual_only` let it through)."""

    __slots__ = ()
    color = "#ffab00"


class Queued(Scheduled):
    """Ready, but held back by a concurrency limit."""

    __slots__ = ()
    color = "#fff59d"


class Submitted(Pending):
    """Claimed by an agent, about to start."""

    __slots__ = ()
    color = "#fff9c4"


class Running(State):
    """Executing now."""

    __slots__ = ()
    color = "#00b3ff"


class Cancelling(Running):
    """Asked to stop; still running until it does."""

    __slots__ = ()
    color = "#bdbdbd"


class Finished(State):
    """Terminal: nothing will change this state."""

    __slots__ = ()
    color = "#bababa"


class Success(Finished):
    """Finished without error."""

    __slots__ = ()
    color = "#28a745"


class Cached(Success):
    """Finished by reusing an earlier result."""

    __slots__ = ("cached_inputs", "cached_parameters", "cached_result_expiration")
    color = "#5ae678"

    def __init__(self, message=None, result=None, context=None, location=None,
                 cached_inputs=None, cached_result_expiration=None,
                 cached_parameters=None):
        super().__init__(message, result, context, location)
        _set(self, "cached_inputs", cached_inputs)
        _set(self, "cached_parameters", cached_parameters)
        _set(self, "cached_result_expiration", _aware(cached_result_expiration))

    def _extra(self):
        return (self.cached_result_expiration,)


class Mapped(Success):
    """A mapped parent: its children's states are in `map_states`, in input order."""

    __slots__ = ("map_states", "_summary")
    color = "#97ffd0"

    def __init__(self, message=None, result=None, context=None, location=None,
                 map_states=None):
        map_states = list(map_states or ())
        if result is None:
            result = [s.result for s in map_states]
        super().__init__(message, result, context, location)
        _set(self, "map_states", map_states)
        _set(self, "_summary", None)

    @property
    def n_map_states(self):
        return len(self.map_states)


class Skipped(Success):
    """Deliberately not run; counts as success for triggers."""

    __slots__ = ()
    color = "#62757f"


class Failed(Finished):
    """Finished with an error; `result` is the exception."""

    __slots__ = ()
    color = "#eb0000"


class TriggerFailed(Failed):
    """Not run because its trigger did not pass."""

    __slots__ = ()
    color = "#c42800"


class TimedOut(Failed):
    """Stopped because it ran past its timeout."""

    __slots__ = ()
    color = "#cdab00"


class ValidationFailed(Failed):
    """The task's result did not pass validation."""

    __slots__ = ()
    color = "#db1b1b"


class Looped(Finished):
    """One iteration of a LOOP finished; the task runs again."""

    __slots__ = ("loop_count",)
    color = "#79c8ff"

    def __init__(self, message=None, result=None, context=None, location=None,
                 loop_count=None):
        super().__init__(message, result, context, location)
        _set(self, "loop_count", loop_count)


class Cancelled(Finished):
    """Stopped on request."""

    __slots__ = ()
    color = "#bdbdbd"


def _aware(value):
    if value is None:
        return None
    if not isinstance(value, _dt.datetime):
        raise TypeError(
            f"start_time {value!r} is not a datetime; pass one, e.g. "
            "datetime.now(timezone.utc) + timedelta(seconds=5)")
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=_UTC)  # as Prefect 1 (pendulum) reads it
    return value


class StateName(str, _enum.Enum):
    """The name of every state, as the store keeps it, the API and the CLI show it
    and filters take it: the one vocabulary of states outside the state classes.

    A member is its name as a string (`StateName.SUCCESS == "Success"`, the same
    hash, `str()` and f-strings give "Success"), so it can be compared with what
    the database returns and written to it as it is."""

    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RETRYING = "Retrying"
    PAUSED = "Paused"
    RESUME = "Resume"
    QUEUED = "Queued"
    SUBMITTED = "Submitted"
    RUNNING = "Running"
    CANCELLING = "Cancelling"
    FINISHED = "Finished"
    SUCCESS = "Success"
    CACHED = "Cached"
    MAPPED = "Mapped"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    TRIGGER_FAILED = "TriggerFailed"
    TIMED_OUT = "TimedOut"
    VALIDATION_FAILED = "ValidationFailed"
    LOOPED = "Looped"
    CANCELLED = "Cancelled"

    __str__ = str.__str__
    __format__ = str.__format__


S = StateName
# The states a flow run ends in: nothing changes a run in one of them.
TERMINAL_RUN_STATES = (S.SUCCESS, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.SKIPPED,
                       S.TRIGGER_FAILED, S.CACHED)
# The states of a flow run that holds a claim or a process.
ACTIVE_RUN_STATES = (S.SUBMITTED, S.RUNNING, S.CANCELLING)
# The states of a task run that has not ended yet: when its flow run ends
# otherwise than by finishing (cancel, crash, reaper), these end with it.
UNFINISHED_TASK_STATES = (S.PENDING, S.SCHEDULED, S.SUBMITTED, S.QUEUED, S.RUNNING,
                          S.RETRYING, S.PAUSED, S.CANCELLING, S.LOOPED)
del S

_BY_NAME = {cls.__name__: cls for cls in (
    Pending, Scheduled, Retrying, Paused, Resume, Queued, Submitted, Running, Cancelling,
    Finished, Success, Cached, Mapped, Skipped, Failed, TriggerFailed, TimedOut,
    ValidationFailed, Looped, Cancelled)}


def state_from_name(name):
    """The state class called `name` ('Success', 'Failed', ...)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a state; use one of {', '.join(sorted(_BY_NAME))}"
        ) from None
