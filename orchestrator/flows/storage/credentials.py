"""Credentials a storage reads when it stores or loads a flow, never when it is
made: secrets (read as a run reads them), Prefect 1's fallbacks to local
secrets and environment variables, and HTTP basic authentication."""

import base64
import os

from ...exceptions import OrchestratorError
from .base import StorageError


def _secret_value(name, what, missing=None):
    """The value of secret `name`, read as a run from the store reads it.

    Prefect 1 loaded flows with `running_with_backend` set, so its secrets came
    from the backend unless `use_local_secrets` said otherwise; here that means
    the store, unless `[flows] use_local_secrets = true`.
    """
    from ...core import ports
    from ...core.context import context
    from ...exceptions import SecretNotFound

    with context(running_with_backend=True):
        try:
            return ports.call("read_secret", name)
        except SecretNotFound as exc:
            raise StorageError(missing or (
                f"{what}: secret {name!r} is not set ({exc}); set it with "
                f"`orchestrator secret set {name}`")) from None
        except OrchestratorError as exc:
            raise StorageError(f"{what}: cannot read secret {name!r}: {exc}") from None


def _default_secret(name):
    """The value Prefect 1 fell back on when no secret was named: the local
    secret `name` (`[local_secrets]` in config.toml), else the environment variable."""
    from ...config import load_config

    local = load_config().get("local_secrets", {}) or {}
    for key in (name, name.lower()):
        if key in local:
            return str(local[key])
    return os.environ.get(name) or None


def _basic_auth(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Authorization: Basic {token}"
