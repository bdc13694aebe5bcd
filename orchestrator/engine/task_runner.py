"""The task runner: one task run as a short pipeline of steps.

    check upstream finished -> skip if upstream skipped -> trigger
    -> gather inputs -> target / cache -> run (retries, loops, timeout)
    -> checkpoint

Each step either returns or raises `ENDRUN(state)`; exceptions become states in
one place (`run_task`). Everything a run needs that does not change between
runs is computed once per flow run into a `TaskPlan`, so the per-task work is
what the task needs and no more: no copies of the context, no handler calls
when there are no handlers, no log formatting when the level is off.
"""

import contextvars
import ctypes
import datetime as _dt
import logging
import os
import threading
import time

import cloudpickle

from ..core import context as _context
from ..core import signals
from ..core import triggers as _triggers
from ..core.cache_validators import duration_only
from ..core.results import (PROCESSES_FIX, ResultError, SerializationError,
                            unpicklable_message)
from ..core.edge import Edge
from ..core.states import (Cached, Failed, Finished, Looped, Mapped, Pending, Resume,
                           Retrying, Running, Skipped, State, Success, TimedOut,
                           TriggerFailed, call_state_handler)
from ..core.task import Task, handler_list
from . import run_logging

__all__ = ["RunSettings", "TaskPlan", "run_task", "TaskEnvelope", "TaskTimeoutError",
           "SKIP_MESSAGE", "TaskRunner"]

logger = logging.getLogger(__name__)

SKIP_MESSAGE = (
    "Upstream task was skipped; if this was not the intended behavior, consider "
    "changing `skip_on_upstream_skip=False` for this task."
)
_UTC = _dt.timezone.utc
_RUNNING = Running("Starting task run.")
_NOT_READY = Pending("Upstream tasks are not finished.")
_PENDING = Pending()
_CACHES = {}
_caches_lock = threading.Lock()


class TaskTimeoutError(Exception):
    """Stands as the result of a TimedOut state."""


class _TimeoutInterrupt(BaseException):
    """Raised inside a task thread that ran past its timeout, to stop it."""


class RunSettings:
    """What every task of one flow run shares (one object per run)."""

    __slots__ = ("flow_stack", "remote", "inline_wait", "reporter", "extra_loggers",
                 "parameters", "log_info", "checkpointing", "flow_result", "origin_pid",
                 "location_base", "task_slots")

    def __init__(self, flow_stack, *, remote=False, inline_wait=float("inf"),
                 reporter=None, extra_loggers=(), parameters=None, checkpointing=False,
                 flow_result=None):
        self.flow_stack = flow_stack
        self.remote = remote
        self.inline_wait = inline_wait
        self.reporter = reporter
        # Tag limits for tasks in other processes, which cannot reach the reporter.
        self.task_slots = reporter.task_slots() if remote and reporter is not None else None
        self.extra_loggers = tuple(extra_loggers)
        self.parameters = parameters
        self.checkpointing = checkpointing
        self.flow_result = flow_result
        self.origin_pid = os.getpid()
        self.location_base = None
        self.log_info = logger.isEnabledFor(logging.INFO)

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__ if name != "reporter"}

    def __setstate__(self, data):
        # Unpickled on a worker: set up logging there before reading its level.
        run_logging.ensure_logging()
        for name in self.__slots__:
            setattr(self, name, data.get(name))
        self.log_info = logger.isEnabledFor(logging.INFO)


