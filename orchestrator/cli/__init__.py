"""The `orchestrator` command (`orchestrator.cli.commands`) and the
processes it starts (`orchestrator.cli.up`: `up` and `server`)."""

from .commands import main

__all__ = ["main"]
