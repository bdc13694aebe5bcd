"""The name table: every Prefect 1 (1.4.1) name users import, and where it lives here.

`orchestrator migrate` rewrites imports with it, the import switch
(`[compat] prefect_imports = true`, see orchestrator.prefect1.imports) serves
`import prefect` from it, and the README's "Coming from Prefect 1" table is
made from it (`readme_rows()`), so the three always agree.

    from orchestrator.prefect1.names import resolve
    resolve("prefect.engine.state.Success").target   # 'orchestrator.states.Success'
    resolve("prefect.Client").reason                 # why not, and what to do instead

Three tables:

- `MODULES`: each Prefect 1 module users import, and the orchestrator module
  that holds its names (what `import prefect.engine.state as st` becomes);
- `NAMES`: each supported Prefect 1 name (at every path Prefect 1 exports it
  from), and its orchestrator name: `module.attribute`, the module being
  everything before the last dot;
- `UNSUPPORTED`: names and whole modules we do not provide, each with why and
  what to do instead. A module entry covers every name under it.

A name in none of them is unknown: not a public Prefect 1.4.1 name (a typo, or
an internal detail of Prefect).
"""

__all__ = ["MODULES", "NAMES", "UNSUPPORTED", "CONFIG_ENV", "CONFIG_ENV_PREFIXES",
           "README_SECTION", "Resolution", "resolve", "resolve_env_name",
           "unsupported_message", "readme_rows"]

README_SECTION = '"Coming from Prefect 1" in the README'

MODULES = {}
NAMES = {}
UNSUPPORTED = {}
_WHOLE_MODULES = set()  # the keys of UNSUPPORTED that are modules, not single names


def _same(prefect_module, orchestrator_module, names):
    """Map `prefect_module` to `orchestrator_module`, and each of `names` to the
    attribute of the same name there."""
    MODULES[prefect_module] = orchestrator_module
    for name in names.split():
        NAMES[f"{prefect_module}.{name}"] = f"{orchestrator_module}.{name}"


def _names(prefect_module, orchestrator_module, pairs):
    """Map `prefect_module` to `orchestrator_module`, and each name to a target
    given in full ({prefect name: orchestrator dotted path})."""
    MODULES[prefect_module] = orchestrator_module
    for name, target in pairs.items():
        NAMES[f"{prefect_module}.{name}"] = target


def _unsupported(prefect_module, names, reason):
    """Names of `prefect_module` that orchestrator does not provide, and why."""
    for name in names.split():
        UNSUPPORTED[f"{prefect_module}.{name}"] = reason


def _unsupported_module(prefect_module, reason):
    """A whole Prefect 1 module (and everything under it) that orchestrator does not
    provide, and why."""
    UNSUPPORTED[prefect_module] = reason
    _WHOLE_MODULES.add(prefect_module)


# -- reasons shared by several names ----------------------------------------------
_INTERNAL = ("an internal part of Prefect 1 that flows do not need; the flow works "
             "without it (remove the import)")
_CLOUD = ("talks to Prefect Cloud/Server, which orchestrator replaces: runs, logs and "
          "flows are in orchestrator's own store; use `orchestrator.Client` (REST: "
          "create_flow_run, get_flow_run, get_task_runs, list_flows) or the "
          "orchestrator command")
_SERIALIZATION = ("Prefect 1's marshmallow schemas for the Cloud/Server API; orchestrator "
                  "stores flows with `flow.register()` and needs no schemas")
_OBJECT_STORE_RESULT = ("a result class for {store} is not built in; runs from the store "
                        "checkpoint there with `[results] location = \"{scheme}://bucket/"
                        "prefix\"` in config.toml, or write to {store} yourself in the task")
_RRULE = ("rrule schedules are not supported; use CronSchedule/CronClock (a cron "
          "expression), IntervalClock or DatesClock, or several clocks in one Schedule")
_SCHEDULE_FILTERS = ("schedule filters and adjustments are not supported; express the "
                     "times in the clock instead (a cron expression can name weekdays, "
                     "hours and days of the month: CronClock('0 6 * * 1-5')), or use "
                     "several clocks")
