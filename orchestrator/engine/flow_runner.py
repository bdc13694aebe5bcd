"""The flow runner: freezes a flow's graph once, submits its tasks to an
executor in topological order, and turns their states into the flow's state.

Mapped tasks run depth first: a child of `b.map(a.map(xs))` starts as soon as
its own upstream child finished, without waiting for all of `a`. Only a mapped
input that is not itself mapped (a list from one task) must be computed first,
to learn how many children there are. Submitting a mapped task's children
is `mapping.py`'s job.

`FlowRunner(flow).run(...)` takes Prefect 1's arguments too (`state`,
`task_states`, `return_tasks`, `parameters`, `task_runner_state_handlers`,
`executor`, `context`, `task_contexts`), so code that drives Prefect 1's
FlowRunner by hand runs unchanged.
"""

import contextlib
import datetime as _dt
import difflib
import gc
import logging
import uuid

from ..config import load_config
from ..core import context as _context
from ..core.states import (Cancelled, Failed, Finished, Mapped, Paused, Pending, Resume,
                           Running, Scheduled, State, Success, call_state_handler)
from ..core.task import handler_list
from ..exceptions import FlowValidationError, OrchestratorError, ParameterError
from . import run_logging
from .executors import Executor, ExecutorError, LocalExecutor
from .mapping import MappedEntry, submit_mapped
from .task_runner import (RunnerHandler, RunSettings, TaskEnvelope, TaskPlan, TaskRunner,
                          run_task)
from ..core import signals

__all__ = ["FlowRunner", "TaskRunner", "run_flow", "resolve_parameters"]

logger = logging.getLogger(__name__)
_UTC = _dt.timezone.utc


def resolve_parameters(flow, given):
    """The run's parameter values: given ones, then defaults (callables called now).

    Raises ParameterError naming unknown and missing parameters.
    """
    params = {p.name: p for p in flow.parameters()}
    given = dict(given or {})
    unknown = sorted(set(given) - set(params))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, params, n=1)
            if close:
                hints.append(f"{name!r} (did you mean {close[0]!r}?)")
            else:
                hints.append(repr(name))
        known = ", ".join(sorted(params)) if params else "none"
        raise ParameterError(
            f"Flow {flow.name!r} has no parameter {', '.join(hints)}. "
            f"Its parameters are: {known}."
        )
    missing = sorted(name for name, p in params.items() if p.required and name not in given)
    if missing:
        raise ParameterError(
            f"Flow {flow.name!r} needs a value for the required parameter"
            f"{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"pass it as flow.run({missing[0]}=...) or in parameters={{...}}."
        )
    values = {}
    for name, p in params.items():
        values[name] = given[name] if name in given else p.default_value()
    return values


def flow_context(flow, parameters, flow_run_id=None, flow_run_name=None,
                 scheduled_start_time=None, checkpointing=False, backend=False):
    """The flow-level context layer every task of the run sees."""
    run_id = flow_run_id or str(uuid.uuid4())
    when = scheduled_start_time or _dt.datetime.now(_UTC)
    day = when.date()
    one = _dt.timedelta(days=1)
    return {
        "flow_name": flow.name, "flow_id": flow.name, "flow_run_id": run_id,
        "flow_run_name": flow_run_name or run_id, "parameters": parameters,
        "scheduled_start_time": when, "date": when,
        "today": day.isoformat(), "yesterday": (day - one).isoformat(),
        "tomorrow": (day + one).isoformat(), "today_nodash": day.strftime("%Y%m%d"),
        "yesterday_nodash": (day - one).strftime("%Y%m%d"),
        "tomorrow_nodash": (day + one).strftime("%Y%m%d"),
        "checkpointing": checkpointing, "running_with_backend": backend,
    }


