"""Secrets for flows.

    from orchestrator.tasks.secrets import EnvVarSecret, PrefectSecret
    password = PrefectSecret("DB_PASSWORD")     # in a flow: a task (also: SecretTask)
    workers = EnvVarSecret("WORKERS", cast=int, raise_if_missing=True)
    Secret("DB_PASSWORD").get()                 # in plain code

Where the value comes from:
- the run context's `secrets`, when it has the name (as in Prefect 1:
  `flow.run(context={"secrets": {"DB_PASSWORD": "..."}})`, handy in tests);
- local secrets, when `[flows] use_local_secrets = true` or, by default, in
  `flow.run()`: the `[local_secrets]` table of config.toml, or the
  environment variable `ORCHESTRATOR__LOCAL_SECRETS__NAME`;
- otherwise (runs started from the store) the store, where
  `orchestrator secret set NAME` put it.

EnvVarSecret reads an environment variable of the run's process instead.
A value once read is hidden as ******** in every log line the run stores,
and the results of secret tasks are never checkpointed.
"""

import os

from ..config import load_config
from ..core.context import context
from ..core.task import Task
from ..engine import run_logging
from ..exceptions import InputError, OrchestratorError, SecretNotFound, TaskDefinitionError

__all__ = ["Secret", "SecretBase", "SecretTask", "PrefectSecret", "EnvVarSecret",
           "revealed_values"]

# Secret values read in this process (to hide them from logs): the run
# logging's one registry of values to hide.
revealed_values = run_logging.redacted_values


class Secret:
    """A named secret; `.get()` returns its value."""

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise OrchestratorError(f"Secret name {name!r} must be a non-empty string")
        self.name = name

    def __repr__(self):
        return f"<Secret: {self.name}>"

    def get(self):
        given = context.get("secrets") or {}
        if self.name in given:
            value = given[self.name]
        else:
            config = load_config()
            use_local = config["flows"].get("use_local_secrets")
            if use_local is None:
                use_local = not context.get("running_with_backend", False)
            value = self._local(config) if use_local else self._stored()
        _reveal(value)
        return value

    def _local(self, config):
        local = config.get("local_secrets", {})
        for key in (self.name, self.name.lower()):
            if key in local:
                return str(local[key])
        raise SecretNotFound(
            f"No local secret {self.name!r}: add it to [local_secrets] in config.toml or "
            f"set ORCHESTRATOR__LOCAL_SECRETS__{self.name.upper()}; to read secrets from "
            "the store instead, set [flows] use_local_secrets = false")

    def _stored(self):
        from .. import service
        from ..exceptions import NotFound

        store = service.open_store()
        try:
            return service.get_secret(store, self.name)
        except NotFound as exc:
            advised = exc.advised(f"Set it with: orchestrator secret set {self.name}")
            raise SecretNotFound(str(advised)) from None
        finally:
            store.close()


def _reveal(value):
    """Remember a secret value read in this process, to hide it from log lines."""
    if value is not None:
        run_logging.add_redaction(value)


class SecretBase(Task):
    """Base class of tasks that fetch a secret: their results are never
    checkpointed, and they take no `result=`. Subclass it and define `run`
    for another source of secrets."""

    def __init__(self, **kwargs):
        if kwargs.get("result") is not None:
            raise TaskDefinitionError(
                f"{type(self).__name__} {kwargs.get('name')!r}: result= cannot be set on a "
                "secret task (its value is never written anywhere); remove result=")
        kwargs["checkpoint"] = False
        super().__init__(**kwargs)


class SecretTask(SecretBase):
    """A task returning the value of secret `name` (Prefect 1's PrefectSecret)."""

    def __init__(self, name=None, **kwargs):
        self.secret_name = name
        kwargs.setdefault("name", name or type(self).__name__)
        super().__init__(**kwargs)

    def run(self, name=None):
        name = name or self.secret_name
        if not name:
            raise InputError(f"{type(self).__name__} needs a secret name: "
                             f"{type(self).__name__}('NAME'), or name=... when calling it")
        return Secret(name).get()


PrefectSecret = SecretTask


class EnvVarSecret(SecretTask):
    """A task returning environment variable `name` of the run's process, passed
    through `cast` (e.g. int) when given; None when it is not set, unless
    `raise_if_missing=True` makes that an error."""

    def __init__(self, name=None, cast=None, raise_if_missing=False, **kwargs):
        if cast is not None and not callable(cast):
            raise TaskDefinitionError(f"EnvVarSecret {name!r}: cast={cast!r} is not callable; "
                                      "pass a function such as int, float or json.loads")
        self.cast = cast
        self.raise_if_missing = raise_if_missing
        super().__init__(name=name, **kwargs)

    def run(self, name=None):
        name = name if name is not None else self.secret_name
        if not name:
            raise InputError("EnvVarSecret needs the name of an environment variable: "
                             "EnvVarSecret('NAME'), or name=... when calling it")
        value = os.environ.get(name)
        if value is None:
            if self.raise_if_missing:
                raise InputError(
                    f"Environment variable not set: {name}. Set it where the flow runs "
                    "(for runs from the store: LocalRun(env={...}) or the agent's "
                    "environment), or drop raise_if_missing=True to get None")
            return None
        _reveal(value)
        return value if self.cast is None else self.cast(value)
