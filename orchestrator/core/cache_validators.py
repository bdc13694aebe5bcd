"""Cache validators: decide if a cached result may stand in for a new run.

Each is `(cached_state, inputs, parameters) -> bool`; the cache's expiry
(`cache_for`) is checked before any validator.
"""

__all__ = ["never_use", "duration_only", "all_inputs", "all_parameters",
           "partial_inputs_only", "partial_parameters_only"]


def never_use(state, inputs, parameters):
    return False


def duration_only(state, inputs, parameters):
    """Valid until it expires, whatever the inputs."""
    return True


def all_inputs(state, inputs, parameters):
    """Valid while the task's inputs are equal to the cached run's."""
    return state.cached_inputs == inputs


def all_parameters(state, inputs, parameters):
    """Valid while the flow's parameters are equal to the cached run's."""
    return state.cached_parameters == parameters


def partial_inputs_only(validate_on):
    """Valid while the named inputs are equal to the cached run's."""
    names = list(validate_on or ())

    def validator(state, inputs, parameters):
        cached = state.cached_inputs or {}
        return all(cached.get(n) == inputs.get(n) for n in names)

    return validator


def partial_parameters_only(validate_on):
    """Valid while the named parameters are equal to the cached run's."""
    names = list(validate_on or ())

    def validator(state, inputs, parameters):
        cached = state.cached_parameters or {}
        return all(cached.get(n) == (parameters or {}).get(n) for n in names)

    return validator
