"""Artifacts: a markdown report or a link a task publishes with its run
(`create_markdown_artifact`, `create_link_artifact`, ...).

A public import path; the implementation is `orchestrator.engine.artifacts`."""

from .engine.artifacts import *  # noqa: F401,F403
from .engine.artifacts import __all__  # noqa: F401
