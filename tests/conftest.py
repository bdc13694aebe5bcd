"""Shared fixtures: a temporary ORCHESTRATOR_HOME, and captured run log records."""

import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fresh ORCHESTRATOR_HOME for every test; no ORCHESTRATOR__* overrides leak in."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(path))
    for name in list(__import__("os").environ):
        if name.startswith("ORCHESTRATOR__"):
            monkeypatch.delenv(name)
    from orchestrator.engine import run_logging

    run_logging.configure_logging()
    yield path
    run_logging.configure_logging()


class RecordList(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, logger_prefix=""):
        return [r.getMessage() for r in self.records if r.name.startswith(logger_prefix)]


@pytest.fixture
def log_records():
    """Every record that reaches the `orchestrator` logger (and its children)."""
    handler = RecordList()
    root = logging.getLogger("orchestrator")
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture
def python():
    """The interpreter running the tests, for subprocesses."""
    return sys.executable