class TaskPlan:
    """What one task's runs need, computed once per flow run."""

    __slots__ = ("task", "name", "slug", "edges", "keyed", "constants", "run",
                 "default_trigger", "handlers", "result", "checkpoint", "tags", "mapped",
                 "settings", "flow_stack", "remote", "log_info", "inline_wait", "reporter",
                 "flattened_inputs", "slots")

    def __init__(self, task, slug, edges, constants, settings):
        self.task = task
        self.name = task.name
        self.slug = slug
        self.edges = edges = tuple(edges)
        self.keyed = tuple((i, e.key) for i, e in enumerate(edges) if e.key) if edges else ()
        self.constants = constants or None
        self.run = task.run
        self.default_trigger = task.trigger is _triggers.all_successful
        self.handlers = tuple(task.state_handlers)
        result = self.result = task.result or settings.flow_result
        if result is None:
            self.checkpoint = False
        elif task.checkpoint is not None:
            self.checkpoint = bool(task.checkpoint)
        else:
            self.checkpoint = settings.checkpointing or task.result is not None
        self.tags = task.tags
        self.mapped = any(e.mapped for e in edges) if edges else False
        # flatten() in a plain call: the task gets the flattened list whole.
        self.flattened_inputs = tuple(
            i for i, e in enumerate(edges) if e.flattened and not e.mapped) if edges else ()
        self.settings = settings
        self.flow_stack = settings.flow_stack
        self.remote = settings.remote
        self.log_info = settings.log_info
        self.inline_wait = settings.inline_wait
        # Tasks in other processes cannot reach the reporter: the flow runner
        # reports their states when they come back.
        self.reporter = None if settings.remote else settings.reporter
        # Who keeps tag limits: the reporter here, or what it gave for other processes.
        self.slots = settings.task_slots if settings.remote else settings.reporter

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__ if name != "reporter"}

    def __setstate__(self, data):
        for name in self.__slots__:
            setattr(self, name, data.get(name))
        self.log_info = self.settings.log_info

    def add_context(self, layer):
        """Give this task's runs `layer` on top of the run's context (a
        `task_contexts` entry, or `resume` for a task given as Resume)."""
        self.flow_stack = (dict(layer),) + self.flow_stack


def _raising():
    """True inside `raise_on_exception()`: errors propagate instead of becoming states."""
    return bool(_context.context.get("raise_on_exception"))


def run_task(plan, map_index, *upstream):
    """Run one task (or one mapped child) given its upstream states, in edge order.

    Returns the final State, or a `TaskEnvelope` with the state and the captured
    log records when the plan runs in another process than its flow.
    """
    if plan.remote:
        return _run_remote(plan, map_index, upstream)
    return _run(plan, map_index, upstream)


def _run(plan, map_index, upstream, state=None):
    if _context.current_stack() is not plan.flow_stack:
        # On a worker thread or process: run inside the flow's context, so
        # triggers, handlers and log records see the run.
        token = _context.push_stack(plan.flow_stack)
        try:
            return _run(plan, map_index, upstream, state)
        finally:
            _context.pop(token)
    full_name = plan.name if map_index is None else f"{plan.name}[{map_index}]"
    state = state or _PENDING
    # The runner's own lines belong to the task run, like the lines its task logs.
    stamps = {"task_name": plan.name, "task_slug": plan.slug, "map_index": map_index}
    if plan.log_info:
        logger.info("Task '%s': Starting task run...", full_name, extra=stamps)
    # State handlers run as part of the task run (as in Prefect 1), so what they
    # log, with task.logger say, belongs to it. Only tasks with handlers pay
    # for this layer.
    token = _context.push(dict(stamps, task_full_name=full_name, task_tags=plan.tags)) \
        if plan.handlers else None
    try:
        _check_upstream_finished(upstream)
        if plan.task.skip_on_upstream_skip and upstream:
            _check_upstream_skipped(upstream)
        if upstream or not plan.default_trigger:
            _check_trigger(plan, upstream)
        inputs = _gather_inputs(plan, upstream)
        state = _run_with_retries(plan, map_index, full_name, inputs, state)
    except signals.ENDRUN as end:  # a check before the run decided the state
        state = end.state
        if plan.handlers and not isinstance(state, Pending):
            state = _transition(plan, _PENDING, state)
    except signals.Signal as sig:  # PAUSE or SKIP raised by a trigger
        state = sig.state
        if plan.handlers:
            state = _transition(plan, _PENDING, state)
    finally:
        if token is not None:
            _context.pop(token)
    if plan.reporter is not None:
        plan.reporter.task_state(plan.slug, plan.name, map_index, state,
                                 _context_run_count(state))
    if plan.log_info:
        logger.info("Task '%s': Finished task run for task with final state: '%s'",
                    full_name, type(state).__name__, extra=stamps)
    return state


def _context_run_count(state):
    return getattr(state, "run_count", None)