_VIEWS = ("Prefect Cloud/Server's views of flows and runs; use `orchestrator.Client()` "
          "(get_flow_run, get_task_runs, get_logs, list_flows) or `orchestrator show RUN`")
_KV_STORE = ("Prefect Cloud's key-value store; keep small values in a secret "
             "(`orchestrator secret set NAME`, read with SecretTask) or a file")


# -- prefect (the package root) ------------------------------------------------------
_same("prefect", "orchestrator",
      "Flow Task Parameter task case unmapped mapped flatten context apply_map "
      "resource_manager tags")
_unsupported("prefect", "Client", "Prefect 1's GraphQL client for Cloud/Server; "
             "use `orchestrator.Client()` (REST): create_flow_run(flow, parameters=...), "
             "get_flow_run, wait_for_flow_run, cancel_flow_run, set_flow_run_name")
_unsupported("prefect", "config", "Prefect 1's configuration object; settings live in "
             "$ORCHESTRATOR_HOME/config.toml and ORCHESTRATOR__SECTION__KEY variables, "
             "read with `orchestrator.config.load_config()`")
_unsupported("prefect", "api models plugins", "Prefect 1's plugin registry for "
             "Prefect Cloud; remove the import")
_unsupported("prefect", "__version__", "this is Prefect's version; orchestrator's is "
             "`orchestrator.__version__` (a different numbering)")

# -- prefect.core ------------------------------------------------------------------
_same("prefect.core", "orchestrator", "Edge Flow Parameter Task")
_same("prefect.core.edge", "orchestrator", "Edge")
_unsupported("prefect.core.edge", "is_valid_identifier", _INTERNAL)
_same("prefect.core.flow", "orchestrator", "Flow")
_unsupported("prefect.core.flow", "ParameterDetails cache", _INTERNAL)
_same("prefect.core.parameter", "orchestrator", "Parameter DateTimeParameter")
_unsupported("prefect.core.parameter", "no_default", "Prefect 1's marker for a "
             "Parameter without a default; leave `default=` out instead")
_same("prefect.core.task", "orchestrator", "Task")
_unsupported("prefect.core.task", "NoDefault TaskMetaclass instance_property", _INTERNAL)

# -- prefect.engine ----------------------------------------------------------------
_same("prefect.engine", "orchestrator", "FlowRunner TaskRunner")
_same("prefect.engine.flow_runner", "orchestrator", "FlowRunner")
_unsupported("prefect.engine.flow_runner", "FlowRunnerInitializeResult run_task",
             _INTERNAL)
_same("prefect.engine.task_runner", "orchestrator", "TaskRunner")
_unsupported("prefect.engine.task_runner", "TaskRunnerInitializeResult", _INTERNAL)
_names("prefect.engine.runner", "orchestrator", {"ENDRUN": "orchestrator.signals.ENDRUN"})
_unsupported("prefect.engine.runner", "Runner call_state_handlers", _INTERNAL)
_same("prefect.engine.state", "orchestrator.states",
      "State Pending Scheduled Paused Submitted Queued Retrying Running Cancelling "
      "Finished Looped Success Cached Mapped Cancelled Failed TimedOut TriggerFailed "
      "ValidationFailed Skipped Resume")
_unsupported("prefect.engine.state", "NoResult", "Prefect 1's marker for \"no result\"; "
             "a task's result here is its return value (None when it returns nothing)")
_unsupported("prefect.engine.state", "ClientFailed", "a state Prefect 1 gives when its "
             "Cloud client fails; orchestrator never produces it (test for Failed)")
_same("prefect.engine.signals", "orchestrator.signals",
      "ENDRUN FAIL LOOP PAUSE RETRY SKIP SUCCESS TRIGGERFAIL VALIDATIONFAIL "
      "PrefectStateSignal signal_from_state")
_names("prefect.engine.signals", "orchestrator.signals",
       {"PrefectSignal": "orchestrator.signals.Signal"})
