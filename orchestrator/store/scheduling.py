"""Store queries of the scheduler: schedules, auto-scheduled runs, late runs.

A mixin of `Store` (see store.py), kept in its own module.
"""


class SchedulingQueries:
    """Mixed into Store; uses `self.db` and the models."""