# -- steps --------------------------------------------------------------------
def _mapped_summary(state):
    """(all children finished, all successful, any skipped) of a Mapped state,
    computed once per state however many tasks read it."""
    summary = getattr(state, "_summary", None)
    if summary is None:
        children = state.map_states
        summary = (all(isinstance(c, Finished) for c in children),
                   all(isinstance(c, Success) for c in children),
                   any(isinstance(c, Skipped) for c in children))
        object.__setattr__(state, "_summary", summary)
    return summary


def _check_upstream_finished(upstream):
    for s in upstream:
        if not isinstance(s, Finished) or (isinstance(s, Mapped) and not _mapped_summary(s)[0]):
            raise signals.ENDRUN(_NOT_READY)


def _check_upstream_skipped(upstream):
    for s in upstream:
        if isinstance(s, Skipped) or (isinstance(s, Mapped) and _mapped_summary(s)[2]):
            raise signals.ENDRUN(Skipped(SKIP_MESSAGE))


def _check_trigger(plan, upstream, edges=None):
    if plan.default_trigger:
        for s in upstream:
            if not isinstance(s, Success):
                break
            if isinstance(s, Mapped) and not _mapped_summary(s)[1]:
                break
        else:
            return
    states = dict(zip(edges if edges is not None else plan.edges, upstream))
    try:
        ok = plan.task.trigger(states)
    except (signals.PAUSE, signals.SKIP):
        raise
    except signals.Signal as sig:
        raise signals.ENDRUN(sig.state) from None
    except Exception as exc:
        if _raising():
            raise
        # As in Prefect 1, a trigger that breaks stops its task as TriggerFailed.
        logger.error("Task %r: its trigger raised", plan.name, exc_info=True)
        raise signals.ENDRUN(TriggerFailed(
            f"Trigger {getattr(plan.task.trigger, '__name__', plan.task.trigger)!s} of task "
            f"{plan.name!r} raised {exc!r}", result=exc)) from None
    if not ok:
        raise signals.ENDRUN(_triggers_failed(plan))


def _triggers_failed(plan):
    name = getattr(plan.task.trigger, "__name__", "trigger")
    return TriggerFailed(f'Trigger was "{name}" but it returned False.')


def _gather_inputs(plan, upstream):
    inputs = dict(plan.constants) if plan.constants else {}
    for i, key in plan.keyed:
        inputs[key] = upstream[i].result
    for i in plan.flattened_inputs:
        key = plan.edges[i].key
        if key is not None:
            inputs[key] = [x for inner in upstream[i].result for x in inner]
    return inputs


def _run_with_retries(plan, map_index, full_name, inputs, state):
    """The task's attempts, until one ends the run: a success, a failure with
    no retries left, a retry further off than `inline_wait` (the run ends
    Retrying), or a state a handler or the task asked for. Then its result is
    kept, as the task says."""
    cached = _cached_state(plan, map_index, full_name, inputs)
    if cached is not None:
        return cached
    handlers = plan.handlers
    run_count = 1
    loop_count = None
    loop_result = None
    while True:
        state = _attempt(plan, map_index, full_name, inputs, state,
                         run_count, loop_count, loop_result)
        if type(state) is _Final:
            return state.state
        if isinstance(state, Looped):
            loop_count = (loop_count or 1) + 1
            loop_result = state.result
            state = _next_loop(plan, state, loop_count)
            continue
        if handlers:
            state, retry = _outcome_told(plan, state, run_count)
        else:
            retry = _retry_state(plan, state, run_count)
        if retry is None:
            break
        state = retry
        if not _wait_for_retry(plan, map_index, retry, run_count):
            return retry
        run_count += 1
    if plan.checkpoint or plan.task.cache_for:
        state = _keep_result(plan, map_index, full_name, inputs, state)
    return state


class _Final:
    """An attempt's state that ends the task run as it is, with no retry and no
    result kept: a handler stopped the attempt from starting, or the task
    raised ENDRUN."""

    __slots__ = ("state",)

    def __init__(self, state):
        self.state = state