_same("prefect.engine.result", "orchestrator.results", "Result")
_same("prefect.engine.result.base", "orchestrator.results", "Result")
for _module in ("prefect.engine.result", "prefect.engine.result.base"):
    _unsupported(_module, "NoResult NoResultType", "Prefect 1's marker for \"no result\"; "
                 "a task's result here is its return value (None when it returns nothing)")
_unsupported("prefect.engine.result.base", "ResultNotImplementedError", _INTERNAL)
_same("prefect.engine.results", "orchestrator.results", "LocalResult")
_same("prefect.engine.results.local_result", "orchestrator.results", "LocalResult")
for _name, _module, _store, _scheme in (
        ("S3Result", "s3_result", "S3", "s3"),
        ("GCSResult", "gcs_result", "Google Cloud Storage", "gcs"),
        ("AzureResult", "azure_result", "Azure Blob Storage", "az")):
    _unsupported("prefect.engine.results", _name,
                 _OBJECT_STORE_RESULT.format(store=_store, scheme=_scheme))
    _unsupported_module(f"prefect.engine.results.{_module}",
                        _OBJECT_STORE_RESULT.format(store=_store, scheme=_scheme))
_PREFECT_RESULT = ("PrefectResult keeps a result in Prefect Cloud's database; use "
                   "LocalResult(serializer=JSONSerializer()) instead")
_unsupported("prefect.engine.results", "PrefectResult", _PREFECT_RESULT)
_unsupported_module("prefect.engine.results.prefect_result", _PREFECT_RESULT)
_unsupported("prefect.engine.results", "ConstantResult SecretResult", _INTERNAL)
_unsupported_module("prefect.engine.results.constant_result", _INTERNAL)
_unsupported_module("prefect.engine.results.secret_result", _INTERNAL)
_same("prefect.engine.serializers", "orchestrator.serializers",
      "Serializer PickleSerializer JSONSerializer")
_unsupported("prefect.engine.serializers",
             "DateTimeSerializer PandasSerializer CompressedSerializer",
             "only PickleSerializer (cloudpickle) and JSONSerializer are provided; "
             "subclass orchestrator.serializers.Serializer (serialize/deserialize) "
             "for another format")
_same("prefect.engine.cache_validators", "orchestrator.cache_validators",
      "never_use duration_only all_inputs all_parameters partial_parameters_only "
      "partial_inputs_only")
for _module in ("prefect.engine.executors", "prefect.executors"):
    _same(_module, "orchestrator.executors",
          "Executor LocalExecutor LocalDaskExecutor DaskExecutor")
_same("prefect.engine.executors.dask", "orchestrator.executors",
      "DaskExecutor LocalDaskExecutor")
_same("prefect.engine.executors.local", "orchestrator.executors", "LocalExecutor")
_unsupported_module("prefect.engine.cloud", "Prefect Cloud's flow and task runners; runs "
                    "from the store use orchestrator's own (`orchestrator execute`, "
                    "`orchestrator up`)")

# -- prefect.executors ---------------------------------------------------------------
_same("prefect.executors.base", "orchestrator.executors", "Executor")
_same("prefect.executors.local", "orchestrator.executors", "LocalExecutor")
_same("prefect.executors.dask", "orchestrator.executors", "DaskExecutor LocalDaskExecutor")
_unsupported("prefect.executors.dask", "PrefectCallback", _INTERNAL)

# -- prefect.triggers ------------------------------------------------------------------
_same("prefect.triggers", "orchestrator.triggers",
      "all_finished manual_only always_run all_successful all_failed any_successful "
      "any_failed some_failed some_successful not_all_skipped")

# -- prefect.exceptions ----------------------------------------------------------------
_names("prefect.exceptions", "orchestrator", {
    "PrefectSignal": "orchestrator.signals.Signal",
    "PrefectException": "orchestrator.OrchestratorError",
    "FlowStorageError": "orchestrator.storage.StorageError",
})
_unsupported("prefect.exceptions", "ClientError ObjectNotFoundError AuthorizationError",
             "errors of Prefect 1's Cloud client; `orchestrator.Client` raises "
             "orchestrator.client.ClientError")