class FlowRunner:
    """Runs one flow once: `FlowRunner(flow).run(parameters={...})` returns the
    flow's State, whose `.result` maps tasks to their states.

    As Prefect 1's: `state_handlers` are called as `handler(runner, old, new)`
    after the flow's own. `task_runner_cls` may only be TaskRunner (tasks run on
    this engine's task runner; state handlers are the way to hook into them).

    The engine's own settings are keywords: `executor` (else the flow's, else
    LocalExecutor), `reporter` (where a backend run writes states and logs),
    `inline_wait` (the longest retry delay waited for in this process; a longer
    one leaves the task Retrying, for a backend to resume), `config`, `backend`.
    """

    def __init__(self, flow, task_runner_cls=None, state_handlers=None, *, executor=None,
                 reporter=None, inline_wait=float("inf"), config=None, backend=False):
        if task_runner_cls is not None and task_runner_cls is not TaskRunner:
            raise ExecutorError(
                f"FlowRunner(task_runner_cls={task_runner_cls!r}): tasks run on this "
                "engine's own task runner, so another TaskRunner class would be ignored; "
                "drop task_runner_cls, and hook into task runs with state handlers "
                "(FlowRunner.run(task_runner_state_handlers=[...]) or a task's "
                "state_handlers)")
        self.flow = flow
        self.backend = backend
        self.executor = _check_executor(executor or flow.executor or LocalExecutor())
        self.session = None
        self.reporter = reporter
        self.inline_wait = inline_wait
        self.config = config
        self.task_runner_cls = TaskRunner
        self.state_handlers = handler_list(state_handlers, f"FlowRunner of flow {flow.name!r}")

    def __repr__(self):
        return f"<FlowRunner: {self.flow.name}>"

    def run(self, state=None, task_states=None, return_tasks=None, parameters=None,
            task_runner_state_handlers=None, executor=None, context=None,
            task_contexts=None, *, flow_run_id=None, flow_run_name=None,
            scheduled_start_time=None):
        """Run the flow and return its State.

        Prefect 1's arguments: `state` where the run starts (a finished one, or
        one Scheduled for later, comes back unchanged); `task_states` {task:
        state} already known (finished ones are not run again; `Resume()` lets a
        paused task through); `return_tasks`: the tasks whose states the
        result holds (default: every task's, as `flow.run()` returns);
        `task_runner_state_handlers`, called as `handler(task_runner, old,
        new)` for every task; `executor` for this run; `context` values every
        task sees; `task_contexts` {task: {key: value}} for single tasks.
        A backend run also names the run: `flow_run_id`, `flow_run_name`,
        `scheduled_start_time`.
        """
        flow = self.flow
        if state is not None and not isinstance(state, State):
            raise TypeError(f"FlowRunner.run(state={state!r}) needs a State or None")
        if isinstance(state, Finished):
            return state
        if isinstance(state, Scheduled) and not isinstance(state, Resume) \
                and state.start_time is not None \
                and state.start_time > _dt.datetime.now(_UTC):
            logger.info("Flow run of %r is scheduled for %s, not now; not running it",
                        flow.name, state.start_time.isoformat())
            return state
        flow.validate()
        run_logging.ensure_logging()
        config = self.config or load_config()
        values = resolve_parameters(flow, parameters)
        layer = flow_context(flow, values, flow_run_id, flow_run_name,
                             scheduled_start_time,
                             checkpointing=bool(config["flows"].get("checkpointing")),
                             backend=self.backend)
        # Values the caller gives (a backfill's `today`, a run name) win over
        # the run's own, as in Prefect 1.
        user_layer = dict(context or {})
        stack = ((user_layer, layer) if user_layer else (layer,)) + _context.current_stack()
        token = _context.push_stack(stack)
        try:
            # Prefect 1's FlowRunner starts from Pending; flow.run() and runs
            # from the store start from Scheduled.
            initial = state or (Scheduled() if self.backend else Pending())
            state = self._transition(initial, Running("Running flow."))
            if not isinstance(state, Running):
                return state
            logger.info("Beginning Flow run for '%s'", flow.name)
            try:
                wanted = _return_tasks(flow, return_tasks)
                session_of = _check_executor(executor) if executor is not None \
                    else self.executor
                settings = self._settings(stack, layer, values, config, session_of)
                extras = _task_extras(task_runner_state_handlers, task_contexts)
                with _graph_kept_out_of_gc(), session_of.start() as session:
                    self.session = session
                    states = self._run_tasks(settings, task_states or {}, extras)
            except OrchestratorError as exc:  # e.g. a misconfigured executor: say it plainly
                logger.error("Flow run of %r could not run: %s", flow.name, exc)
                return self._transition(state, Failed(str(exc), result=exc))
            except (Exception, signals.Signal) as exc:
                logger.error("Unexpected error: %r", exc, exc_info=True)
                if _context.context.get("raise_on_exception"):
                    raise
                return self._transition(state, Failed(f"Unexpected error: {exc!r}",
                                                      result=exc))
            finally:
                self.session = None
            final = self._final_state(states)
            if flow.terminal_state_handler is not None and final.is_finished():
                final = self._terminal_state(final, states)
            if wanted is not None and isinstance(final.result, dict):
                final = final.replace(result={t: states[t] for t in wanted})
            final = self._transition(state, final)
            if isinstance(final, Success):
                logger.info("Flow run SUCCESS: all reference tasks succeeded")
            elif isinstance(final, Failed):
                logger.info("Flow run FAILED: some reference tasks failed.")
            return final
        finally:
            _context.pop(token)

    def _terminal_state(self, final, states):
        reference = {states[t] for t in self.flow.reference_tasks()}
        try:
            out = self.flow.terminal_state_handler(self.flow, final, reference)
        except Exception as exc:
            logger.error("Flow %r: terminal_state_handler raised", self.flow.name,
                         exc_info=True)
            return Failed(f"Exception raised while calling the terminal state handler: "
                          f"{exc!r}", result=states)
        return final if out is None else out

    def _transition(self, old, new):
        handlers = [(h, self.flow) for h in self.flow.state_handlers]
        handlers += [(h, self) for h in self.state_handlers]
        for handler, owner in handlers:
            try:
                new = call_state_handler(handler, owner, old, new)
            except Exception as exc:
                logger.error("Flow %r: state handler raised", self.flow.name, exc_info=True)
                if _context.context.get("raise_on_exception"):
                    raise
                return Failed(f"Exception raised while calling state handlers: {exc!r}",
                              result=exc)
        return new

    def _settings(self, stack, layer, values, config, executor=None):
        executor = executor or self.executor
        return RunSettings(
            stack, remote=executor.in_other_process, inline_wait=self.inline_wait,
            reporter=self.reporter, parameters=values,
            extra_loggers=config["logging"].get("extra_loggers") or (),
            checkpointing=layer["checkpointing"], flow_result=self.flow.result)

    def _run_tasks(self, settings, given, extras=None):
        flow = self.flow
        slugs, edges_to, constants = flow.slugs, flow._upstream, flow.constants
        session = self.session
        submit = session.submit
        entries = {}
        for t in flow.sorted_tasks():
            previous = given.get(t)
            if previous is not None and previous.is_finished():
                # A mapped task resumes as its children, so each keeps its own state.
                entries[t] = (MappedEntry(list(previous.map_states), session)
                              if isinstance(previous, Mapped) else previous)
                continue
            # Planned just before it is submitted: each task is read once, while hot.
            plan = TaskPlan(t, slugs[t], edges_to[t], constants.get(t), settings)
            if isinstance(previous, Resume):
                plan.add_context({"resume": True})
            if extras is not None:
                extras.apply(plan)
            upstream = [entries[e.upstream_task] for e in plan.edges]
            if plan.mapped:
                entry = entries[t] = submit_mapped(session, plan, upstream)
                if self.reporter is not None and type(entry) is not MappedEntry:
                    self.reporter.task_state(plan.slug, plan.name, None, entry, None)
            else:
                for i, u in enumerate(upstream):
                    if type(u) is MappedEntry:
                        upstream[i] = u.collected
                entries[t] = submit(run_task, plan, None, *upstream)
        return self._gather(entries)

    def _gather(self, entries):
        futures = []
        for entry in entries.values():
            if type(entry) is MappedEntry:
                futures.extend(entry.children)
            else:
                futures.append(entry)
        done = iter(self.session.wait(futures))
        states = {}
        remote = self.session.in_other_process
        reporter = self.reporter
        for t, entry in entries.items():
            if type(entry) is MappedEntry:
                children = [next(done) for _ in entry.children]
                if remote:
                    children = [self._receive(c) for c in children]
                    if reporter is not None:
                        for i, child in enumerate(children):
                            reporter.task_state(self.flow.slugs[t], t.name, i, child, None)
                states[t] = Mapped("Ready to proceed with mapping.", map_states=children)
            else:
                value = next(done)
                states[t] = self._receive(value) if remote else value
                if remote and reporter is not None:
                    reporter.task_state(self.flow.slugs[t], t.name, None, states[t], None)
            if reporter is not None and type(states[t]) is Mapped:
                reporter.task_state(self.flow.slugs[t], t.name, None, states[t], None)
        return states

    @staticmethod
    def _receive(value):
        if isinstance(value, TaskEnvelope):
            if value.logs:
                run_logging.emit_captured(value.logs)
            return value.state
        return value

    def _final_state(self, states):
        flow = self.flow
        waiting = [t for t, s in states.items() if not s.is_finished() or (
            isinstance(s, Mapped) and not all(c.is_finished() for c in s.map_states))]
        if waiting:
            paused = [t.name for t in waiting if isinstance(states[t], Paused) or any(
                isinstance(c, Paused) for c in getattr(states[t], "map_states", ()))]
            if paused:
                logger.warning(
                    "Flow run paused at %s. To resume, run again with "
                    "flow.run(task_states=state.result, context={'resume': True}).",
                    ", ".join(map(repr, paused)))
            return Running(
                f"Not all tasks finished: {', '.join(repr(t.name) for t in waiting[:5])}"
                f"{' ...' if len(waiting) > 5 else ''} "
                f"{'is' if len(waiting) == 1 else 'are'} still "
                f"{_unfinished_name(states[waiting[0]])}.", result=states)
        reference = []
        for t in flow.reference_tasks():
            s = states[t]
            if isinstance(s, Mapped) and s.map_states:
                reference.extend(s.map_states)
            else:
                reference.append(s)
        if any(s.is_failed() for s in reference):
            return Failed("Some reference tasks failed.", result=states)
        if all(s.is_successful() for s in reference):
            return Success("All reference tasks succeeded.", result=states)
        if any(isinstance(s, Cancelled) for s in reference):
            return Cancelled("Some reference tasks were cancelled.", result=states)
        return Failed("Some reference tasks did not succeed.", result=states)


