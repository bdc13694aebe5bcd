"""The public import surface: the names `orchestrator` and each public module
export (`__all__`), written out here so that adding or dropping one is a change
to this file, and the top-level modules kept to import paths (a docstring,
imports and `__all__`) so that implementation stays in the subpackages."""

import ast
import importlib
from pathlib import Path

import click
import pytest

import orchestrator

PACKAGE = Path(orchestrator.__file__).parent

EXPORTS = {
    "orchestrator": [
        "Client", "Context", "DateTimeParameter", "Edge", "Flow", "FlowRunner",
        "OrchestratorError", "Parameter", "ResourceManager", "Task", "TaskRunner",
        "__version__", "apply_map", "as_task", "cache_validators", "case", "context",
        "defaults_from_attrs", "executors", "flatten", "get_logger", "ifelse", "mapped",
        "merge", "pause_task", "raise_on_exception", "resource_manager", "results",
        "serializers", "signals", "states", "switch", "tags", "task", "triggers", "unmapped",
    ],
    "orchestrator.artifacts": [
        "ArtifactNotFound", "MAX_ARTIFACT_BYTES", "create_link", "create_link_artifact",
        "create_markdown", "create_markdown_artifact", "delete_artifact", "update_link",
        "update_link_artifact", "update_markdown", "update_markdown_artifact",
    ],
    "orchestrator.cache_validators": [
        "all_inputs", "all_parameters", "duration_only", "never_use", "partial_inputs_only",
        "partial_parameters_only",
    ],
    "orchestrator.client": ["Client", "ClientError", "FINISHED_STATES", "ServerNotRunning"],
    "orchestrator.executors": ["DaskExecutor", "Executor", "LocalDaskExecutor", "LocalExecutor"],
    "orchestrator.notifications": [
        "callback_factory", "gmail_notifier", "slack_message_formatter", "slack_notifier",
    ],
    "orchestrator.results": [
        "LocalResult", "PackedResult", "Result", "SerializationError", "is_url",
        "unpicklable_message",
    ],
    "orchestrator.run_configs": [
        "AGENT_KINDS", "DockerRun", "ECSRun", "KubernetesRun", "LocalRun", "RunConfig",
        "RunConfigError", "UniversalRun", "VertexRun", "needs_other_agent",
    ],
    "orchestrator.schedules": [
        "Clock", "ClockEvent", "CronClock", "CronSchedule", "DatesClock", "IntervalClock",
        "IntervalSchedule", "Schedule", "ScheduleError", "describe_schedule",
    ],
    "orchestrator.serializers": ["JSONSerializer", "PickleSerializer", "Serializer"],
    "orchestrator.signals": [
        "ENDRUN", "FAIL", "LOOP", "PAUSE", "PrefectStateSignal", "RETRY", "SKIP", "SUCCESS",
        "Signal", "TRIGGERFAIL", "VALIDATIONFAIL", "pause_task", "signal_from_state",
    ],
    "orchestrator.states": [
        "Cached", "Cancelled", "Cancelling", "Failed", "Finished", "Looped", "Mapped",
        "Paused", "Pending", "Queued", "Resume", "Retrying", "Running", "Scheduled",
        "Skipped", "State", "StateName", "Submitted", "Success", "TimedOut",
        "TriggerFailed", "ValidationFailed", "call_state_handler", "state_from_name",
    ],
    "orchestrator.storage": [
        "Azure", "Bitbucket", "Docker", "GCS", "Git", "GitHub", "GitLab", "Local", "Module",
        "S3", "Script", "Storage", "StorageError", "Webhook", "WebhookResponse",
        "flow_fingerprint",
    ],
    "orchestrator.tasks": ["defaults_from_attrs"],
    "orchestrator.triggers": [
        "all_failed", "all_finished", "all_successful", "always_run", "any_failed",
        "any_successful", "manual_only", "not_all_skipped", "some_failed", "some_successful",
    ],
}

# Top-level modules that hold code of their own: the package root, `python -m
# orchestrator`, and the modules everything imports without the package's weight.
MAY_HOLD_CODE = {"__init__", "__main__", "version", "config", "exceptions", "exit_codes"}

# prefect1_imports is a package with no directory (`__path__ = []`), under which only
# the import switch's finder imports; it holds nothing else.
MAY_ASSIGN = {"prefect1_imports": {"__all__", "__path__"}}


def import_path_modules():
    return sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem not in MAY_HOLD_CODE)


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_a_public_module_exports_exactly_the_names_written_here(module):
    assert sorted(importlib.import_module(module).__all__) == EXPORTS[module]


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_every_exported_name_imports_from_its_public_path(module):
    namespace = {}
    exec(f"from {module} import *", namespace)  # fails on a name in __all__ that is missing
    for name in EXPORTS[module]:
        assert namespace.get(name) is not None, f"from {module} import {name} gives nothing"


def test_the_command_and_the_client_resolve_where_users_find_them():
    from orchestrator import Client
    from orchestrator.cli import main
    from orchestrator.client import Client as ClientInItsModule

    assert isinstance(main, click.Command)  # the console script orchestrator.cli:main
    assert Client is ClientInItsModule
    assert isinstance(Client, type)


def test_the_public_modules_that_are_files_are_among_those_checked_below():
    assert set(import_path_modules()) >= {
        "artifacts", "cache_validators", "executors", "notifications", "results",
        "run_configs", "schedules", "serializers", "signals", "states", "storage", "triggers"}


@pytest.mark.parametrize("name", import_path_modules())
def test_a_top_level_module_holds_only_a_docstring_imports_and_all(name):
    path = PACKAGE / f"{name}.py"
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"orchestrator/{name}.py has no module docstring"
    allowed_targets = MAY_ASSIGN.get(name, {"__all__"})
    for statement in tree.body[1:]:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        targets = [target.id for target in getattr(statement, "targets", [])
                   if isinstance(target, ast.Name)]
        assert isinstance(statement, ast.Assign) and targets and \
            set(targets) <= allowed_targets, (
                f"orchestrator/{name}.py:{statement.lineno} is not an import or __all__: "
                f"{ast.unparse(statement)[:80]!r}; implementation belongs in a subpackage "
                "(core, engine, flows, ...), which this module re-exports")