_unsupported("prefect.exceptions", "TaskTimeoutSignal VersionLockMismatchSignal",
             _INTERNAL + "; a task past its timeout ends TimedOut")

# -- prefect.utilities -----------------------------------------------------------------
MODULES["prefect.utilities"] = "orchestrator"
_same("prefect.utilities.edges", "orchestrator", "mapped unmapped flatten")
_unsupported("prefect.utilities.edges", "EdgeAnnotation", _INTERNAL)
_same("prefect.utilities.tasks", "orchestrator",
      "task tags apply_map as_task pause_task defaults_from_attrs")
_same("prefect.utilities.context", "orchestrator", "Context context")
_same("prefect.utilities.logging", "orchestrator", "get_logger")
_unsupported("prefect.utilities.logging",
             "getlogsize LogManager CloudHandler configure_logging "
             "temporary_logger_config LOG_MANAGER RedirectToLog create_diagnostic_logger",
             "Prefect 1's logging set-up; orchestrator sets up logging itself: "
             "use get_logger() and [logging] in config.toml")
_unsupported("prefect.utilities.logging", "configure_extra_loggers",
             "set `extra_loggers = [\"name\"]` under [logging] in "
             "$ORCHESTRATOR_HOME/config.toml")
_same("prefect.utilities.debug", "orchestrator", "raise_on_exception")
_unsupported("prefect.utilities.debug", "is_serializable",
             "check with `cloudpickle.dumps(obj)`; registering a flow says which task "
             "cannot be pickled")
for _module in ("prefect.utilities.notifications",
                "prefect.utilities.notifications.notifications"):
    _same(_module, "orchestrator.notifications",
          "slack_notifier gmail_notifier callback_factory slack_message_formatter")
    _unsupported(_module, "snowflake_logger snowflake_message_formatter",
                 "write a state handler that inserts into Snowflake with "
                 "snowflake-connector-python")
_unsupported("prefect.utilities.notifications", "jira_notifier",
             "write a state handler that calls Jira's API (e.g. the `jira` package)")
_unsupported_module("prefect.utilities.notifications.jira_notification",
                    "write a state handler that calls Jira's API (e.g. the `jira` package)")
for _module, _reason in {
    "agent": "helpers of Prefect 1's agents; the agent is `orchestrator agent` or "
             "`orchestrator up`",
    "aws": "Prefect 1's boto3 helpers; create the boto3 client in your task",
    "backend": "Prefect 1's backend switch (cloud/server); there is one backend here, "
               "the store under $ORCHESTRATOR_HOME",
    "cli": _INTERNAL,
    "collections": "Prefect 1's internal collection helpers (DotDict, merge_dicts, ...); "
                   "use a dict, or a helper of your own",
    "compatibility": _INTERNAL,
    "configuration": "set_temporary_config changes Prefect 1's config; pass settings "
                     "as arguments, or set ORCHESTRATOR__SECTION__KEY in the environment",
    "datetimes": _INTERNAL,
    "diagnostics": "Prefect 1's diagnostics for support requests; `orchestrator config` "
                   "prints every setting and where it came from",
    "executors": _INTERNAL + "; timeouts and heartbeats are built in (@task(timeout=...))",
    "filesystems": _INTERNAL,
    "gcp": "Prefect 1's Google Cloud helpers; create the client in your task",
    "git": _INTERNAL,
    "graphql": _CLOUD,
    "importtools": _INTERNAL,
    "kubernetes": "Prefect 1's Kubernetes helpers; use the kubernetes client in your task",
    "plugins": "Prefect 1's plugin registry for Prefect Cloud; remove the import",
    "serialization": _SERIALIZATION,
    "storage": "Prefect 1's helpers for its storage classes; use orchestrator.storage "
               "(Local, Script, Module, Git, GitHub, ...)",
}.items():
    _unsupported_module(f"prefect.utilities.{_module}", _reason)