_frozen_for_good = False


def frozen_for_good():
    """Say that this process froze what it imported (gc.freeze) and ends with
    its run: a warm-start child. Its runs then freeze their graph too, and never
    unfreeze (which would hand the collector every shared object to walk, and
    write to their pages); and the check below, which walks every frozen
    object, is skipped."""
    global _frozen_for_good
    _frozen_for_good = True


@contextlib.contextmanager
def _graph_kept_out_of_gc():
    """Keep the objects that exist before the run (the flow graph, imported
    modules) out of the cyclic collector's full passes while the run lasts.

    Without this, each full collection walks the whole graph again and the
    time per task grows with the size of the flow. Done only when nothing else
    in the process uses gc.freeze(), so a caller's frozen objects stay frozen.
    """
    if _frozen_for_good:
        gc.freeze()
        yield
        return
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _unfinished_name(state):
    if isinstance(state, Mapped):
        child = next((c for c in state.map_states if not c.is_finished()), None)
        if child is not None:
            return f"{type(child).__name__} (a mapped child)"
    return type(state).__name__


def _check_executor(executor):
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, type) and issubclass(executor, Executor):
        raise ExecutorError(
            f"executor={executor.__name__} is a class; pass an instance: "
            f"executor={executor.__name__}()")
    raise ExecutorError(
        f"executor={executor!r} is not an executor; pass LocalExecutor(), "
        "LocalDaskExecutor() or DaskExecutor() from orchestrator.executors")


