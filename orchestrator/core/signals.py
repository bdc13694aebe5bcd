"""Signals: exceptions a task raises to end its run in a chosen state.

Each signal carries the state it stands for in `.state`. They derive from
`BaseException`, so a task's own `except Exception:` cannot swallow them.

    from orchestrator.signals import FAIL, RETRY
    raise RETRY("not there yet", start_time=now + timedelta(seconds=30))
"""

import datetime as _dt

from . import states
from .context import context

__all__ = [
    "Signal", "PrefectStateSignal", "ENDRUN", "FAIL", "TRIGGERFAIL",
    "VALIDATIONFAIL", "SUCCESS", "RETRY", "SKIP", "PAUSE", "LOOP", "signal_from_state",
    "pause_task",
]


class Signal(BaseException):
    """Base of every signal. `state` is the state the task run ends in."""

    _state_class = states.State

    def __init__(self, message=None, *args, **kwargs):
        kwargs.setdefault("result", self)
        super().__init__(message, *args)
        self.state = self._state_class(message, *args, **kwargs)

    def __str__(self):
        return str(self.state.message) if self.state.message is not None else ""


PrefectStateSignal = Signal


class ENDRUN(Signal):
    """End the run in exactly `state` (engine and user code alike)."""

    def __init__(self, state=None):
        if not isinstance(state, states.State):
            raise TypeError(f"ENDRUN needs a State, got {state!r}")
        BaseException.__init__(self, state.message)
        self.state = state


class FAIL(Signal):
    """End the task run as Failed."""

    _state_class = states.Failed


class TRIGGERFAIL(FAIL):
    """End the task run as TriggerFailed: its upstream states did not allow it."""

    _state_class = states.TriggerFailed


class VALIDATIONFAIL(FAIL):
    """End the task run as ValidationFailed."""

    _state_class = states.ValidationFailed


class SUCCESS(Signal):
    """End the task run as Success (pass `result=` to give it a value)."""

    _state_class = states.Success


class RETRY(Signal):
    """Run the task again at `start_time` (default: now), even with max_retries=0."""

    _state_class = states.Retrying


class SKIP(Signal):
    """End the task run as Skipped; downstream tasks skip too unless they opt out.

    As with every signal (and in Prefect 1), the Skipped state's result is the
    signal itself unless `result=` is given."""

    _state_class = states.Skipped


class PAUSE(Signal):
    """Pause the task run until it is resumed."""

    _state_class = states.Paused


class LOOP(Signal):
    """Finish this iteration with `result=`, and run the task again.

    The next iteration reads the value from `context.task_loop_result` and the
    iteration number from `context.task_loop_count`.
    """

    _state_class = states.Looped


_BY_STATE = [
    (states.TriggerFailed, TRIGGERFAIL), (states.ValidationFailed, VALIDATIONFAIL),
    (states.Failed, FAIL), (states.Skipped, SKIP), (states.Success, SUCCESS),
    (states.Retrying, RETRY), (states.Paused, PAUSE), (states.Looped, LOOP),
]


def signal_from_state(state):
    """The signal class that ends a run in `state`'s class."""
    for state_class, signal in _BY_STATE:
        if isinstance(state, state_class):
            return signal
    raise ValueError(f"No signal ends a run in {type(state).__name__}")


def pause_task(message=None, duration=None):
    """Pause the running task here, as Prefect 1's `pause_task` does, unless it
    was resumed (`context.resume`, or the task given as `Resume()` in
    `task_states`): then this returns and the task goes on.

    The whole task runs again when it is resumed, so call this before work
    that must not repeat. `duration` (a timedelta, or seconds) is when the
    pause ends by itself; without it the task waits to be resumed.
    """
    if context.get("resume", False):
        return
    start_time = None
    if duration is not None:
        seconds = duration.total_seconds() if isinstance(duration, _dt.timedelta) else duration
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(
                f"pause_task(duration={duration!r}): give a datetime.timedelta or seconds")
        start_time = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=seconds)
    raise PAUSE(message or "Pause signal raised during task execution.",
                start_time=start_time)