# -- prefect.tasks ---------------------------------------------------------------------
_names("prefect.tasks", "orchestrator.tasks", {"Task": "orchestrator.Task"})
MODULES["prefect.tasks.core"] = "orchestrator.tasks.core"
_same("prefect.tasks.core.function", "orchestrator.tasks.core", "FunctionTask")
_same("prefect.tasks.core.constants", "orchestrator.tasks.core", "Constant")
_same("prefect.tasks.core.collections", "orchestrator.tasks.core",
      "VarArgsTask List Tuple Set Dict")
_same("prefect.tasks.core.operators", "orchestrator.tasks.core",
      "GetItem GetAttr Add Sub Mul Div FloorDiv Pow Mod And Or Not Equal NotEqual "
      "GreaterThanOrEqual GreaterThan LessThanOrEqual LessThan")
_same("prefect.tasks.core.resource_manager", "orchestrator",
      "resource_manager ResourceManager")
_same("prefect.tasks.control_flow", "orchestrator.tasks.control_flow",
      "FilterTask case ifelse merge switch")
_same("prefect.tasks.control_flow.case", "orchestrator.tasks.control_flow", "case")
_same("prefect.tasks.control_flow.conditional", "orchestrator.tasks.control_flow",
      "ifelse merge switch")
_same("prefect.tasks.control_flow.filter", "orchestrator.tasks.control_flow", "FilterTask")
_same("prefect.tasks.shell", "orchestrator.tasks.shell", "ShellTask")
_same("prefect.tasks.database", "orchestrator.tasks.sqlite", "SQLiteQuery SQLiteScript")
_same("prefect.tasks.database.sqlite", "orchestrator.tasks.sqlite",
      "SQLiteQuery SQLiteScript")
_same("prefect.tasks.secrets", "orchestrator.tasks.secrets",
      "SecretBase PrefectSecret EnvVarSecret")
_same("prefect.tasks.secrets.base", "orchestrator.tasks.secrets", "SecretBase PrefectSecret")
_same("prefect.tasks.secrets.env_var", "orchestrator.tasks.secrets", "EnvVarSecret")
_unsupported_module("prefect.tasks.secrets.vault_secret",
                    "HashiCorp Vault secrets are not built in; read Vault with the hvac "
                    "package in a task, or copy the value into "
                    "`orchestrator secret set NAME`")
_unsupported("prefect.tasks.secrets", "VaultSecret",
             UNSUPPORTED["prefect.tasks.secrets.vault_secret"])
_same("prefect.tasks.notifications", "orchestrator.tasks.notifications",
      "EmailTask SlackTask")
_same("prefect.tasks.notifications.email_task", "orchestrator.tasks.notifications",
      "EmailTask")
_same("prefect.tasks.notifications.slack_task", "orchestrator.tasks.notifications",
      "SlackTask")
_PUSHBULLET = ("Pushbullet is not built in; call its API (the pushbullet.py package) "
               "from a task, or use SlackTask/EmailTask")
_unsupported("prefect.tasks.notifications", "PushbulletTask", _PUSHBULLET)
_unsupported_module("prefect.tasks.notifications.pushbullet_task", _PUSHBULLET)
_same("prefect.tasks.prefect", "orchestrator.tasks.flow_runs",
      "create_flow_run wait_for_flow_run get_task_run_result StartFlowRun RenameFlowRun")
_same("prefect.tasks.prefect.flow_run", "orchestrator.tasks.flow_runs",
      "create_flow_run wait_for_flow_run get_task_run_result StartFlowRun")
_same("prefect.tasks.prefect.flow_run_rename", "orchestrator.tasks.flow_runs",
      "RenameFlowRun")
_CANCEL = ("CancelFlowRun is not provided; cancel from a task with "
           "`orchestrator.Client().cancel_flow_run(run_id)`, or `orchestrator cancel RUN`")
_unsupported("prefect.tasks.prefect", "CancelFlowRun", _CANCEL)
_unsupported_module("prefect.tasks.prefect.flow_run_cancel", _CANCEL)