def _return_tasks(flow, return_tasks):
    """The tasks whose states the flow's result keeps (None: all of them)."""
    if return_tasks is None:
        return None
    wanted = list(return_tasks)
    foreign = [t for t in wanted if t not in flow]
    if foreign:
        raise FlowValidationError(
            f"return_tasks names {', '.join(repr(getattr(t, 'name', t)) for t in foreign)}, "
            f"which {'is' if len(foreign) == 1 else 'are'} not in flow {flow.name!r}; pass "
            "tasks of this flow (e.g. the objects the `with Flow(...)` block made)")
    return wanted


def _task_extras(handlers, contexts):
    """Prefect 1's per-run task settings, or None when there are none (plain
    runs then pay nothing for them)."""
    if not handlers and not contexts:
        return None
    return _TaskExtras(handlers, contexts)


class _TaskExtras:
    """Runner state handlers for every task, and a context layer for some."""

    __slots__ = ("handlers", "contexts")

    def __init__(self, handlers, contexts):
        self.handlers = tuple(handler_list(handlers, "task_runner_state_handlers"))
        self.contexts = dict(contexts or {})

    def apply(self, plan):
        if self.handlers:
            runner = TaskRunner(plan.task)
            plan.handlers += tuple(RunnerHandler(h, runner) for h in self.handlers)
        layer = self.contexts.get(plan.task)
        if layer:
            plan.add_context(layer)


def run_flow(flow, parameters=None, executor=None, context=None, task_states=None):
    """What `flow.run()` does: run in this process and return the flow's State."""
    return FlowRunner(flow, executor=executor).run(
        state=Scheduled(), parameters=parameters, context=context, task_states=task_states)


