"""Run configs: what a flow run needs from the agent that runs it.

    LocalRun(labels=["prod", "gpu"], env={"STAGE": "prod"}, working_dir="/srv/etl")

Labels decide which agents may pick a run up: an agent takes a run whose
labels are a subset of its own. Prefect 1 turned `labels="prod"` into four
labels ("p", "r", "o", "d"); here a string is one label, with a warning that
says to pass a list. A run config is stored as `to_ref()` (a JSON dict) and
rebuilt with `RunConfig.from_ref(ref)`.
"""

import os
from collections.abc import Mapping

from .exceptions import OrchestratorError
from .labels import check_labels
from .refs import Referable

__all__ = ["RunConfigError", "RunConfig", "LocalRun"]


class RunConfigError(OrchestratorError, ValueError):
    """A run config was given a value it cannot use; the message names it."""


def _env(env, owner):
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise RunConfigError(
            f"{owner}(env={env!r}): env must be a dict of str to str, not "
            f"{type(env).__name__}; e.g. env={{'STAGE': 'prod'}}"
        )
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise RunConfigError(
                f"{owner}: environment variable name {key!r} is not valid; names are "
                "non-empty strings without '=' such as 'STAGE'"
            )
        if not isinstance(value, str):
            raise RunConfigError(
                f"{owner}: env[{key!r}] = {value!r} is a {type(value).__name__}; "
                f"environment values must be strings: env={{{key!r}: {str(value)!r}}}"
            )
    return {key: env[key] for key in sorted(env)}


class RunConfig(Referable):
    """What a run needs from its agent: `labels`, plus a subclass's own settings.

    Subclasses define `to_ref()` and `_from_ref(ref)`; `RunConfig.from_ref`
    picks the subclass by the ref's "type".
    """

    _types = {}
    _kind = "run config"
    _error = RunConfigError
    labels = ()

    def validate(self):
        """Check what can only be checked where the run starts; raise RunConfigError."""



class LocalRun(RunConfig):
    """Run as a local process: extra environment variables and a working directory.

    `working_dir` is stored as an absolute path (relative paths are taken from
    the current directory when the config is made); it need not exist yet, and
    `validate()` checks it where the run starts.
    """

    def __init__(self, labels=None, env=None, working_dir=None):
        self.labels = check_labels(labels, "LocalRun", RunConfigError)
        self.env = _env(env, "LocalRun")
        if working_dir is not None:
            if not isinstance(working_dir, (str, os.PathLike)) or not os.fspath(working_dir):
                raise RunConfigError(
                    f"LocalRun(working_dir={working_dir!r}): working_dir must be a path "
                    "string such as '/srv/etl', or None for the agent's directory"
                )
            working_dir = os.path.abspath(os.path.expanduser(os.fspath(working_dir)))
        self.working_dir = working_dir

    def __repr__(self):
        parts = [f"labels={self.labels!r}"]
        if self.env:
            # Values are often tokens: show which variables are set, not their values.
            parts.append("env={" + ", ".join(f"{k!r}: ..." for k in self.env) + "}")
        if self.working_dir is not None:
            parts.append(f"working_dir={self.working_dir!r}")
        return f"LocalRun({', '.join(parts)})"

    def validate(self):
        if self.working_dir is None:
            return
        if not os.path.exists(self.working_dir):
            raise RunConfigError(
                f"LocalRun working_dir {self.working_dir!r} does not exist on this host; "
                "create it, or change the flow's run config"
            )
        if not os.path.isdir(self.working_dir):
            raise RunConfigError(
                f"LocalRun working_dir {self.working_dir!r} is a file, not a directory; "
                "point working_dir at a directory"
            )

    def to_ref(self):
        return {"type": "LocalRun", "labels": list(self.labels), "env": dict(self.env),
                "working_dir": self.working_dir}

    @classmethod
    def _from_ref(cls, ref):
        return cls(labels=ref.get("labels"), env=ref.get("env"),
                   working_dir=ref.get("working_dir"))