# Prefect 1's integrations: each a task library around another service's SDK.
for _family, _library in {
    "airbyte": "Airbyte's HTTP API", "airtable": "pyairtable", "asana": "the asana package",
    "aws": "boto3", "azure": "the azure-* SDK packages", "azureml": "the azureml SDK",
    "census": "Census's HTTP API", "cubejs": "Cube's REST API",
    "databricks": "the databricks-sdk package or its REST API",
    "dbt": "dbt's command line (ShellTask(command=\"dbt run\"))",
    "docker": "the docker package (or ShellTask with the docker command)",
    "dremio": "pyarrow's Flight client", "dropbox": "the dropbox package",
    "exasol": "pyexasol", "files": "shutil, pathlib and zipfile",
    "firebolt": "firebolt-sdk", "fivetran": "Fivetran's HTTP API",
    "gcp": "the google-cloud-* packages", "github": "GitHub's HTTP API",
    "great_expectations": "the great_expectations package", "gsheets": "gspread",
    "hightouch": "Hightouch's HTTP API", "jira": "the jira package",
    "jupyter": "papermill", "kafka": "confluent-kafka",
    "kubernetes": "the kubernetes package", "mixpanel": "Mixpanel's HTTP API",
    "monday": "monday.com's HTTP API", "monte_carlo": "pycarlo", "mysql": "pymysql",
    "neo4j": "the neo4j driver", "postgres": "psycopg2",
    "powershell": "ShellTask(shell=\"pwsh\")",
    "prometheus": "prometheus_client (push_to_gateway)", "redis": "redis-py",
    "rss": "feedparser", "sendgrid": "the sendgrid package (or EmailTask over SMTP)",
    "sftp": "paramiko", "snowflake": "snowflake-connector-python",
    "sodaspark": "soda-spark", "sodasql": "soda-sql", "spacy": "spacy",
    "sql_server": "pyodbc", "templates": "str.format, an f-string or jinja2",
    "toloka": "toloka-kit", "transform": "Transform's HTTP API",
    "trello": "Trello's HTTP API", "twitter": "tweepy", "zendesk": "zenpy",
}.items():
    _unsupported_module(
        f"prefect.tasks.{_family}",
        f"Prefect 1's {_family} tasks are not included; call {_library} from a @task "
        "of your own")

# -- prefect.storage, prefect.run_configs ----------------------------------------------
_STORAGE = "Storage Local Module Git GitHub GitLab Bitbucket S3 GCS Azure Webhook Docker"
_same("prefect.storage", "orchestrator.storage", _STORAGE)
for _name in _STORAGE.split():
    _module = "base" if _name == "Storage" else _name.lower()
    _same(f"prefect.storage.{_module}", "orchestrator.storage", _name)
_unsupported("prefect.storage.docker", "multiline_indent", _INTERNAL)
_CODECOMMIT = ("AWS CodeCommit storage is not built in; use "
               "Git(repo=\"https://git-codecommit.REGION.amazonaws.com/v1/repos/NAME\", "
               "path=...) with git's credential helper")
_unsupported("prefect.storage", "CodeCommit", _CODECOMMIT)
_unsupported_module("prefect.storage.codecommit", _CODECOMMIT)

_RUN_CONFIGS = "RunConfig UniversalRun LocalRun DockerRun KubernetesRun ECSRun VertexRun"
_same("prefect.run_configs", "orchestrator.run_configs", _RUN_CONFIGS)
_same("prefect.run_configs.base", "orchestrator.run_configs", "RunConfig UniversalRun")
for _name in ("LocalRun", "DockerRun", "KubernetesRun", "ECSRun", "VertexRun"):
    _same(f"prefect.run_configs.{_name[:-3].lower()}", "orchestrator.run_configs", _name)

# -- prefect.schedules -------------------------------------------------------------------
for _module in ("prefect.schedules", "prefect.schedules.schedules"):
    _same(_module, "orchestrator.schedules", "Schedule IntervalSchedule CronSchedule")
    _unsupported(_module, "RRuleSchedule", _RRULE)
_same("prefect.schedules.clocks", "orchestrator.schedules",
      "Clock ClockEvent IntervalClock CronClock DatesClock")
_unsupported("prefect.schedules.clocks", "RRuleClock", _RRULE)
_unsupported_module("prefect.schedules.filters", _SCHEDULE_FILTERS)
_unsupported_module("prefect.schedules.adjustments", _SCHEDULE_FILTERS)

