"""Use cases: the one door through which the CLI, the REST API, the library's
tasks and `Flow.register` reach the store.

Every function takes the store first (`open_store()` gives one) and returns
plain values: store records, which `orchestrator.service.documents` renders as
the JSON documents every edge shows. Errors are OrchestratorError subclasses
from `orchestrator.exceptions` (NotFound, Conflict, InputError, ...) with
messages meant for the user; the edges add their own advice (a command to run,
an endpoint to call). What users give (names, labels, parameters, keys) is
checked here with `orchestrator.core.validation`, before anything is stored, so
every edge refuses the same inputs with the same messages.

    flows.py     projects, registering flows, loading them, pausing schedules
    runs.py      creating, cancelling, renaming and reading runs and their logs
    limits.py    concurrency limits        secrets.py   secrets
    agents.py    agents and the runs they hold
    explain.py   why a run has not started
    execution.py executing a run from the store (`orchestrator execute`)
    documents.py flows, runs, task runs, log lines, ... as JSON documents
"""

from .agents import agents
from .database import open_store, open_store_ahead
from .explain import explain_flow_run
from .flows import (create_project, flow_run_summary, get_flow, get_project, list_flows,
                    load_flow, parameter_specs, register_flow, register_from_ref,
                    set_schedule_active)
from .limits import (LIMIT_KINDS, concurrency_limit, concurrency_limits,
                     delete_concurrency_limit, set_concurrency_limit)
from .runs import (artifacts, cancel_flow_run, check_run_parameters, claim_run_here,
                   create_flow_run, create_flow_run_here, get_flow_run, list_flow_runs, logs,
                   rename_flow_run, state_history, task_runs)
from .secrets import delete_secret, get_secret, secret_names, set_secret

__all__ = [
    "open_store", "open_store_ahead", "create_project", "get_project", "register_flow",
    "register_from_ref",
    "load_flow", "parameter_specs", "list_flows", "get_flow", "flow_run_summary",
    "set_schedule_active", "create_flow_run", "check_run_parameters", "cancel_flow_run",
    "rename_flow_run", "claim_run_here", "create_flow_run_here", "get_flow_run",
    "list_flow_runs", "task_runs", "state_history", "artifacts", "logs", "LIMIT_KINDS",
    "concurrency_limits", "concurrency_limit", "set_concurrency_limit",
    "delete_concurrency_limit", "set_secret", "get_secret", "secret_names", "delete_secret",
    "agents", "explain_flow_run",
]
