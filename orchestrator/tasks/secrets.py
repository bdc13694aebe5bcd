"""Secrets for flows.

    from orchestrator.tasks.secrets import SecretTask
    password = SecretTask("DB_PASSWORD")        # in a flow: a task
    Secret("DB_PASSWORD").get()                 # in plain code

Where the value comes from:
- local secrets, when `[flows] use_local_secrets = true` or, by default, in
  `flow.run()`: the `[local_secrets]` table of config.toml, or the
  environment variable `ORCHESTRATOR__LOCAL_SECRETS__NAME`;
- otherwise (runs started from the store) the store, where
  `orchestrator secret set NAME` put it.

A value once read is hidden as ******** in every log line the run stores,
and SecretTask results are never checkpointed.
"""

import threading

from ..config import load_config
from ..core.context import context
from ..core.task import Task
from ..engine import run_logging
from ..exceptions import OrchestratorError

__all__ = ["Secret", "SecretTask", "PrefectSecret", "revealed_values"]

_revealed = frozenset()
_lock = threading.Lock()


def revealed_values():
    """Secret values read in this process (to hide them from logs)."""
    return _revealed  # replaced, never changed in place: safe to read unlocked


class SecretNotFound(OrchestratorError, LookupError):
    """No secret with that name where this run looks for secrets."""


class Secret:
    """A named secret; `.get()` returns its value."""

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise OrchestratorError(f"Secret name {name!r} must be a non-empty string")
        self.name = name

    def __repr__(self):
        return f"<Secret: {self.name}>"

    def get(self):
        config = load_config()
        use_local = config["flows"].get("use_local_secrets")
        if use_local is None:
            use_local = not context.get("running_with_backend", False)
        value = self._local(config) if use_local else self._stored()
        global _revealed
        with _lock:
            _revealed = _revealed | {value}
        run_logging.add_redaction(value)
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
        from ..store import NotFound, Store

        store = Store.open()
        try:
            return store.get_secret(self.name)
        except NotFound as exc:
            raise SecretNotFound(str(exc)) from None
        finally:
            store.close()


class SecretTask(Task):
    """A task returning the value of secret `name` (never checkpointed)."""

    def __init__(self, name=None, **kwargs):
        self.secret_name = name
        kwargs.setdefault("name", name or "SecretTask")
        kwargs["checkpoint"] = False
        super().__init__(**kwargs)

    def run(self, name=None):
        name = name or self.secret_name
        if not name:
            raise OrchestratorError("SecretTask needs a secret name: SecretTask('NAME')")
        return Secret(name).get()


PrefectSecret = SecretTask