# -- prefect.backend, prefect.artifacts, prefect.client ----------------------------------
_ARTIFACTS = ("create_markdown_artifact create_link_artifact update_markdown_artifact "
              "update_link_artifact delete_artifact")
_same("prefect.backend", "orchestrator.artifacts", _ARTIFACTS)
_same("prefect.backend.artifacts", "orchestrator.artifacts", _ARTIFACTS)
_unsupported("prefect.backend", "FlowRunView FlowView TaskRunView TenantView", _VIEWS)
_unsupported("prefect.backend", "set_key_value get_key_value delete_key list_keys",
             _KV_STORE)
for _module, _reason in {"execution": _CLOUD, "flow": _VIEWS, "flow_run": _VIEWS,
                         "task_run": _VIEWS, "tenant": _VIEWS, "kv_store": _KV_STORE}.items():
    _unsupported_module(f"prefect.backend.{_module}", _reason)
_same("prefect.artifacts", "orchestrator.artifacts",
      _ARTIFACTS + " create_link update_link create_markdown update_markdown")
_names("prefect.artifacts", "orchestrator.artifacts",
       {"delete_artifact_new": "orchestrator.artifacts.delete_artifact"})
_names("prefect.client", "orchestrator.tasks.secrets",
       {"Secret": "orchestrator.tasks.secrets.Secret"})
_unsupported("prefect.client", "Client", UNSUPPORTED["prefect.Client"])
_same("prefect.client.secrets", "orchestrator.tasks.secrets", "Secret")
_unsupported_module("prefect.client.client", UNSUPPORTED["prefect.Client"])

# -- whole packages we do not provide ----------------------------------------------------
_unsupported_module("prefect.agent", "Prefect 1's agents; run `orchestrator agent` (or "
                    "`orchestrator up`) on the host instead")
_unsupported_module("prefect.cli", "Prefect 1's command line; use the orchestrator command "
                    "(`orchestrator register -p PROJECT FILE`, `orchestrator run FLOW`)")
_unsupported_module("prefect.serialization", _SERIALIZATION)
_unsupported_module("prefect.configuration", UNSUPPORTED["prefect.config"])
_unsupported_module("prefect.hello_world", "Prefect 1's example flow; see "
                    "data/flows/hello.py in this repository")

# `PREFECT__...` environment variables (Prefect 1's configuration) and their names here.
CONFIG_ENV = {
    "PREFECT__LOGGING__LEVEL": "ORCHESTRATOR__LOGGING__LEVEL",
    "PREFECT__LOGGING__FORMAT": "ORCHESTRATOR__LOGGING__FORMAT",
    "PREFECT__LOGGING__DATEFMT": "ORCHESTRATOR__LOGGING__DATEFMT",
    "PREFECT__LOGGING__EXTRA_LOGGERS": "ORCHESTRATOR__LOGGING__EXTRA_LOGGERS",
    "PREFECT__FLOWS__CHECKPOINTING": "ORCHESTRATOR__FLOWS__CHECKPOINTING",
    "PREFECT__CLOUD__USE_LOCAL_SECRETS": "ORCHESTRATOR__FLOWS__USE_LOCAL_SECRETS",
}
# Prefixes whose rest is kept:
# PREFECT__CONTEXT__SECRETS__DB_URL -> ORCHESTRATOR__LOCAL_SECRETS__DB_URL
CONFIG_ENV_PREFIXES = {
    "PREFECT__CONTEXT__SECRETS__": "ORCHESTRATOR__LOCAL_SECRETS__",
}


class Resolution:
    """What a Prefect 1 dotted name is here.

    `kind` is "module" (`target` is an orchestrator module, or None when its
    names live in several), "name" (`target` is `module.attribute`),
    "unsupported" (`reason` says why and what to do) or "unknown".
    `matched` is the part of the name the table knows (for `prefect.context.get`,
    "prefect.context").
    """

    __slots__ = ("name", "kind", "target", "reason", "matched")

    def __init__(self, name, kind, target=None, reason=None, matched=None):
        self.name, self.kind, self.target = name, kind, target
        self.reason, self.matched = reason, matched if matched is not None else name

    @property
    def supported(self):
        return self.kind in ("module", "name")

    def __repr__(self):
        return (f"Resolution({self.name!r}, {self.kind!r}, target={self.target!r}, "
                f"matched={self.matched!r})")


