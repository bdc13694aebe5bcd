"""The Reporter: how the engine tells a backend what a run is doing.

The engine never imports the store. A backend run hands the flow runner a
Reporter; `flow.run()` uses none, and then no reporting code runs at all.
Calls come from the flow's process (from the threads tasks run on, for local
executors), so an implementation must be thread-safe and must not block:
buffer, and write in the background.
"""

__all__ = ["Reporter", "ARTIFACT_KEEPER"]

# The key of the run context under which a backend run puts its reporter's
# `artifact_keeper()`, for `orchestrator.artifacts` to find from a task body
# (the context travels with the task to other threads and processes).
ARTIFACT_KEEPER = "_artifact_keeper"


class Reporter:
    """Receives task-run states and artifacts. Subclass and override what you need."""

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

    def artifact(self, artifact_id, slug, map_index, kind, text, when):
        """Task run (slug, map_index) made artifact `artifact_id` at `when` (epoch
        seconds): `kind` "markdown" or "link", with its text. `slug` is None for
        one made outside a task (a flow's state handler)."""

    def update_artifact(self, artifact_id, kind, text, when):
        """Artifact `artifact_id` of this run now has this kind and text."""

    def delete_artifact(self, artifact_id):
        """Artifact `artifact_id` of this run is gone."""

    def artifact_keeper(self):
        """What `orchestrator.artifacts` calls from a task: an object with
        `create(slug, map_index, kind, text) -> id`, `update(id, kind, text)` and
        `delete(id)`, picklable for tasks in other processes; None when this run
        keeps no artifacts."""
        return None

    def flush(self):
        """Write everything buffered so far."""
