"""Triggers: plain functions of a task's upstream states that decide if it runs.

A trigger takes `{Edge: State}` and returns True to run the task; to stop it,
it raises `TRIGGERFAIL` (or `PAUSE` for `manual_only`). A mapped parent's
children count one by one, as Prefect 1 counts them.

    @task(trigger=any_failed)
    def alert(): ...
"""

from . import signals

__all__ = [
    "all_successful", "all_failed", "any_successful", "any_failed", "all_finished",
    "always_run", "manual_only", "some_successful", "some_failed", "not_all_skipped",
]


def _states(upstream_states):
    states = []
    for state in upstream_states.values():
        map_states = getattr(state, "map_states", None)
        if map_states is not None:
            states.extend(map_states)
        else:
            states.append(state)
    return states


def all_successful(upstream_states):
    """Run if every upstream task succeeded (skipped counts as success). The default."""
    for state in upstream_states.values():
        if not state.is_successful():
            break
        if state.is_mapped() and not all(s.is_successful() for s in state.map_states):
            break
    else:
        return True
    raise signals.TRIGGERFAIL(
        'Trigger was "all_successful" but some of the upstream tasks failed.'
    )


def all_failed(upstream_states):
    """Run if every upstream task failed."""
    if not all(s.is_failed() for s in _states(upstream_states)):
        raise signals.TRIGGERFAIL(
            'Trigger was "all_failed" but some of the upstream tasks succeeded.'
        )
    return True


def any_successful(upstream_states):
    """Run if at least one upstream task succeeded (or there are none)."""
    states = _states(upstream_states)
    if states and not any(s.is_successful() for s in states):
        raise signals.TRIGGERFAIL(
            'Trigger was "any_successful" but none of the upstream tasks succeeded.'
        )
    return True


def any_failed(upstream_states):
    """Run if at least one upstream task failed (or there are none)."""
    states = _states(upstream_states)
    if states and not any(s.is_failed() for s in states):
        raise signals.TRIGGERFAIL(
            'Trigger was "any_failed" but none of the upstream tasks failed.'
        )
    return True


def all_finished(upstream_states):
    """Run once every upstream task finished, whatever its state."""
    if not all(s.is_finished() for s in _states(upstream_states)):
        raise signals.TRIGGERFAIL(
            'Trigger was "all_finished" but some of the upstream tasks were not finished.'
        )
    return True


always_run = all_finished


def manual_only(upstream_states):
    """Pause the task until someone resumes it (root tasks run at once)."""
    from .context import context

    if not upstream_states or context.get("resume", False):
        return True
    raise signals.PAUSE('Trigger function is "manual_only"')


def not_all_skipped(upstream_states):
    """Run if every upstream task succeeded and not all of them were skipped."""
    states = _states(upstream_states)
    if not all(s.is_successful() for s in states):
        raise signals.TRIGGERFAIL(
            'Trigger was "not_all_skipped" but some of the upstream tasks failed.'
        )
    if states and all(s.is_skipped() for s in states):
        raise signals.SKIP('All upstreams were skipped', result=None)
    return True


def _bounded(kind, predicate, at_least, at_most):
    def trigger(upstream_states):
        states = _states(upstream_states)
        n = sum(1 for s in states if predicate(s))
        low = at_least if at_least is not None else 1
        if isinstance(low, float) and 0 < low < 1:
            low = low * len(states)
        high = at_most if at_most is not None else len(states)
        if isinstance(high, float) and 0 < high < 1:
            high = high * len(states)
        if not (low <= n <= high):
            raise signals.TRIGGERFAIL(
                f'Trigger was "some_{kind}" for between {low} and {high} upstream '
                f"tasks, but {n} of {len(states)} were {kind}."
            )
        return True

    trigger.__name__ = f"some_{kind}"
    return trigger


def some_successful(at_least=None, at_most=None):
    """A trigger that runs if between `at_least` and `at_most` upstreams succeeded.

    Either bound may be a count or a fraction in (0, 1).
    """
    return _bounded("successful", lambda s: s.is_successful(), at_least, at_most)


def some_failed(at_least=None, at_most=None):
    """A trigger that runs if between `at_least` and `at_most` upstreams failed."""
    return _bounded("failed", lambda s: s.is_failed(), at_least, at_most)
