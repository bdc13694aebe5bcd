"""The Reporter: how the engine tells a backend what a run is doing.

The engine never imports the store. A backend run hands the flow runner a
Reporter; `flow.run()` uses none, and then no reporting code runs at all.
Calls come from the flow's process (from the threads tasks run on, for local
executors), so an implementation must be thread-safe and must not block:
buffer, and write in the background.
"""

__all__ = ["Reporter"]


class Reporter:
    """Receives task-run states. Subclass and override what you need."""

    def task_state(self, slug, task_name, map_index, state, run_count):
        """A task run (or mapped child; map_index None otherwise) entered `state`."""

    limited_tags = frozenset()

    def acquire_task_slots(self, tags, holder):
        """Block until `holder` may run a task with these tags (tag limits);
        returns a token for `release_task_slots`. Called only for tags in
        `limited_tags`."""

    def release_task_slots(self, token):
        """Give back what `acquire_task_slots` took."""

    def task_slots(self):
        """A picklable object with `limited_tags`, `acquire_task_slots` and
        `release_task_slots` for tasks that run in other processes (Dask
        workers), or None when tag limits cannot be kept there."""
        return None

    def flush(self):
        """Write everything buffered so far."""
