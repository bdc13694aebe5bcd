"""The task library: Prefect 1's ready-made tasks, one module per area.

- `core`: FunctionTask, Constant, the collection tasks (List, Tuple, Set,
  Dict) and the operator tasks (Add, GetItem, Equal, ...);
- `control_flow`: FilterTask, and case / merge / ifelse / switch;
- `shell`: ShellTask;  `sqlite`: SQLiteQuery, SQLiteScript;
- `flow_runs`: create_flow_run, wait_for_flow_run, StartFlowRun,
  get_task_run_result, RenameFlowRun;
- `secrets`: PrefectSecret (SecretTask), EnvVarSecret, Secret;
- `notifications`: SlackTask, EmailTask (and the Slack and e-mail state
  handlers that `orchestrator.notifications` exports).

`defaults_from_attrs` lets a task class take run() arguments from its
constructor, as Prefect 1's `prefect.utilities.tasks.defaults_from_attrs` does.
"""

from .run_defaults import defaults_from_attrs

__all__ = ["defaults_from_attrs"]
