"""Artifacts: a markdown report or a link that a task publishes with its run,
as Prefect 1's `prefect.backend.artifacts` (and the older `prefect.artifacts`).

    from orchestrator.artifacts import create_link_artifact, create_markdown_artifact

    @task
    def report(totals):
        rows = "\\n".join(f"| {region} | {total} |" for region, total in totals.items())
        create_markdown_artifact("# Sales\\n\\n| region | total |\\n|---|---|\\n" + rows)
        create_link_artifact("https://dashboards.example.com/sales")

In a run from the store (`orchestrator execute`, `orchestrator up`) each one is
stored with the task run that made it (flow run, task slug, map index) and the
call returns its id, a UUID string, as Prefect 1 returns one; `orchestrator
show RUN`, `GET /api/flow_runs/{id}/artifacts` and the run's web page show
them. The task does not wait for the disk: the run's process writes artifacts
with the task states, fenced by the run's attempt like every other write about
the run. Tasks on Dask workers write them to the store themselves (SQLite for
workers on this host, PostgreSQL for workers anywhere).

Under `flow.run()` there is no store: as in Prefect 1, nothing is kept and
every function returns None; the artifact is logged (INFO) instead, so it is
not lost from sight. Values are checked the same way in both, so a flow that
works under `flow.run()` also works from the store.
"""

import logging

from ..core.context import context
from .reporter import ARTIFACT_KEEPER
from ..exceptions import InputError, OrchestratorError
from ..core.validation import check_storable, shown

__all__ = ["create_markdown_artifact", "create_link_artifact", "update_markdown_artifact",
           "update_link_artifact", "delete_artifact", "ArtifactNotFound",
           "MAX_ARTIFACT_BYTES", "create_markdown", "create_link", "update_markdown",
           "update_link"]

logger = logging.getLogger(__name__)

MAX_ARTIFACT_BYTES = 1024 * 1024  # as a run's parameters: every listing reads it whole
_SHOWN_CHARACTERS = 200  # of a markdown artifact in the log line of flow.run()


class ArtifactNotFound(OrchestratorError, LookupError):
    """No artifact with that id in this run (never made, deleted, or another run's)."""


def create_markdown_artifact(markdown):
    """Publish `markdown` (a str) with the current task run; returns the
    artifact's id, or None under flow.run() (nothing is kept there)."""
    return _create("markdown", _checked_text(markdown, "markdown"))


def create_link_artifact(link):
    """Publish `link` (a URL, one line) with the current task run; returns the
    artifact's id, or None under flow.run() (nothing is kept there)."""
    return _create("link", _checked_link(link))


def update_markdown_artifact(task_run_artifact_id, markdown):
    """Replace artifact `task_run_artifact_id` of this run with `markdown`."""
    _update(task_run_artifact_id, "markdown", _checked_text(markdown, "markdown"))


def update_link_artifact(task_run_artifact_id, link):
    """Replace artifact `task_run_artifact_id` of this run with `link`."""
    _update(task_run_artifact_id, "link", _checked_link(link))


def delete_artifact(task_run_artifact_id):
    """Delete artifact `task_run_artifact_id` of this run."""
    keeper = context.get(ARTIFACT_KEEPER)
    if keeper is not None:
        keeper.delete(_checked_id(task_run_artifact_id))


# Prefect 1's older names (`prefect.artifacts`), which it kept with a warning.
create_markdown = create_markdown_artifact
create_link = create_link_artifact
update_markdown = update_markdown_artifact
update_link = update_link_artifact


def _create(kind, text):
    keeper = context.get(ARTIFACT_KEEPER)
    if keeper is None:
        _log_unkept(kind, text)
        return None
    return keeper.create(context.get("task_slug"), context.get("map_index"), kind, text)


def _update(artifact_id, kind, text):
    keeper = context.get(ARTIFACT_KEEPER)
    if keeper is not None:
        keeper.update(_checked_id(artifact_id), kind, text)


def _log_unkept(kind, text):
    if not logger.isEnabledFor(logging.INFO):
        return
    task = context.get("task_full_name")
    shown_text = text if len(text) <= _SHOWN_CHARACTERS else (
        f"{text[:_SHOWN_CHARACTERS]}... ({len(text)} characters)")
    logger.info("%s artifact%s not kept: this run has no store (flow.run()); runs from "
                "the store keep it. It reads: %s", kind.capitalize(),
                f" of task {task!r}" if task else "", shown_text)


def _checked_text(value, field):
    if not isinstance(value, str):
        raise InputError(f"{field} {shown(value)} is of type {type(value).__name__}, not a "
                         f"string; pass the {field} as text (str)", field)
    check_storable(value, field)
    size = len(value.encode("utf-8"))
    if size > MAX_ARTIFACT_BYTES:
        raise InputError(f"{field} {shown(value)} is {size} bytes, over the limit of "
                         f"{MAX_ARTIFACT_BYTES} bytes (1 MiB) for an artifact; write the "
                         "full report to a file or object store and publish a summary, "
                         "or a link to it", field)
    return value


def _checked_link(value):
    link = _checked_text(value, "link")
    problem = "is blank" if not link.strip() else (
        "has a line break" if "\n" in link or "\r" in link else None)
    if problem:
        raise InputError(f"link {shown(link)} {problem}; give one URL, e.g. "
                         "https://dashboards.example.com/sales", "link")
    return link


def _checked_id(value):
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"task_run_artifact_id {shown(value)} is not an artifact id; pass "
                         "the id that create_markdown_artifact or create_link_artifact "
                         "returned", "task_run_artifact_id")
    return value