def _attempt(plan, map_index, full_name, inputs, state, run_count, loop_count, loop_result):
    """One run of the task from `state`, in its own context layer (run count,
    loop): handlers see it start, the reporter hears of it, tag limits are held
    while it runs. Returns its state, or a _Final."""
    overlay = {
        "task_name": plan.name, "task_slug": plan.slug, "task_id": plan.slug,
        "task_full_name": full_name, "task_tags": plan.tags,
        "task_run_count": run_count, "map_index": map_index,
    }
    if loop_count is not None:
        overlay["task_loop_count"] = loop_count
        overlay["task_loop_result"] = loop_result
    token = _context.push_stack((overlay,) + plan.flow_stack)
    try:
        if plan.handlers:
            state = _transition(plan, state, _RUNNING)
            if not isinstance(state, Running):
                return _Final(state)
        if plan.reporter is not None:
            plan.reporter.task_state(plan.slug, plan.name, map_index, _RUNNING, run_count)
        if plan.slots is not None and plan.tags:
            return _call_holding_slots(plan, map_index, full_name, inputs)
        return _call(plan, full_name, inputs)
    except signals.ENDRUN as end:  # the task asked for this exact state
        return _Final(_transition(plan, _RUNNING, end.state) if plan.handlers else end.state)
    finally:
        _context.pop(token)


def _call_holding_slots(plan, map_index, full_name, inputs):
    """The task's call, holding a slot of each of its tags that has a limit."""
    keeper = plan.slots
    limited = plan.tags and plan.tags & keeper.limited_tags  # (no tags: nothing to ask)
    if not limited:
        return _call(plan, full_name, inputs)
    # The task run's own name (slug, map index): the same when Dask runs it
    # again on another worker, so it finds its slot.
    slots = keeper.acquire_task_slots(
        sorted(limited), plan.slug if map_index is None else f"{plan.slug}[{map_index}]")
    try:
        return _call(plan, full_name, inputs)
    finally:
        if slots is not None:
            keeper.release_task_slots(slots)


def _next_loop(plan, state, loop_count):
    """The state the next loop starts from: the Looped one, or, with handlers,
    the Pending one they make of it."""
    if not plan.handlers:
        return state
    state = _transition(plan, _RUNNING, state)
    return _transition(plan, state, Pending(f"Looping task (on loop index {loop_count - 1})"))


def _outcome_told(plan, state, run_count):
    """With handlers: the attempt's state once they saw it, and the retry it
    leads to (None: it ends the run), which they see too."""
    # Handlers see the attempt's outcome first; a handler that turns a failure
    # into success means there is nothing to retry. A RETRY from the task
    # itself they see only as the retry.
    seen = not isinstance(state, Retrying)
    if seen:
        state = _transition(plan, _RUNNING, state)
    retry = _retry_state(plan, state, run_count)
    if retry is not None:
        retry = _transition(plan, state if seen else _RUNNING, retry)
    return state, retry


def _wait_for_retry(plan, map_index, retry, run_count):
    """Report the retry and wait here for its start time; False, without
    waiting, when that is further off than `inline_wait`."""
    if plan.reporter is not None:
        plan.reporter.task_state(plan.slug, plan.name, map_index, retry, run_count)
    wait = (retry.start_time - _dt.datetime.now(_UTC)).total_seconds() \
        if retry.start_time else 0.0
    if wait > plan.inline_wait:
        return False
    if wait > 0:
        time.sleep(wait)
    return True


def _keep_result(plan, map_index, full_name, inputs, state):
    """The final state of a task that checkpoints or caches, its result kept."""
    # A skipped task has no value to keep (its result is the SKIP, if any).
    if isinstance(state, Success) and not isinstance(state, Skipped):
        done = _checkpoint(plan, map_index, full_name, inputs, state)
        if plan.handlers and isinstance(done, Cached) and done is not state:
            done = _transition(plan, state, done)  # Success -> Cached, as in Prefect 1
        state = done
    return state


def _retry_state(plan, state, run_count):
    if isinstance(state, Retrying):
        return state.replace(run_count=run_count,
                             start_time=state.start_time or _dt.datetime.now(_UTC))
    if isinstance(state, Failed) and run_count <= plan.task.max_retries:
        return Retrying(
            f"Retrying Task (after attempt {run_count} of {plan.task.max_retries + 1})",
            start_time=_dt.datetime.now(_UTC) + plan.task.retry_delay,
            run_count=run_count,
        )
    return None


