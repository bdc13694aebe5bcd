"""What Prefect 1's storage classes share: the five options its storage base
class gave every storage (Local, Module and Git take them too), the JSON
copies refs keep of them, and `_Prefect1Storage`, the base of GitHub, GitLab,
Bitbucket, S3, GCS, Azure, Webhook and Docker.

Those classes take Prefect 1.4.1's constructor arguments, so flow files
written for Prefect 1 import unchanged. A constructor never reaches a network
or a secret: a flow file that merely builds one always imports. `add_flow`
(registration) uploads or checks the flow, `get_flow` (each run) loads it.
"""

import difflib
import inspect
import json
import warnings

from ...core.labels import check_labels
from .base import Storage, StorageError, _check_registration


# Prefect 1's storage base class gave every storage five more keyword
# arguments. Flow files pass them to Local, Module and Git as much as to the
# other classes, so all of them take them, with one check.
_PREFECT1_OPTIONS = ("result", "secrets", "labels", "add_default_labels", "stored_as_script")


def _prefect1_argument_error(storage_name, unknown, accepted):
    close = difflib.get_close_matches(unknown, accepted, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return StorageError(
        f"{storage_name} storage got an unexpected argument {unknown!r}.{hint} It takes: "
        f"{', '.join(accepted)}")


def _storage_options(storage_name, options, accepted, stored_as_script=False, stacklevel=3):
    """`options` (keyword arguments beyond the storage's own, whose names are
    `accepted`) checked against Prefect 1's five, returned by name with
    Prefect 1's defaults. `stacklevel` counts frames up from this function as
    `warnings.warn` does, so a warning about labels points at the line that
    made the storage (3: the caller of the constructor that calls this)."""
    for name in options:
        if name not in _PREFECT1_OPTIONS:
            raise _prefect1_argument_error(
                storage_name, name,
                list(accepted) + [n for n in _PREFECT1_OPTIONS if n not in accepted])
    secrets = options.get("secrets")
    if secrets is None:
        secrets = []
    elif isinstance(secrets, str):
        secrets = [secrets]
    return {
        "result": options.get("result"),
        "secrets": list(secrets),
        "labels": check_labels(options.get("labels"), storage_name, StorageError,
                               stacklevel=stacklevel + 1),
        "add_default_labels": options.get("add_default_labels"),
        "stored_as_script": bool(options.get("stored_as_script", stored_as_script)),
    }


def _warn_ignored_options(storage, flow, stacklevel=2):
    """Say, when a flow is added, that `secrets` and `result` given to its storage
    are kept but not acted on here, and what to do instead."""
    storage_name = type(storage).__name__
    if storage.secrets:
        warnings.warn(
            f"{storage_name} storage secrets={storage.secrets!r}: these are not put into "
            "the run context here (Prefect 1 filled context.secrets with them); read "
            f"each in a task with SecretTask({storage.secrets[0]!r}) or "
            f"Secret({storage.secrets[0]!r}).get() from orchestrator.tasks.secrets",
            UserWarning, stacklevel=stacklevel + 1)
    if storage.result is not None:
        warnings.warn(
            f"{storage_name} storage result={storage.result!r} is not kept with the flow; "
            f"give it to the flow instead: Flow({flow.name!r}, result=...)",
            UserWarning, stacklevel=stacklevel + 1)


def _options_ref(storage):
    """The options of Local, Module and Git that their refs keep: only those
    given, so a ref made before these options existed keeps its exact shape
    (and a registered flow its version)."""
    ref = {}
    if storage.secrets:
        ref["secrets"] = _json_copy(storage.secrets, type(storage).__name__, "secrets")
    if storage._labels:
        ref["labels"] = list(storage._labels)
    return ref


def _options_from_ref(ref):
    """The options `_options_ref` kept, as keyword arguments again."""
    return {"secrets": ref.get("secrets"), "labels": ref.get("labels")}


def _json_copy(value, storage_name, field):
    """`value` as the JSON that a ref keeps, or a StorageError naming the field."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise StorageError(
            f"{storage_name} storage {field}={value!r} cannot be stored with the flow "
            f"({exc}); give strings, numbers, booleans, lists and dicts only"
        ) from None


def _masked(value):
    """A dict's keys with its values hidden (they are often tokens), for reprs."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: ..." for k in value) + "}"
    return repr(value)


class _Prefect1Storage(Storage):
    """What Prefect 1's storage classes share: the options every one of them
    takes (`result`, `secrets`, `labels`, `add_default_labels`,
    `stored_as_script`), `flows` (flow name -> where that flow is kept), and a
    ref made of the constructor's arguments (`_fields`)."""

    _fields = ()        # constructor arguments kept in the ref, in signature order
    _repr_fields = ()   # the few that identify the storage in its repr

    def _set_options(self, options, stored_as_script=False):
        accepted = [n for n in inspect.signature(type(self).__init__).parameters
                    if n not in ("self", "kwargs")]
        values = _storage_options(type(self).__name__, options, accepted, stored_as_script,
                                  stacklevel=4)
        self.result = values["result"]
        self.secrets = values["secrets"]
        self._labels = values["labels"]
        # None means "the default", as in Prefect 1; these classes add no labels anyway.
        self.add_default_labels = values["add_default_labels"]
        self.stored_as_script = values["stored_as_script"]
        self.flows = {}    # flow name -> where it is kept (a key, a path)
        self._flows = {}   # flow name -> the Flow object added in this process

    def __repr__(self):
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr_fields)
        return f"{type(self).__name__}({shown})"

    def build(self):
        """Prefect 1 uploaded flows here; `add_flow` already has. Returns the storage."""
        return self

    def _check_add(self, flow, project, version):
        """The checks and notices of every `add_flow`: `project` and `version` may
        be left out, as Prefect 1's `add_flow(flow)` had neither."""
        _check_registration(flow, project, version, optional=True)
        _warn_ignored_options(self, flow, stacklevel=3)

    def _entry(self, flow_name, fallback=None):
        """Where flow `flow_name` is kept (the only flow when it is None), or the
        `fallback` location, or a StorageError listing the flows held."""
        if flow_name is None and len(self.flows) == 1:
            flow_name = next(iter(self.flows))
        if flow_name in self.flows:
            return flow_name, self.flows[flow_name]
        if fallback is not None:
            return flow_name, fallback
        held = ", ".join(map(repr, sorted(self.flows))) or "none"
        raise StorageError(
            f"{type(self).__name__} storage has no flow named {flow_name!r} (it holds: "
            f"{held}); register the flow first"
        )

    def _ref_extras(self):
        """More of the ref than the constructor's arguments (a subclass's own)."""
        return {}

    def to_ref(self):
        storage_name = type(self).__name__
        ref = {"type": storage_name}
        for name in self._fields:
            ref[name] = _json_copy(getattr(self, name), storage_name, name)
        ref.update({
            "secrets": _json_copy(self.secrets, storage_name, "secrets"),
            "labels": list(self._labels),
            "add_default_labels": self.add_default_labels,
            "stored_as_script": self.stored_as_script,
            "flows": dict(self.flows),
        })
        ref.update(self._ref_extras())
        return ref

    @classmethod
    def _from_ref(cls, ref):
        arguments = {name: ref[name] for name in cls._fields if name in ref}
        storage = cls(**arguments, secrets=ref.get("secrets"), labels=ref.get("labels"),
                      add_default_labels=ref.get("add_default_labels"),
                      stored_as_script=ref.get("stored_as_script", False))
        flows = ref.get("flows", {})
        if not isinstance(flows, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in flows.items()):
            raise TypeError("'flows' must map flow names to locations (strings)")
        storage.flows = dict(flows)
        storage._restore_extras(ref)
        return storage

    def _restore_extras(self, ref):
        """Set what `_ref_extras` added from `ref` (a subclass's own)."""