def resolve(dotted, as_module=False):
    """Resolve `dotted` (e.g. "prefect.engine.state.Success") by its longest known
    prefix: the rest of it is attributes of what that prefix names.

    With `as_module`, a path that is both a module and a name in Prefect 1
    (`prefect.tasks.control_flow.case`) is taken as the module, as `import` does.
    """
    parts = dotted.split(".")
    if parts[0] != "prefect":
        return Resolution(dotted, "unknown", reason=f"{dotted} is not a Prefect 1 name")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in UNSUPPORTED:
            return Resolution(dotted, "unsupported", reason=UNSUPPORTED[prefix],
                              matched=prefix)
        exact = end == len(parts)
        if prefix in NAMES and not (as_module and exact and prefix in MODULES):
            return Resolution(dotted, "name", NAMES[prefix], matched=prefix)
        if prefix in MODULES:
            if exact:
                return Resolution(dotted, "module", MODULES[prefix], matched=prefix)
            missing = ".".join(parts[:end + 1])
            return Resolution(
                dotted, "unknown", matched=missing,
                reason=f"{prefix} has no name {parts[end]!r} in Prefect 1.4.1 (check the "
                       "spelling; names orchestrator provides are listed in "
                       f"{README_SECTION})")
    return Resolution(dotted, "unknown",
                      reason=f"{dotted} is not a public Prefect 1.4.1 module or name")


def unsupported_message(resolution):
    """The one message for a name we do not provide, used by the import switch."""
    return (f"Prefect 1 name {resolution.matched} is not supported by orchestrator; "
            f"see {README_SECTION}: {resolution.reason}")


def resolve_env_name(name):
    """(orchestrator name or None, reason) for a `PREFECT__...` variable name."""
    if name in CONFIG_ENV:
        return CONFIG_ENV[name], None
    for prefix, ours in CONFIG_ENV_PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return ours + name[len(prefix):], None
    return None, (f"{name} sets a Prefect 1 setting orchestrator does not have; "
                  "`orchestrator config` lists the settings there are "
                  "(ORCHESTRATOR__SECTION__KEY)")


def readme_rows():
    """The rows of the README's "Coming from Prefect 1" table, one per Prefect 1
    module: its names and where they are, then the names we do not provide."""
    by_module = {}
    for name, target in NAMES.items():
        module, _, attribute = name.rpartition(".")
        by_module.setdefault(module, []).append((attribute, target))
    rows = []
    for module in sorted(set(MODULES) | set(by_module)):
        pairs = by_module.get(module)
        if not pairs:
            continue
        groups = {}
        for attribute, target in pairs:
            target_module, _, target_name = target.rpartition(".")
            groups.setdefault(target_module, []).append((attribute, target_name))
        for target_module, names in groups.items():
            left = ", ".join(f"`{a}`" for a, _ in names)
            if all(a == t for a, t in names):
                right = f"`{target_module}`: the same names"
            else:
                right = f"`{target_module}`: " + ", ".join(
                    f"`{t}`" if a == t else f"`{t}` (for `{a}`)" for a, t in names)
            rows.append(f"| `{module}`: {left} | {right} |")
    reasons = {}
    for name, reason in UNSUPPORTED.items():
        if name in _WHOLE_MODULES:
            reasons.setdefault((name, reason), [])
        else:
            module, _, attribute = name.rpartition(".")
            reasons.setdefault((module, reason), []).append(attribute)
    for (module, reason), attributes in sorted(reasons.items()):
        left = (f"`{module}`: " + ", ".join(f"`{a}`" for a in attributes) if attributes
                else f"`{module}` and everything in it")
        rows.append(f"| {left} | not provided: {reason} |")
    return rows