def _call(plan, full_name, inputs):
    capture = plan.task.log_stdout
    if capture:
        line_logger, out_token = run_logging.start_stdout_capture()
    try:
        if plan.task.timeout is None:
            value = plan.run(**inputs)
        else:
            value = _call_with_timeout(plan, inputs)
        return Success("Task run succeeded.", result=value)
    except signals.ENDRUN:
        raise  # the exact state asked for: no retry, no checkpoint
    except signals.Signal as sig:
        return sig.state
    except TaskTimeoutError as exc:
        logger.error("Task '%s': %s", full_name, exc)
        if _raising():
            raise
        return TimedOut("Task timed out during execution.", result=exc)
    except Exception as exc:
        logger.error("Task '%s': Exception encountered during task execution!",
                     full_name, exc_info=True)
        if _raising():
            raise
        return Failed(f"Error during execution of task: {exc!r}", result=exc)
    finally:
        if capture:
            run_logging.stop_stdout_capture(line_logger, out_token)


def _call_with_timeout(plan, inputs):
    ctx = contextvars.copy_context()
    box = {}

    def target():
        try:
            box["value"] = ctx.run(plan.run, **inputs)
        except _TimeoutInterrupt:
            pass
        except BaseException as exc:  # handed to the caller's thread as-is
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True,
                              name=f"orchestrator-timeout-{plan.name}")
    thread.start()
    thread.join(plan.task.timeout)
    if thread.is_alive():
        # Ask the thread to stop at its next bytecode; a C call in progress
        # (a socket read, say) finishes first. Its result is discarded.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(_TimeoutInterrupt))
        raise TaskTimeoutError(
            f"Task {plan.name!r} ran longer than its timeout of {plan.task.timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _transition(plan, old, new):
    for handler in plan.handlers:
        try:
            new = call_state_handler(handler, plan.task, old, new)
        except Exception as exc:
            logger.error("Task %r: state handler %r raised", plan.name,
                         getattr(handler, "__name__", handler), exc_info=True)
            if _raising():
                raise
            return Failed(f"Exception raised while calling state handlers: {exc!r}",
                          result=exc)
    return new


# -- results: target, cache, checkpoint ------------------------------------------
def _location_values(plan, map_index, full_name):
    settings = plan.settings
    base = settings.location_base
    if base is None:  # the run's part, merged once per run
        base = {}
        for layer in reversed(plan.flow_stack):
            base.update(layer)
        base.update(base.get("parameters") or {})
        settings.location_base = base
    values = dict(base)
    values.update(task_name=plan.name, task_slug=plan.slug, task_full_name=full_name,
                  map_index=map_index,
                  map_suffix="" if map_index is None else f"-{map_index}")
    return values


def _cache_key(plan, map_index):
    flow_name = next((layer["flow_name"] for layer in plan.flow_stack
                      if "flow_name" in layer), None)
    key = plan.task.cache_key or f"{flow_name}/{plan.slug}"
    return key if map_index is None else f"{key}[{map_index}]"


def _cached_state(plan, map_index, full_name, inputs):
    """The state a target or cache gives this run without running the task, or
    None. A bad target, result or cache validator fails the task."""
    try:
        if plan.task.target and plan.result is not None:
            found = _target_state(plan, map_index, full_name)
            if found is not None:
                return found
        if plan.task.cache_for:
            return _cache_hit(plan, map_index, inputs)
    except Exception as exc:  # a bad target, result or cache validator: this task fails
        logger.error("Task '%s': checking its target or cache failed", full_name,
                     exc_info=True)
        return Failed(f"Task {full_name!r}: checking its target or cache failed: {exc!r}",
                      result=exc)
    return None


def _target_state(plan, map_index, full_name):
    """Cached with the result found at the task's target, or None when there
    is none there."""
    values = _location_values(plan, map_index, full_name)
    try:
        target = plan.task.target
        location = (target(**values) if callable(target)
                    else plan.result.format_location(target, **values))
        if plan.result.exists(location):
            return Cached(f"Result found at task target {location}",
                          result=plan.result.read(location), location=location)
    except ResultError as exc:
        return Failed(f"Task {full_name!r}: {exc}", result=exc)
    return None


def _cache_hit(plan, map_index, inputs):
    """The newest state cached for this task that is still valid for these
    inputs and parameters, or None."""
    now = _dt.datetime.now(_UTC)
    with _caches_lock:
        candidates = list(_CACHES.get(_cache_key(plan, map_index), ()))
    for cached in reversed(candidates):
        if cached.cached_result_expiration and cached.cached_result_expiration > now \
                and (plan.task.cache_validator or duration_only)(cached, inputs, plan.settings.parameters):
            return cached
    return None


def _checkpoint(plan, map_index, full_name, inputs, state):
    if plan.checkpoint:
        values = _location_values(plan, map_index, full_name)
        if plan.task.target:
            target = plan.task.target
            values["_target"] = target(**values) if callable(target) else target
        try:
            location = plan.result.write(state.result, **values)
        except SerializationError as exc:
            return Failed(unpicklable_message(
                full_name, state.result, exc.error,
                f"checkpointing writes it with {plan.result.serializer!r}"), result=exc)
        except ResultError as exc:
            return Failed(f"Task {full_name!r}: {exc}", result=exc)
        except Exception as exc:
            logger.error("Task '%s': writing its result failed", full_name, exc_info=True)
            return Failed(f"Task {full_name!r}: writing its result with "
                          f"{plan.result!r} failed: {exc!r}", result=exc)
        state = state.replace(location=location)
    if plan.task.cache_for:
        # As in Prefect 1, the run that computes the value ends Cached too, and
        # later runs within cache_for get this very state.
        cached = Cached("Task run succeeded; result cached.", result=state.result,
                        location=state.location, cached_inputs=inputs,
                        cached_parameters=plan.settings.parameters,
                        cached_result_expiration=_dt.datetime.now(_UTC) + plan.task.cache_for)
        key = _cache_key(plan, map_index)
        with _caches_lock:  # keep only entries that can still be used
            now = _dt.datetime.now(_UTC)
            _CACHES[key] = [c for c in _CACHES.get(key, ())
                            if c.cached_result_expiration > now] + [cached]
        return cached
    return state


# -- runs in another process -----------------------------------------------------
class TaskEnvelope:
    """A task's final state and the log records it emitted, as sent between
    processes. The state is pickled once, where the task ran, and those bytes
    are what travel: a result that cannot be pickled turns the state into a
    Failed one that says so, before any downstream task on the same worker
    sees it, instead of a bare `TypeError: cannot pickle` somewhere in Dask."""

    __slots__ = ("state", "payload", "logs", "task_name")

    def __init__(self, state, logs, task_name, payload=None):
        self.state = state
        self.logs = logs
        self.task_name = task_name
        self.payload = payload

    @classmethod
    def sealed(cls, state, logs, task_name):
        try:
            payload = cloudpickle.dumps(state)
        except Exception as exc:
            state = Failed(unpicklable_message(
                task_name, state.result, exc,
                "its result must travel between processes to reach downstream tasks "
                "and the flow", fix=PROCESSES_FIX))
            payload = cloudpickle.dumps(state)
        return cls(state, logs, task_name, payload)

    def __reduce__(self):
        payload = self.payload if self.payload is not None else cloudpickle.dumps(self.state)
        return (_load_envelope, (payload, self.logs, self.task_name))


def _load_envelope(payload, logs, task_name):
    return TaskEnvelope(cloudpickle.loads(payload), logs, task_name, payload)


def unwrap(value):
    return value.state if isinstance(value, TaskEnvelope) else value


def _run_remote(plan, map_index, upstream):
    upstream = tuple(unwrap(u) for u in upstream)
    name = plan.name if map_index is None else f"{plan.name}[{map_index}]"
    if os.getpid() == plan.settings.origin_pid:
        # An in-process worker (a threaded Dask cluster): records already reach
        # this process's handlers; capturing them would log each one twice.
        return TaskEnvelope(_run(plan, map_index, upstream), (), name)
    records, token = run_logging.start_capture(plan.settings.extra_loggers)
    try:
        state = _run(plan, map_index, upstream)
    finally:
        run_logging.stop_capture(token)
    return TaskEnvelope.sealed(state, records, name)


# -- Prefect 1's TaskRunner ------------------------------------------------------
class TaskRunner:
    """Runs one task once, outside a flow run, as Prefect 1's TaskRunner does:

        state = TaskRunner(task=add).run(
            upstream_states={Edge(one, add, key="x"): Success(result=1)},
            context={"today": "2024-05-01"})

    `upstream_states` maps each Edge into the task to its upstream's state;
    keyed edges give the task its inputs. The task runs one attempt: a failure
    with retries left comes back as Retrying, for the caller to run again.
    `state` is where the run starts: a finished state comes back unchanged,
    `Resume()` lets a paused task through. `state_handlers` are called as
    `handler(task_runner, old_state, new_state)` after the task's own ones.
    With `is_mapped_parent=True`, the task runs once per item of its mapped
    inputs and the result is a Mapped state with the children's states.
    """

    def __init__(self, task, state_handlers=None, flow_result=None):
        if not isinstance(task, Task):
            raise TypeError(
                f"TaskRunner(task={task!r}) needs a Task, e.g. TaskRunner(task=my_task)")
        self.task = task
        self.state_handlers = handler_list(state_handlers, f"TaskRunner of task {task.name!r}")
        self.flow_result = flow_result

    def __repr__(self):
        return f"<TaskRunner: {self.task.name}>"

    def run(self, state=None, upstream_states=None, context=None, is_mapped_parent=False):
        if state is not None and not isinstance(state, State):
            raise TypeError(f"TaskRunner.run(state={state!r}) needs a State or None")
        if isinstance(state, Finished):
            return state
        upstream_states = dict(upstream_states or {})
        for edge in upstream_states:
            if not isinstance(edge, Edge):
                raise TypeError(
                    f"TaskRunner.run(upstream_states=...) maps Edges to states; {edge!r} is "
                    "not an Edge. Use e.g. {Edge(upstream, task, key='x'): Success(result=1)}")
        layer = dict(context or {})
        if isinstance(state, Resume):
            layer["resume"] = True
        stack = (layer,) + _context.current_stack()
        settings = RunSettings(stack, flow_result=self.flow_result,
                               parameters=layer.get("parameters"),
                               inline_wait=float("-inf"))  # one attempt per call
        edges = list(upstream_states)
        plan = TaskPlan(self.task, self.task.slug or self.task.name, edges, None, settings)
        if self.state_handlers:
            plan.handlers += tuple(RunnerHandler(h, self) for h in self.state_handlers)
        upstream = [upstream_states[e] for e in edges]
        start = state if isinstance(state, Pending) else None
        if is_mapped_parent and plan.mapped \
                and all(isinstance(s, Success) for s in upstream):
            return self._map(plan, edges, upstream)
        # (a parent whose upstream did not succeed ends as its trigger says)
        return _run(plan, layer.get("map_index"), upstream, start)

    @staticmethod
    def _map(plan, edges, upstream):
        """The parent's Mapped state, its children run one per item."""
        columns = []
        for edge, state in zip(edges, upstream):
            if not edge.mapped:
                columns.append(None)
            elif isinstance(state, Mapped):  # child i feeds child i
                columns.append(list(state.map_states))
            else:
                items = state.result
                if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
                    return Failed(
                        f"Task {plan.name!r} maps over the result of "
                        f"{edge.upstream_task.name!r}, which is a {type(items).__name__}, "
                        "not a list or other sequence")
                columns.append([Success("Mapped input.", result=x) for x in items])
        n = min(len(c) for c in columns if c is not None)
        children = [_run(plan, i, [c[i] if c is not None else u
                                   for c, u in zip(columns, upstream)])
                    for i in range(n)]
        return Mapped("Ready to proceed with mapping.", map_states=children)


class RunnerHandler:
    """A runner's state handler, called as `handler(runner, old, new)` where the
    task's own handlers get the task (Prefect 1's runner-level handlers)."""

    __slots__ = ("handler", "runner")

    def __init__(self, handler, runner):
        self.handler = handler
        self.runner = runner

    def __call__(self, task, old_state, new_state):
        return self.handler(self.runner, old_state, new_state)

    @property
    def __name__(self):
        return getattr(self.handler, "__name__", repr(self.handler))
