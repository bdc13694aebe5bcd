"""Flow storage: where a registered flow is kept, and how a run loads it back.

Registration calls `storage.add_flow(flow, project, version)` and saves
`storage.to_ref()` (a JSON dict) with the flow version; the process that runs
the flow rebuilds the storage with `Storage.from_ref(ref)` and calls
`get_flow(name)`.

    Local()                       # default: a cloudpickle under $ORCHESTRATOR_HOME/flows
    Script("flows/etl.py")        # run the file again at run time: edits take effect
    Module("mypackage.flows")     # import a module on the run's sys.path
    Git("https://host/repo.git", "flows/etl.py", ref="v1.2")  # a file in a git checkout

Local, Module and Git also take Prefect 1.4.1's arguments, with their meaning:
`Local(path="flows/etl.py", stored_as_script=True)` runs that file at every
run, `Git(repo="org/flows", flow_path="flows/etl.py", branch_name="dev")`
clones from GitHub with a token from the secrets (each class's docstring says
how a call is read when the two forms differ).

Prefect 1's other storage classes take Prefect 1.4.1's arguments: GitHub,
GitLab and Bitbucket clone through Git with a token from the secrets; S3, GCS
and Azure upload the flow through fsspec (extras s3, gcs, azure); Webhook
sends it with HTTP requests; Docker is stored but cannot run here, and says so.

Local storage only works on the host that registered the flow (the Prefect 1
FAQ's `ModuleNotFoundError` case); its errors say so and name the storage
that works elsewhere. Pickles are loaded only from inside Local storage's own
flows directory, never from a path given by anyone else, or (S3, GCS, Azure,
Webhook) when their sha256 is the one recorded when they were uploaded.

`flow_fingerprint(flow)` is a digest of what makes a flow behave as it does,
so registering an unchanged flow can keep its version.
"""

import base64
import datetime as _dt
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import textwrap
import types
import unicodedata
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import cloudpickle
import filelock

from ..version import __version__
from ..config import home_dir
from ..core.flow import Flow
from ..exceptions import OrchestratorError
from .loading import FlowFileError, flows_in, load_flows_from_file, pick_flow
from ..core.labels import check_labels
from .refs import Referable

__all__ = ["StorageError", "Storage", "Local", "Script", "Module", "Git", "GitHub", "GitLab",
           "Bitbucket", "S3", "GCS", "Azure", "Webhook", "WebhookResponse", "Docker",
           "flow_fingerprint"]

logger = logging.getLogger(__name__)


class StorageError(OrchestratorError):
    """A flow could not be stored, found or loaded; the message says how to fix it."""


def _python_version():
    return "%d.%d.%d" % sys.version_info[:3]


def _minor(version):
    return ".".join(str(version).split(".")[:2])


class Storage(Referable):
    """Where a registered flow lives. Subclasses implement the four methods.

    `add_flow` runs at registration and records what `get_flow` needs;
    `to_ref()` must describe the object completely, because `get_flow` usually
    runs on `Storage.from_ref(ref)` in another process.
    """

    _types = {}
    _kind = "storage"
    _error = StorageError
    _fix = "register the flow again"

    @property
    def labels(self):
        """Labels this storage adds to its flows (agents must have them)."""
        return []

    def add_flow(self, flow, project, version):
        """Keep `flow` (or check it can be found) at registration of `version`."""
        raise NotImplementedError

    def get_flow(self, flow_name):
        """The flow called `flow_name`, loaded now; raises StorageError."""
        raise NotImplementedError

    # Ref keys that `add_flow` fills in (where each registered flow went).
    _registration_keys = ("flows", "sha256")

    def settings_ref(self):
        """`to_ref()` without what `add_flow` records: what the storage was
        configured with, the same before and after registering, so comparing it
        tells a changed storage from the same one used again."""
        return {k: v for k, v in self.to_ref().items() if k not in self._registration_keys}



def _bind_source_flow(storage, flow, project, version, what, optional=False):
    """Registration for storage that loads flows from source (Script, Module):
    check the flow can be found there, and remember its name."""
    _check_registration(flow, project, version, optional=optional)
    if storage.flow_name is not None and storage.flow_name != flow.name:
        raise StorageError(
            f"{what} is set to flow {storage.flow_name!r} but was given flow "
            f"{flow.name!r}; use one {type(storage).__name__} storage per flow")
    storage.get_flow(flow.name)
    storage.flow_name = flow.name


def _check_registration(flow, project, version, optional=False):
    """Check add_flow's arguments; with `optional`, project and version may be
    None (Prefect 1's `add_flow(flow)` had neither)."""
    if not isinstance(flow, Flow):
        raise StorageError(
            f"add_flow needs a Flow, got {flow!r} ({type(flow).__name__}); pass the "
            "object made by `with Flow(...) as flow:`"
        )
    if (not optional or project is not None) and (
            not isinstance(project, str) or not project.strip()):
        raise StorageError(
            f"Project {project!r} for flow {flow.name!r} must be a non-empty string"
        )
    if optional and version is None:
        return
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise StorageError(
            f"Version {version!r} for flow {flow.name!r} must be a whole number >= 0"
        )


# -- what every Prefect 1 storage takes ------------------------------------------
#
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


# -- Local ---------------------------------------------------------------------

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(text):
    """`text` as one path component: no separators, no leading dot, not too long.

    A name that had to change gets a short digest of the original, so two
    names that clean up to the same text still get different directories.
    """
    safe = _UNSAFE_CHARS.sub("_", text).lstrip("._")[:80]
    if safe != text:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe}-{digest}" if safe else digest
    return safe


def _write_atomically(path, data):
    """Write `data` to `path` so readers see the old file or the new one, never half."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


class Local(Storage):
    """The flow kept on this host: pickled, or (`stored_as_script=True`) its script.

        Local()                                            # pickled under the home's flows/
        Local(directory="~/.prefect/flows")                # pickled under that directory
        Local(path="flows/etl.py", stored_as_script=True)  # the file, run at every run
        Local(path="mypkg.flows", stored_as_script=True)   # the module, imported at every run
        Local(path="/srv/flows/etl.pkl")                   # pickled to that one file

    The arguments are Prefect 1's (`directory=None, validate=True, path=None,
    stored_as_script=False`, and `labels`, `add_default_labels`, `secrets`,
    `result`). A pickle goes to `<directory>/<project>/<flow>/v<N>.pkl` with
    the Python and library versions beside it; `directory` is made absolute
    (`~` expanded) unless `validate=False`. With `path=` the pickle goes to
    that file instead and its sha256 is recorded: a file replaced since (say,
    by registering another version to the same path) is refused, never
    unpickled. With `stored_as_script=True` nothing is pickled: the .py file at
    `path` runs (or the module named by `path` is imported) at every run, so
    edits take effect; without `path`, the flow file being registered is used.

    Only the host that registered the flow can run it; that host's name is a
    default label, so only its agents pick the flow up (`add_default_labels=False`
    drops it).
    """

    def __init__(self, directory=None, validate=True, path=None, stored_as_script=False,
                 **kwargs):
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise StorageError(
                f"Local storage directory={directory!r} is not a path; pass a string or "
                "leave it out to use $ORCHESTRATOR_HOME/flows"
            )
        options = _storage_options("Local", kwargs,
                                   ("directory", "validate", "path", "stored_as_script"),
                                   stored_as_script)
        self.validate = bool(validate)
        if directory is not None:
            directory = os.fspath(directory)
            if self.validate:
                directory = os.path.abspath(os.path.expanduser(directory))
        self.directory = directory
        self.stored_as_script = options["stored_as_script"]
        if path is None and self.stored_as_script:
            path = _flow_file_being_loaded()
        self.path = _local_location(path, self.stored_as_script)
        # None is Prefect 1's "the default", which adds the host name.
        self.add_default_labels = (options["add_default_labels"] is None
                                   or bool(options["add_default_labels"]))
        self._labels = options["labels"]
        self.secrets = options["secrets"]
        self.result = options["result"]
        self.host = socket.gethostname()
        # flow name -> {"path": relative to the flows directory, "host", "python", ...},
        # {"file": a pickle at `path`, "sha256", ...} or {"script": path}
        self.flows = {}
        self._flows = {}

    def __repr__(self):
        if self.stored_as_script:
            return f"Local(path={self.path!r}, stored_as_script=True)"
        where = f"path={self.path!r}" if self.path is not None else f"directory={self.directory!r}"
        return f"Local({where}, flows={sorted(self.flows)})"

    def __contains__(self, flow_name):
        return isinstance(flow_name, str) and flow_name in self.flows

    @property
    def labels(self):
        labels = set(self._labels)
        if self.add_default_labels:
            labels.add(self.host)
        return sorted(labels)

    def flows_directory(self):
        """The directory every pickle of this storage lives in (read at call time)."""
        if self.directory is not None:
            return Path(self.directory)
        return home_dir() / "flows"

    def add_flow(self, flow, project=None, version=None):
        """Pickle the flow (or check its script defines it); returns where it is.

        `project` and `version` may be left out, as in Prefect 1's
        `add_flow(flow)`: the pickle is then named by the time, as Prefect 1 did.
        """
        _check_registration(flow, project, version, optional=True)
        _warn_ignored_options(self, flow)
        if self.stored_as_script:
            self._load_script(flow.name)  # it must be there, and define the flow
            self.flows[flow.name] = {"script": self.path}
            self._flows[flow.name] = flow
            return self.path
        data = self._pickle(flow)
        if self.path is not None:
            return self._add_pickle_file(flow, data)
        if project is None or version is None:
            now = _dt.datetime.now(_dt.timezone.utc).isoformat()
            relative = PurePosixPath(_safe_name(flow.name), f"{_slug(now)}.pkl")
        else:
            relative = PurePosixPath(_safe_name(project), _safe_name(flow.name),
                                     f"v{version}.pkl")
        path = self.flows_directory() / relative
        meta = {
            "flow_name": flow.name,
            "project": project,
            "version": version,
            "python": _python_version(),
            "cloudpickle": cloudpickle.__version__,
            "orchestrator": __version__,
            "host": socket.gethostname(),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with filelock.FileLock(str(path.parent / ".lock")):
                _write_atomically(path, data)
                _write_atomically(path.with_suffix(".json"),
                                  json.dumps(meta, indent=2).encode("utf-8"))
        except OSError as exc:
            raise StorageError(
                f"Cannot write flow {flow.name!r} to {path}: {exc}; check that the "
                "directory is writable, or set ORCHESTRATOR_HOME to one that is"
            ) from None
        self.flows[flow.name] = {
            "path": relative.as_posix(),
            "host": meta["host"],
            "python": meta["python"],
            "cloudpickle": meta["cloudpickle"],
        }
        self._flows[flow.name] = flow
        logger.debug("Stored flow %r version %s at %s", flow.name, version, path)
        return str(path)

    @staticmethod
    def _pickle(flow):
        try:
            return cloudpickle.dumps(flow)
        except Exception as exc:
            raise StorageError(
                f"Flow {flow.name!r} cannot be pickled for Local storage "
                f"({type(exc).__name__}: {exc}); create clients and connections inside "
                "tasks instead of at flow definition, or use Script, Module or Git "
                "storage, which store no pickle"
            ) from None

    def _add_pickle_file(self, flow, data):
        path = Path(self.path)
        if path.suffix == ".py":
            # Prefect 1 wrote the pickle over the file; that loses the source.
            raise StorageError(
                f"Local storage path={self.path!r} is a .py file: without "
                f"stored_as_script=True the pickled flow {flow.name!r} would be written "
                "over it. Pass stored_as_script=True to run that file at every run, or "
                f"give the pickle its own path, e.g. {str(path.with_suffix('.pkl'))!r}"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
        except OSError as exc:
            raise StorageError(
                f"Cannot write flow {flow.name!r} to {path}: {exc}; check that the "
                "directory is writable, or give another path="
            ) from None
        self.flows[flow.name] = {
            "file": str(path),
            "sha256": hashlib.sha256(data).hexdigest(),
            "host": socket.gethostname(),
            "python": _python_version(),
            "cloudpickle": cloudpickle.__version__,
        }
        self._flows[flow.name] = flow
        logger.debug("Stored flow %r at %s", flow.name, path)
        return str(path)

    def _path_of(self, flow_name):
        entry = self.flows.get(flow_name)
        if entry is None:
            held = ", ".join(map(repr, sorted(self.flows))) or "none"
            raise StorageError(
                f"Local storage has no flow named {flow_name!r} (it holds: {held}); "
                "register the flow first"
            )
        base = self.flows_directory().resolve()
        relative = PurePosixPath(entry["path"])
        path = (base / relative).resolve()
        if relative.is_absolute() or not path.is_relative_to(base) or path.suffix != ".pkl":
            raise StorageError(
                f"Refusing to load flow {flow_name!r} from {entry['path']!r}: Local storage "
                f"only loads .pkl files inside {base}; register the flow again"
            )
        return path, entry

    def _missing(self, flow_name, path, entry):
        registered_host = entry.get("host", "?")
        here = socket.gethostname()
        this_host = f" (this is host {here!r})" if here != registered_host else ""
        return StorageError(
            f"Flow {flow_name!r} was registered with Local storage on host "
            f"{registered_host!r}{this_host}; the file {path} is missing: register the "
            "flow again on this machine, or use Script or Git storage to run it elsewhere"
        )

    def get_flow(self, flow_name=None):
        if self.stored_as_script:
            return self._load_script(flow_name)
        if flow_name is None and len(self.flows) == 1:
            flow_name = next(iter(self.flows))
        entry = self.flows.get(flow_name)
        if entry is not None and "file" in entry:
            return self._load_pickle_file(flow_name, entry)
        path, entry = self._path_of(flow_name)
        if not path.is_file():
            # Checked before taking the lock, which would create the directories.
            raise self._missing(flow_name, path, entry)
        try:
            with filelock.FileLock(str(path.parent / ".lock")):
                data = path.read_bytes()
                meta_text = path.with_suffix(".json").read_text(encoding="utf-8")
        except FileNotFoundError:
            if not path.exists():
                raise self._missing(flow_name, path, entry) from None
            raise StorageError(
                f"Flow {flow_name!r} in Local storage is corrupt: its metadata file "
                f"{path.with_suffix('.json')} is missing; register the flow again"
            ) from None
        except OSError as exc:
            raise StorageError(f"Cannot read flow {flow_name!r} from {path}: {exc}") from None
        try:
            meta = json.loads(meta_text)
            expected = meta["sha256"]
        except (ValueError, KeyError, TypeError):
            raise StorageError(
                f"Flow {flow_name!r} in Local storage is corrupt: "
                f"{path.with_suffix('.json')} is not valid metadata; register the flow again"
            ) from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise StorageError(
                f"Flow {flow_name!r} in Local storage is corrupt: {path} does not match the "
                "sha256 recorded when it was registered; register the flow again"
            )
        return self._unpickle(flow_name, path, data, meta)

    def _load_pickle_file(self, flow_name, entry):
        """A flow pickled to a `path=` of the user's choosing: loaded only if it is
        the very file written at registration (its sha256 is in the ref)."""
        path = Path(entry["file"])
        expected = entry.get("sha256")
        if not expected:
            raise StorageError(
                f"Refusing to unpickle flow {flow_name!r} from {path}: no digest of it was "
                "recorded at registration, so it cannot be told from a file put there by "
                "someone else; register the flow again"
            )
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise self._missing(flow_name, path, entry) from None
        except OSError as exc:
            raise StorageError(f"Cannot read flow {flow_name!r} from {path}: {exc}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise StorageError(
                f"Refusing to unpickle flow {flow_name!r} from {path}: it is not the file "
                "written when the flow was registered (its sha256 differs), so it was "
                "replaced since, for instance by registering another version or flow to "
                "the same path. Register the flow again, or leave path= unset so each "
                "version gets its own file"
            )
        return self._unpickle(flow_name, path, data, entry)

    def _load_script(self, flow_name):
        if self.path is None:
            raise StorageError(
                "Local storage with stored_as_script=True needs path=: the flow's .py "
                "file, e.g. Local(path='flows/etl.py', stored_as_script=True), or a "
                "module, e.g. Local(path='mypkg.flows', stored_as_script=True)"
            )
        if not os.path.isabs(self.path):  # a module name: files are kept absolute
            return Module(self.path).get_flow(flow_name)
        try:
            flows = load_flows_from_file(self.path)
        except FlowFileError as exc:
            elsewhere = ""
            if not os.path.exists(self.path) and self.host != socket.gethostname():
                elsewhere = (f" (the flow was registered on host {self.host!r}, this is "
                             f"{socket.gethostname()!r}: use Script or Git storage to run "
                             "it elsewhere)")
            raise StorageError(f"Local storage (stored_as_script): {exc}{elsewhere}") from None
        return _pick(flows, flow_name, self.path, "pass the flow's name to get_flow")

    def _unpickle(self, flow_name, path, data, meta):
        return _unpickle_flow(data, flow_name, path, meta)

    def to_ref(self):
        ref = {
            "type": "Local",
            "directory": self.directory,
            "add_default_labels": self.add_default_labels,
            "host": self.host,
            "flows": {name: dict(entry) for name, entry in self.flows.items()},
        }
        # Only what was given, so refs of flows registered before keep their shape.
        if not self.validate:
            ref["validate"] = False
        if self.path is not None:
            ref["path"] = self.path
        if self.stored_as_script:
            ref["stored_as_script"] = True
        ref.update(_options_ref(self))
        return ref

    @classmethod
    def _from_ref(cls, ref):
        storage = cls(directory=ref.get("directory"), validate=ref.get("validate", True),
                      stored_as_script=ref.get("stored_as_script", False),
                      add_default_labels=ref.get("add_default_labels", True),
                      **_options_from_ref(ref))
        storage.path = ref.get("path")  # as registered: never the file being loaded now
        storage.host = ref.get("host", storage.host)
        flows = ref.get("flows", {})
        if not isinstance(flows, dict) or not all(
                isinstance(e, dict) and any(isinstance(e.get(k), str)
                                            for k in ("path", "file", "script"))
                for e in flows.values()):
            raise TypeError("'flows' must map flow names to {'path': ...}")
        storage.flows = {name: dict(entry) for name, entry in flows.items()}
        return storage


def _local_location(path, stored_as_script):
    """Local storage's `path=` as kept: a file made absolute (`~` expanded), or,
    with stored_as_script, a module name as given ('mypkg.flows'), which
    Prefect 1 took `path` for when it was not a file."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise StorageError(
            f"Local storage path={path!r} is not a path; give the flow's .py file (with "
            "stored_as_script=True) or the file to pickle the flow to"
        )
    path = os.fspath(path)
    if (stored_as_script and _MODULE_NAME.match(path) and not path.endswith(".py")
            and not os.path.isfile(path)):
        return path
    return os.path.abspath(os.path.expanduser(path))


def _unpickle_flow(data, flow_name, where, meta):
    """The Flow pickled in `data`; `meta` says where and with what it was pickled
    (host, python, cloudpickle), `where` names the copy in messages."""
    host = meta.get("host", "?")
    then_python, now_python = meta.get("python", "?"), _python_version()
    then_cp, now_cp = meta.get("cloudpickle", "?"), cloudpickle.__version__
    versions_differ = _minor(then_python) != _minor(now_python) or then_cp != now_cp
    if versions_differ:
        logger.warning(
            "Flow %r was pickled with Python %s and cloudpickle %s; loading it with "
            "Python %s and cloudpickle %s", flow_name, then_python, then_cp,
            now_python, now_cp)
    try:
        flow = cloudpickle.loads(data)
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"Flow {flow_name!r} needs module {exc.name!r}, which is not importable "
            f"here; it was registered on host {host!r} with Python {then_python}. "
            f"Install {exc.name!r} in this environment, or register the flow with "
            "Script, Git or Module storage so it is loaded from source"
        ) from None
    except Exception as exc:
        if versions_differ:
            raise StorageError(
                f"Flow {flow_name!r} could not be unpickled from {where} "
                f"({type(exc).__name__}: {exc}): it was registered with Python "
                f"{then_python} and cloudpickle {then_cp}, this process has Python "
                f"{now_python} and cloudpickle {now_cp}. Register the flow again "
                "with this environment, or use Script or Git storage"
            ) from None
        raise StorageError(
            f"Flow {flow_name!r} could not be unpickled from {where} "
            f"({type(exc).__name__}: {exc}); register the flow again"
        ) from None
    if not isinstance(flow, Flow):
        raise StorageError(
            f"{where} holds a {type(flow).__name__}, not a Flow, so it is corrupt; "
            "register the flow again"
        )
    return flow


def _pick(flows, name, where, how_to_choose):
    """The flow called `name` among `flows` (or the only one), as a StorageError if not."""
    if name is None and len(flows) > 1:
        raise StorageError(
            f"{where} defines {len(flows)} flows ({', '.join(sorted(flows))}); "
            f"{how_to_choose}"
        )
    try:
        return pick_flow(flows, name, where)
    except FlowFileError as exc:
        raise StorageError(str(exc)) from None


# -- Script --------------------------------------------------------------------

class Script(Storage):
    """A flow file executed again at every run: edits take effect, nothing is pickled."""

    def __init__(self, path, flow_name=None):
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise StorageError(
                f"Script storage path={path!r} is not a path; give the .py file that "
                "defines the flow"
            )
        self.path = os.path.abspath(os.fspath(path))
        self.flow_name = flow_name

    def __repr__(self):
        return f"Script(path={self.path!r}, flow_name={self.flow_name!r})"

    def add_flow(self, flow, project, version):
        _bind_source_flow(self, flow, project, version, f"Script storage for {self.path}")

    def get_flow(self, flow_name=None):
        name = flow_name if flow_name is not None else self.flow_name
        try:
            flows = load_flows_from_file(self.path)
        except FlowFileError as exc:
            raise StorageError(str(exc)) from None
        return _pick(flows, name, self.path,
                     "choose one with Script(path, flow_name=...)")

    def to_ref(self):
        return {"type": "Script", "path": self.path, "flow_name": self.flow_name}

    @classmethod
    def _from_ref(cls, ref):
        return cls(ref["path"], flow_name=ref.get("flow_name"))


# -- Module --------------------------------------------------------------------

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                          r"(:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?$")
# What `__name__` is in a flow file that runs as a file, not as an imported module.
_FLOW_FILE_MODULE_NAMES = ("__main__", "__orchestrator_flow_file__")


def _importable_name_of(path):
    """The dotted name under which `import` finds the file `path` (its packages
    found by their __init__.py files), or None if it does not find that file."""
    path = Path(path).resolve()
    if path.suffix != ".py":
        return None
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    name = ".".join(parts)
    if not parts or not _MODULE_NAME.match(name) or ":" in name:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # a parent package that fails to import: not this name
        return None
    if spec is None or not spec.origin or Path(spec.origin).resolve() != path:
        return None
    return name


class Module(Storage):
    """A flow defined in an importable module, imported again at every run.

        Module("mypackage.flows")              # the flow at its top level
        Module("mypackage.flows:etl_flow")     # the object at that attribute
        Module("mypackage.flows:build_flow")   # a function there, called to make the flow
        Module(__name__)                       # in the flow's own module

    The arguments are Prefect 1's (`module`, and `labels`, `add_default_labels`,
    `secrets`, `result`, `stored_as_script`), and `flow_name` picks one flow
    of several. `Module(__name__)` in a flow file given to `orchestrator
    register FILE` (where `__name__` is not the module's name) uses the dotted
    name under which the file can be imported, found from its packages'
    __init__.py files; if there is none, registering says what to write.
    """

    def __init__(self, module, flow_name=None, **kwargs):
        options = _storage_options("Module", kwargs, ("module", "flow_name"))
        if module in _FLOW_FILE_MODULE_NAMES:
            module = self._name_of_running_file(module)
        if not isinstance(module, str) or not _MODULE_NAME.match(module):
            raise StorageError(
                f"Module storage module={module!r} is not a module name; give a dotted "
                "name such as 'mypackage.flows' (or 'mypackage.flows:flow' for one object)"
            )
        self.module = module
        self.flow_name = flow_name
        self._labels = options["labels"]
        self.secrets = options["secrets"]
        self.result = options["result"]
        self.add_default_labels = options["add_default_labels"]
        self.stored_as_script = options["stored_as_script"]
        self.flows = {}    # flow name -> module, as Prefect 1 kept them
        self._flows = {}

    @staticmethod
    def _name_of_running_file(run_name):
        """The importable name of the flow file running as `run_name`, or `run_name`
        itself (refused when the flow is loaded) if it has none."""
        if run_name == "__main__":
            path = getattr(sys.modules.get("__main__"), "__file__", None)
        else:
            path = _flow_file_being_loaded()
        return (path and _importable_name_of(path)) or run_name

    def __repr__(self):
        return f"Module(module={self.module!r}, flow_name={self.flow_name!r})"

    def __contains__(self, flow_name):
        return isinstance(flow_name, str) and flow_name in self.flows

    @property
    def labels(self):
        """The labels given as `labels=`: agents must have them to run the flow."""
        return list(self._labels)

    def add_flow(self, flow, project=None, version=None):
        """Check the module defines `flow`; returns the module's name."""
        _bind_source_flow(self, flow, project, version,
                          f"Module storage for {self.module!r}", optional=True)
        _warn_ignored_options(self, flow)
        self.flows[flow.name] = self.module
        self._flows[flow.name] = flow
        return self.module

    def _import(self, name):
        if name in _FLOW_FILE_MODULE_NAMES:
            raise StorageError(
                f"Module storage got module {name!r}, the name a flow file runs under "
                "(Module(__name__) in a file run or registered as a file), and no module "
                "name imports that file; write its dotted name, e.g. "
                "Module('mypackage.flows'), with the package importable (PYTHONPATH), "
                "or use Local(path='flows/etl.py', stored_as_script=True) for the file"
            )
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if name == missing or name.startswith(missing + "."):
                raise StorageError(
                    f"Module storage cannot import {name!r} ({exc}); install the "
                    "package that provides it, or add its directory to sys.path "
                    "(PYTHONPATH) of the process that runs the flow"
                ) from None
            raise StorageError(
                f"Importing module {name!r} failed: {exc}; install {missing!r} "
                "in the environment that runs the flow"
            ) from None
        except Exception as exc:
            raise StorageError(
                f"Importing module {name!r} failed with {type(exc).__name__}: "
                f"{exc}; fix the module so importing it only defines flows"
            ) from None

    def get_flow(self, flow_name=None):
        module_name, _, attribute = self.module.partition(":")
        module = self._import(module_name)
        name = flow_name if flow_name is not None else self.flow_name
        if attribute:
            return self._flow_at(module, attribute, name)
        flows = flows_in(vars(module))
        if not flows:
            raise StorageError(
                f"Module {module_name!r} ({getattr(module, '__file__', None)}) defines no "
                "Flow at its top level; define one with `with Flow(\"name\") as flow:`"
            )
        return _pick(flows, name, f"Module {module_name!r}",
                     "choose one with Module(module, flow_name=...)")

    def _flow_at(self, module, attribute, name):
        """The flow at `attribute` of `module` ('flow' or 'flows.etl'), as Prefect 1
        found it: a callable there is called to make the flow."""
        try:
            found = functools.reduce(getattr, attribute.split("."), module)
        except AttributeError:
            raise StorageError(
                f"Module storage {self.module!r}: module {module.__name__!r} has no "
                f"attribute {attribute!r}; fix the part after ':', or drop it to find "
                "the flow by name"
            ) from None
        if callable(found) and not isinstance(found, Flow):
            try:
                found = found()
            except Exception as exc:
                raise StorageError(
                    f"Module storage {self.module!r}: calling it to make the flow failed "
                    f"with {type(exc).__name__}: {exc}"
                ) from None
        if not isinstance(found, Flow):
            raise StorageError(
                f"Module storage {self.module!r} is a {type(found).__name__}, not a Flow; "
                "point it at a Flow, or at a function that returns one"
            )
        if name is not None and found.name != name:
            raise StorageError(
                f"Module storage {self.module!r} is flow {found.name!r}, not {name!r}; "
                "point it at that flow, or drop the part after ':' to find it by name"
            )
        return found

    def to_ref(self):
        ref = {"type": "Module", "module": self.module, "flow_name": self.flow_name}
        ref.update(_options_ref(self))
        return ref

    @classmethod
    def _from_ref(cls, ref):
        return cls(ref["module"], flow_name=ref.get("flow_name"), **_options_from_ref(ref))


# -- Git -----------------------------------------------------------------------

def _git_error_line(stderr):
    """The line of git's stderr that says what went wrong.

    That is git's first `fatal:`/`error:` line (after it come generic hints
    such as "Please make sure you have the correct access rights"), else its
    last line.
    """
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else "(git printed no message)"


# Git's positional arguments in each form: Prefect 1 put the flow file first.
_GIT_PREFECT1_ORDER = ("flow_path", "repo", "repo_host", "flow_name", "git_token_secret_name",
                       "git_token_username", "git_clone_url_secret_name", "branch_name", "tag",
                       "commit", "clone_depth", "use_ssh", "format_access_token")
_GIT_OWN_ORDER = ("repo", "path", "ref", "cache_dir")
# Arguments only Prefect 1's Git has: any of them gives a call Prefect 1's meaning.
_GIT_PREFECT1_ONLY = frozenset(_GIT_PREFECT1_ORDER) - {"repo", "flow_name"}
_GIT_REF_KEYWORDS = {None: "ref", "branch": "branch_name", "tag": "tag", "commit": "commit"}
_SCP_LIKE_URL = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:")


def _looks_like_flow_file(value):
    return isinstance(value, str) and value.endswith(".py")


def _looks_like_repository(value):
    return isinstance(value, str) and (
        "://" in value or bool(_SCP_LIKE_URL.match(value)) or value.rstrip("/").endswith(".git")
        or os.path.isabs(value) or os.path.isdir(value))


def _git_order(args, given):
    """Which of Git's two positional orders `args` are in, given the keywords
    `given`: (repo, path, ...) or Prefect 1's (flow_path, repo, ...)."""
    if "repo" in given:
        return _GIT_PREFECT1_ORDER   # Git("flows/etl.py", repo="org/flows")
    if "path" in given or "flow_path" in given:
        return _GIT_OWN_ORDER        # Git("/srv/git/flows", path="flows/etl.py")
    if len(args) == 1:
        return _GIT_PREFECT1_ORDER   # Git("flows/etl.py", git_clone_url_secret_name=...)
    first, second = args[0], args[1]
    if _looks_like_flow_file(first) != _looks_like_flow_file(second):
        return _GIT_OWN_ORDER if _looks_like_flow_file(second) else _GIT_PREFECT1_ORDER
    if _looks_like_repository(first) != _looks_like_repository(second):
        return _GIT_OWN_ORDER if _looks_like_repository(first) else _GIT_PREFECT1_ORDER
    raise StorageError(
        f"Git({first!r}, {second!r}) is ambiguous: Prefect 1 reads it as "
        f"Git(flow_path={first!r}, repo={second!r}), this orchestrator as "
        f"Git(repo={first!r}, path={second!r}), and neither value looks like a .py file "
        "or a repository URL. Name them: Git(repo=..., path=...) or "
        "Git(flow_path=..., repo=...)"
    )


def _name_git_arguments(args, given):
    """Git's arguments by name: `args` (positional) named in the order their
    values say, merged with the keywords `given` (those not None)."""
    if not args:
        return dict(given)
    order = _git_order(args, given)
    if len(args) > len(order):
        form = ", ".join(order)
        raise StorageError(
            f"Git storage got {len(args)} positional arguments; in the form Git({form}) it "
            f"takes at most {len(order)}: name the others"
        )
    named = dict(zip(order, args))
    for name, value in given.items():
        if name in named:
            raise StorageError(
                f"Git storage got {name}={value!r} and a positional argument read as "
                f"{name}={named[name]!r}; give it once"
            )
        named[name] = value
    return named


def _default_token_user(repo):
    """Prefect 1's user for an access token: the repository's owner ('org' of 'org/flows')."""
    if not repo:
        return None
    if "://" in repo:
        repo = urllib.parse.urlsplit(repo).path
    return repo.strip("/").split("/")[0] or None


def _split_credentials(url):
    """(`url` without user and password, an 'Authorization: Basic' header for them
    or None): credentials in an http(s) URL are sent as a header, so that git
    keeps them out of .git/config and this orchestrator out of its messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    header = _basic_auth(urllib.parse.unquote(parts.username),
                         urllib.parse.unquote(parts.password or ""))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), header


def _prefect1_clone_url(repo, repo_host, use_ssh):
    """The URL Prefect 1's Git cloned for `repo` ('org/flows') on `repo_host`:
    https://{repo_host}/{repo}.git, or git@{repo_host}:{repo}.git with use_ssh.

    A repo that is already a URL, or an absolute or ./-relative path, is used
    as it is (Prefect 1 would have garbled it); a repo_host with a scheme
    (http://git.internal:8080) keeps it.
    """
    if "://" in repo or _SCP_LIKE_URL.match(repo):
        return repo
    if os.path.isabs(repo) or repo.startswith(("./", "../", "~")):
        return os.path.abspath(os.path.expanduser(repo))
    name = repo.strip("/").removesuffix(".git")
    if use_ssh:
        host = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", repo_host).rstrip("/")
        return f"git@{host}:{name}.git"
    return f"{_with_scheme(repo_host)}/{name}.git"


class Git(Storage):
    """A flow file in a git repository, checked out at a branch, tag or commit.

    Two forms, ours and Prefect 1's (all of Prefect 1.4.1's arguments):

        Git("https://git.example.com/flows.git", "flows/etl.py", ref="v1.2")
        Git("/srv/git/flows", "flows/etl.py")                  # ref="main" by default
        Git(repo="org/flows", flow_path="flows/etl.py", repo_host="github.com",
            branch_name="dev", git_token_secret_name="GITHUB_TOKEN")
        Git("flows/etl.py", "org/flows", tag="v1")             # Prefect 1's order

    Ours: `repo` is a URL or a local path, used as it is; `path` is the flow
    file in it; `ref` a branch, tag or commit (default "main"); `cache_dir`
    where clones go. Prefect 1's: `repo` ('org/flows') on `repo_host`
    (default github.com; one with a scheme, http://git.internal:8080, keeps
    it) is cloned from https://{repo_host}/{repo}.git, or
    git@{repo_host}:{repo}.git with `use_ssh=True` (a repo that is already a
    URL or an absolute path is used as it is); `git_token_secret_name`
    names the secret holding an access token, sent as
    `git_token_username` (default: the repo's owner) and the token, or, with
    `format_access_token=False`, as the secret's value alone ('user:token');
    `git_clone_url_secret_name` names a secret holding the whole clone URL
    instead; one of `branch_name`, `tag` or `commit` (default: the
    repository's default branch); `flow_name` picks one flow of several in the
    file; a leading '/' in `flow_path` means the repository's root.

    Which form a call is (it decides how `repo` is read and the default ref):
    Prefect 1's when it gives `flow_path` or any argument only Prefect 1 had
    (repo_host, branch_name, tag, commit, git_token_*, git_clone_url_secret_name,
    clone_depth, use_ssh, format_access_token); ours otherwise. Positional
    arguments: with `repo=` named, or alone, the first is Prefect 1's
    `flow_path`; with `path=` or `flow_path=` named, it is the repository.
    Two or more are read in the order their values say: the one ending in
    `.py` is the flow file; else the one that is a URL, a `.git` name, an
    absolute path or an existing directory is the repository; if neither
    tells, the call is refused and asks for keywords.

    The repository is cloned once per host into `$ORCHESTRATOR_HOME/git/<sha1 of
    the URL>/` (or under `cache_dir`) and fetched at every `get_flow`, so a moved
    branch is picked up (`clone_depth` is kept but the cached clone is whole,
    so any commit can be checked out). A file lock next to the checkout keeps
    concurrent runs on one host from checking out over each other. Tokens and
    URLs from secrets are read when git runs and reach git as an HTTP header in
    its environment: never the stored ref, .git/config, a repr or a message.
    """

    timeout = 300  # seconds for any one git command, and for waiting on the lock
    # Extra environment for git (GitHub/GitLab/Bitbucket put an access token's
    # header here): the environment, unlike a command line or a URL, is not
    # visible to other users and never lands in .git/config or a stored ref.
    _credential_env = {}

    def __init__(self, *args, flow_path=None, repo=None, repo_host=None, flow_name=None,
                 git_token_secret_name=None, git_token_username=None,
                 git_clone_url_secret_name=None, branch_name=None, tag=None, commit=None,
                 clone_depth=None, use_ssh=None, format_access_token=None,
                 path=None, ref=None, cache_dir=None, **kwargs):
        options = _storage_options("Git", kwargs, _GIT_PREFECT1_ORDER + _GIT_OWN_ORDER[1:])
        given = {name: value for name, value in {
            "flow_path": flow_path, "repo": repo, "repo_host": repo_host,
            "flow_name": flow_name, "git_token_secret_name": git_token_secret_name,
            "git_token_username": git_token_username,
            "git_clone_url_secret_name": git_clone_url_secret_name,
            "branch_name": branch_name, "tag": tag, "commit": commit,
            "clone_depth": clone_depth, "use_ssh": use_ssh,
            "format_access_token": format_access_token, "path": path, "ref": ref,
            "cache_dir": cache_dir}.items() if value is not None}
        named = _name_git_arguments(args, given)
        prefect1 = bool(_GIT_PREFECT1_ONLY & set(named))

        if "path" in named and "flow_path" in named and named["path"] != named["flow_path"]:
            raise StorageError(
                f"Git storage got path={named['path']!r} and flow_path="
                f"{named['flow_path']!r}, two names for the flow file; give one"
            )
        file_path = named.get("flow_path", named.get("path"))
        if "flow_path" in named and isinstance(file_path, str):
            file_path = file_path.lstrip("/")  # Prefect 1's examples write "/flows/flow.py"
        if file_path is None:
            raise StorageError(
                "Git storage needs the flow file's path in the repository: "
                "Git(repo, 'flows/etl.py') or Git(flow_path='flows/etl.py', repo=...)"
            )

        refs = [(kind, named[keyword]) for kind, keyword in
                (("branch", "branch_name"), ("tag", "tag"), ("commit", "commit"), (None, "ref"))
                if named.get(keyword) is not None]
        if len(refs) > 1:
            shown = ", ".join(f"{_GIT_REF_KEYWORDS[k]}={v!r}" for k, v in refs)
            raise StorageError(
                f"Git storage got {shown}; give only one of branch_name, tag, commit "
                "(or ref)"
            )
        if refs:
            ref_kind, ref_value = refs[0]
        elif prefect1:
            ref_kind, ref_value = "default", None
        else:
            ref_kind, ref_value = None, "main"

        repo = named.get("repo")
        url_secret = named.get("git_clone_url_secret_name")
        use_ssh = bool(named.get("use_ssh", False))
        if url_secret is not None:
            ignored = [n for n in ("repo", "repo_host", "git_token_secret_name",
                                   "git_token_username", "use_ssh", "format_access_token")
                       if n in named]
            if ignored:
                warnings.warn(
                    f"Git storage: git_clone_url_secret_name={url_secret!r} gives the whole "
                    f"clone URL, so {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'}"
                    " not used", UserWarning, stacklevel=2)
            url = None
        elif repo is None:
            raise StorageError(
                "Git storage needs repo= (a URL, a local path, or Prefect 1's 'org/flows' "
                "with repo_host=) or git_clone_url_secret_name= (a secret holding the URL)"
            )
        elif not isinstance(repo, str) or not repo.strip() or repo.startswith("-"):
            url = repo  # refused in _configure, with the message it always gave
        elif prefect1:
            url = _prefect1_clone_url(repo, named.get("repo_host", "github.com"), use_ssh)
        else:
            if "://" not in repo and os.path.isdir(repo):
                repo = os.path.abspath(repo)
            url = repo
        if (use_ssh and named.get("git_token_secret_name") is not None
                and url_secret is None):
            warnings.warn(
                f"Git storage: use_ssh=True clones with this host's SSH keys, so "
                f"git_token_secret_name={named['git_token_secret_name']!r} is not used",
                UserWarning, stacklevel=2)

        self._configure(
            repo=repo, url=url, path=file_path, ref=ref_value, ref_kind=ref_kind,
            cache_dir=named.get("cache_dir"), flow_name=named.get("flow_name"),
            prefect1={name: named[name] for name in _GIT_PREFECT1_ONLY - {"flow_path"}
                      if name in named and name not in ("branch_name", "tag", "commit")},
            options=options)

    def _configure(self, repo, url, path, ref, ref_kind, cache_dir, flow_name, prefect1,
                   options):
        """Check and set every attribute (the constructor's and `_from_ref`'s end)."""
        if repo is not None and (not isinstance(repo, str) or not repo.strip()
                                 or repo.startswith("-")):
            raise StorageError(
                f"Git storage repo={repo!r} is not a repository URL or path; give e.g. "
                "'https://github.com/org/flows.git' or '/srv/git/flows'"
            )
        if url is not None and (not isinstance(url, str) or url.startswith("-")):
            raise StorageError(f"Git storage clone URL {url!r} is not a repository URL")
        if not isinstance(path, str) or not path.strip():
            raise StorageError(
                f"Git storage path={path!r} is not a path; give the flow file's path "
                "inside the repository, e.g. 'flows/etl.py'"
            )
        pure = PurePosixPath(path.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts:
            raise StorageError(
                f"Git storage path={path!r} must be relative to the repository root and "
                "stay inside it, e.g. 'flows/etl.py'"
            )
        if ref_kind not in (None, "branch", "tag", "commit", "default"):
            raise TypeError(f"unknown ref_kind {ref_kind!r}")
        if ref_kind != "default" and (
                not isinstance(ref, str) or not ref or ref.startswith("-")
                or any(c.isspace() or ord(c) < 32 for c in ref)):
            keyword = _GIT_REF_KEYWORDS[ref_kind]
            what = {"ref": "a branch, tag or commit name", "branch_name": "a branch name",
                    "tag": "a tag name", "commit": "a commit sha"}[keyword]
            raise StorageError(
                f"Git storage {keyword}={ref!r} is not {what}; give e.g. "
                "'main', 'v1.2' or a commit sha"
            )
        depth = prefect1.get("clone_depth", 1)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise StorageError(
                f"Git storage clone_depth={depth!r} must be a whole number >= 1"
            )
        host = prefect1.get("repo_host", "github.com")
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
            raise StorageError(
                f"Git storage repo_host={host!r} is not a host name; give e.g. "
                "'github.com' or 'gitlab.example.com'"
            )
        self.repo = repo
        self.url = url            # what git clones; None: read from the URL secret
        self.path = pure.as_posix()
        self.ref = ref
        self._ref_kind = ref_kind  # None: any of branch, tag, commit (ours)
        self.cache_dir = os.path.abspath(os.fspath(cache_dir)) if cache_dir is not None else None
        self.flow_name = flow_name
        self._prefect1 = dict(prefect1)  # Prefect 1's settings that were given
        self.repo_host = host
        self.git_token_secret_name = prefect1.get("git_token_secret_name")
        self.git_token_username = (prefect1.get("git_token_username")
                                   or _default_token_user(repo))
        self.git_clone_url_secret_name = prefect1.get("git_clone_url_secret_name")
        self.clone_depth = depth
        self.use_ssh = bool(prefect1.get("use_ssh", False))
        self.format_access_token = bool(prefect1.get("format_access_token", True))
        self._labels = options["labels"]
        self.secrets = options["secrets"]
        self.result = options["result"]
        self.add_default_labels = options["add_default_labels"]
        self.stored_as_script = options["stored_as_script"]
        self.flows = {}    # flow name -> flow file, as Prefect 1 kept them
        self._flows = {}

    # Prefect 1's names for what is kept as `path` and `ref`.
    @property
    def flow_path(self):
        return self.path

    @property
    def branch_name(self):
        return self.ref if self._ref_kind == "branch" else None

    @property
    def tag(self):
        return self.ref if self._ref_kind == "tag" else None

    @property
    def commit(self):
        return self.ref if self._ref_kind == "commit" else None

    @property
    def labels(self):
        """The labels given as `labels=`: agents must have them to run the flow."""
        return list(self._labels)

    def __contains__(self, flow_name):
        return isinstance(flow_name, str) and flow_name in self.flows

    def __repr__(self):
        if self.repo is not None:
            repo = f"repo={self.repo!r}"
        else:
            repo = f"git_clone_url_secret_name={self.git_clone_url_secret_name!r}"
        at = "" if self._ref_kind == "default" else (
            f", {_GIT_REF_KEYWORDS[self._ref_kind]}={self.ref!r}")
        return f"Git({repo}, path={self.path!r}{at})"

    def _at(self):
        """Where in the history the flow is taken from, for messages."""
        if self._ref_kind is None:
            return repr(self.ref)
        if self._ref_kind == "default":
            return "the default branch"
        return f"{self._ref_kind} {self.ref!r}"

    def checkout_directory(self, url=None):
        """Where the repository at `url` (this storage's) is cloned on this host."""
        base = Path(self.cache_dir) if self.cache_dir is not None else home_dir() / "git"
        url = url if url is not None else self.url
        return base / hashlib.sha1(url.encode("utf-8")).hexdigest()

    def add_flow(self, flow, project=None, version=None):
        """Check the file at the ref defines `flow`; returns the file's path."""
        _check_registration(flow, project, version, optional=True)
        _warn_ignored_options(self, flow)
        if self.flow_name is not None and self.flow_name != flow.name:
            raise StorageError(
                f"Git storage is set to flow {self.flow_name!r} (flow_name=) but was given "
                f"flow {flow.name!r}; use one Git storage per flow"
            )
        self.get_flow(flow.name)
        self.flows[flow.name] = self.path
        self._flows[flow.name] = flow
        return self.path

    def _remote(self):
        """(the URL git clones, the environment that gives git its credentials),
        with the secrets they come from read now."""
        what = f"Git storage for {self.path!r}"
        if self.git_clone_url_secret_name is not None:
            value = _secret_value(self.git_clone_url_secret_name, what)
            url, header = _split_credentials(str(value).strip())
            return url, (_git_header_env(url, header) if header else {})
        if self.git_token_secret_name is not None and not self.use_ssh:
            token = str(_secret_value(self.git_token_secret_name, what))
            if self.format_access_token:
                header = _basic_auth(self.git_token_username or "", token)
            else:  # the secret is what goes before '@' in the URL: 'user:token' or 'token'
                user, _, password = token.partition(":")
                header = _basic_auth(user, password)
            return self.url, _git_header_env(self.url, header)
        return self.url, self._credential_env

    def _git(self, *args, cwd=None, env=None, url=None):
        full_env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        full_env.update(self._credential_env if env is None else env)
        try:
            return subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True,
                                  text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise StorageError(
                "Git storage needs the `git` program, which is not on PATH; install git "
                "on the host that runs the flow"
            ) from None
        except subprocess.TimeoutExpired:
            raise StorageError(
                f"`git {args[0]}` for {url or self.url!r} did not finish within "
                f"{self.timeout} s; check the network and that the repository URL is right"
            ) from None

    def _reach_hint(self):
        """More for a clone or fetch that failed: what was likely meant."""
        if self.repo is not None and self._ref_kind is None and self.url == self.repo \
                and re.match(r"^[\w.-]+/[\w.-]+$", self.repo) and not os.path.exists(self.repo):
            return (f" ({self.repo!r} is not a directory here; for the GitHub repository "
                    f"{self.repo!r}, write Git(repo={self.repo!r}, flow_path={self.path!r}, "
                    "repo_host='github.com') or give its URL)")
        prefect1_form = self._ref_kind is not None or bool(self._prefect1)
        if (prefect1_form and self.git_token_secret_name is None
                and self.git_clone_url_secret_name is None and not self.use_ssh
                and (self.url or "").startswith(("http://", "https://"))):
            return (" (no access token was used: for a private repository pass "
                    "git_token_secret_name='NAME' and run `orchestrator secret set NAME`)")
        return ""

    def _update_checkout(self, checkout, url, env):
        if not (checkout / ".git").is_dir():
            shutil.rmtree(checkout, ignore_errors=True)
            partial = checkout.with_name(checkout.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            done = self._git("clone", "--quiet", "--no-checkout", "--", url, str(partial),
                             env=env, url=url)
            if done.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                raise StorageError(
                    f"Git storage cannot clone {url!r}: {_git_error_line(done.stderr)}; "
                    "check the URL and that this host can reach it (network, credentials)"
                    f"{self._reach_hint()}"
                )
            os.replace(partial, checkout)
            logger.info("Cloned %s into %s", url, checkout)
        else:
            done = self._git("fetch", "--quiet", "--force", "--prune", "--tags", "origin",
                             cwd=checkout, env=env, url=url)
            if done.returncode != 0:
                raise StorageError(
                    f"Git storage cannot fetch {url!r}: {_git_error_line(done.stderr)}; "
                    "check the URL and that this host can reach it (network, credentials)"
                    f"{self._reach_hint()}"
                )

    def _resolve_ref(self, checkout, url):
        kind, ref = self._ref_kind, self.ref
        candidates = {
            None: (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref),
            "branch": (f"refs/remotes/origin/{ref}",),
            "tag": (f"refs/tags/{ref}",),
            "commit": (ref,),
            "default": ("refs/remotes/origin/HEAD",),
        }[kind]
        for candidate in candidates:
            done = self._git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}",
                             cwd=checkout, url=url)
            if done.returncode == 0:
                return done.stdout.strip()
        done = self._git("rev-parse", "--verify", f"{candidates[-1]}^{{commit}}", cwd=checkout,
                         url=url)
        listed = self._git("for-each-ref", "--format=%(refname)", "refs/remotes/origin",
                           "refs/tags", cwd=checkout, url=url).stdout.split()
        branches = sorted(r[len("refs/remotes/origin/"):] for r in listed
                          if r.startswith("refs/remotes/origin/") and not r.endswith("/HEAD"))
        tags = sorted(r[len("refs/tags/"):] for r in listed if r.startswith("refs/tags/"))
        known = f"branches: {', '.join(branches) or 'none'}; tags: {', '.join(tags) or 'none'}"
        git_says = _git_error_line(done.stderr)
        if kind is None:
            raise StorageError(
                f"Git storage: ref {ref!r} is not a branch, tag or commit of {url!r} "
                f"(git: {git_says}); {known}. Use one of them or a commit sha"
            )
        if kind == "default":
            raise StorageError(
                f"Git storage: {url!r} has no default branch here (git: {git_says}); {known}. "
                "Give branch_name=, tag= or commit="
            )
        raise StorageError(
            f"Git storage: {kind} {ref!r} is not in {url!r} (git: {git_says}); {known}. "
            f"Fix {_GIT_REF_KEYWORDS[kind]}=, or use branch_name=, tag= or commit= for "
            "what it is"
        )

    def _check_out(self, checkout, commit, url):
        done = self._git("checkout", "--quiet", "--force", "--detach", commit, cwd=checkout,
                         url=url)
        if done.returncode != 0:
            raise StorageError(
                f"Git storage cannot check out {self._at()} ({commit[:12]}) of "
                f"{url!r}: {_git_error_line(done.stderr)}; delete {checkout} to clone afresh"
            )
        self._git("clean", "-ffdxq", cwd=checkout, url=url)

    def _missing_path_error(self, checkout, commit, url):
        names = self._git("ls-tree", "-r", "--name-only", commit, cwd=checkout,
                          url=url).stdout.split("\n")
        python_files = [n for n in names if n.endswith(".py")]
        shown = ", ".join(python_files[:20]) or "none"
        if len(python_files) > 20:
            shown += f", ... ({len(python_files)} in all)"
        at = f"ref {self.ref!r}" if self._ref_kind is None else self._at()
        return StorageError(
            f"Git storage: {self.path!r} is not a file in {url!r} at {at} "
            f"(commit {commit[:12]}); .py files there: {shown}. Fix the path or the ref"
        )

    def get_flow(self, flow_name=None):
        url, env = self._remote()
        name = flow_name if flow_name is not None else self.flow_name
        checkout = self.checkout_directory(url)
        checkout.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(checkout) + ".lock", timeout=self.timeout)
        try:
            with lock:
                self._update_checkout(checkout, url, env)
                commit = self._resolve_ref(checkout, url)
                self._check_out(checkout, commit, url)
                flow_path = (checkout / self.path).resolve()
                if not flow_path.is_relative_to(checkout.resolve()) or not flow_path.is_file():
                    raise self._missing_path_error(checkout, commit, url)
                # Loaded under the lock: another run may check out another ref next.
                where = f"{self.path} in {url!r} at {self._at()} (commit {commit[:12]})"
                try:
                    flows = load_flows_from_file(flow_path)
                except FlowFileError as exc:
                    raise StorageError(f"Git storage, {where}: {exc}") from None
                return _pick(flows, name, where, "pass the flow's name to get_flow")
        except filelock.Timeout:
            raise StorageError(
                f"Git storage: another process has held {lock.lock_file} for more than "
                f"{self.timeout} s; wait for that run to finish, or stop the stuck process "
                "that holds the lock"
            ) from None

    def to_ref(self):
        ref = {"type": "Git", "repo": self.repo, "path": self.path, "ref": self.ref,
               "cache_dir": self.cache_dir}
        # Only what differs from our form, so refs of flows registered before keep
        # their shape (and the flows their version).
        if self.url != self.repo:
            ref["url"] = self.url
        if self._ref_kind is not None:
            ref["ref_kind"] = self._ref_kind
        if self.flow_name is not None:
            ref["flow_name"] = self.flow_name
        for name in sorted(self._prefect1):
            ref[name] = _json_copy(self._prefect1[name], "Git", name)
        ref.update(_options_ref(self))
        if self.add_default_labels is not None:
            ref["add_default_labels"] = self.add_default_labels
        if self.stored_as_script:
            ref["stored_as_script"] = True
        if self.flows:
            ref["flows"] = dict(self.flows)
        return ref

    @classmethod
    def _from_ref(cls, ref):
        repo = ref["repo"]
        if "url" in ref:
            url = ref["url"]
        else:  # our form, or a ref stored before Prefect 1's form existed
            if isinstance(repo, str) and "://" not in repo and os.path.isdir(repo):
                repo = os.path.abspath(repo)
            url = repo
        kind = ref.get("ref_kind")
        value = ref.get("ref")
        if kind is None and value is None:
            value = "main"
        storage = cls.__new__(cls)
        storage._configure(
            repo=repo, url=url, path=ref["path"], ref=value, ref_kind=kind,
            cache_dir=ref.get("cache_dir"), flow_name=ref.get("flow_name"),
            prefect1={name: ref[name] for name in _GIT_PREFECT1_ONLY if name in ref},
            options=_storage_options("Git", {
                **_options_from_ref(ref), "add_default_labels": ref.get("add_default_labels"),
                "stored_as_script": ref.get("stored_as_script", False)}, ()))
        flows = ref.get("flows", {})
        if not isinstance(flows, dict) or not all(isinstance(v, str) for v in flows.values()):
            raise TypeError("'flows' must map flow names to flow files")
        storage.flows = dict(flows)
        return storage


# -- Prefect 1's other storage classes -------------------------------------------
#
# GitHub, GitLab, Bitbucket, S3, GCS, Azure, Webhook and Docker take Prefect
# 1.4.1's constructor arguments, so flow files written for Prefect 1 import
# unchanged. A constructor never reaches a network or a secret: a flow file
# that merely builds one always imports. `add_flow` (registration) uploads or
# checks the flow, `get_flow` (each run) loads it.

def _json_copy(value, storage_name, field):
    """`value` as the JSON that a ref keeps, or a StorageError naming the field."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise StorageError(
            f"{storage_name} storage {field}={value!r} cannot be stored with the flow "
            f"({exc}); give strings, numbers, booleans, lists and dicts only"
        ) from None


def _slug(text):
    """`text` in lower case, runs of anything but ASCII letters and digits turned
    into one '-' (as Prefect 1 names uploaded flows: 'my-flow/2024-05-01t06-...')."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:8]


def _timestamped_key(flow_name):
    """Prefect 1's key for a flow with no key given: '<flow slug>/<UTC time slug>'."""
    return f"{_slug(flow_name)}/{_slug(_dt.datetime.now(_dt.timezone.utc).isoformat())}"


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

    @property
    def labels(self):
        """The labels given as `labels=`: agents must have them to run the flow."""
        return list(self._labels)

    def __contains__(self, flow_name):
        return isinstance(flow_name, str) and flow_name in self.flows

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


def _secret_value(name, what, missing=None):
    """The value of secret `name`, read as a run from the store reads it.

    Prefect 1 loaded flows with `running_with_backend` set, so its secrets came
    from the backend unless `use_local_secrets` said otherwise; here that means
    the store, unless `[flows] use_local_secrets = true`.
    """
    from ..core import ports
    from ..core.context import context
    from ..exceptions import SecretNotFound

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
    from ..config import load_config

    local = load_config().get("local_secrets", {}) or {}
    for key in (name, name.lower()):
        if key in local:
            return str(local[key])
    return os.environ.get(name) or None


# -- GitHub, GitLab, Bitbucket ---------------------------------------------------

def _basic_auth(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Authorization: Basic {token}"


def _with_scheme(host):
    host = host.rstrip("/")
    return host if "://" in host else f"https://{host}"


class _GitHost(_Prefect1Storage):
    """A flow file in a repository on a git hosting service, cloned with our Git
    storage (cache, fetch at every run, lock, errors) from `clone_url`.

    An access token is read at clone time and given to git as an HTTP header
    through its environment: it is never part of the URL, `.git/config`, the
    stored ref, a repr or a log line.
    """

    _service = "Git"

    @property
    def clone_url(self):
        """The URL git clones (never with a token in it)."""
        raise NotImplementedError

    # A token for the service: the secret named by `access_token_secret`, else
    # this local secret or environment variable; sent as this user.
    _token_default = None
    _token_user = None

    def _auth_header(self):
        """'Authorization: ...' for git, or None for a public repository."""
        if self.access_token_secret is not None:
            token = _secret_value(self.access_token_secret, self._what())
        else:
            token = _default_secret(self._token_default)
        return None if not token else _basic_auth(self._token_user, token)

    def _what(self):
        return f"{type(self).__name__} storage for repo {self.repo!r}"

    def _checkout(self, flow_path):
        path = str(flow_path).lstrip("/")  # Prefect 1 examples write path="/flows/flow.py"
        ref = self.ref if self.ref else "HEAD"  # no ref: the repository's default branch
        try:
            git = Git(repo=self.clone_url, path=path, ref=ref)
        except StorageError as exc:
            raise StorageError(f"{self._what()}: {exc}") from None
        header = self._auth_header()
        if header is not None:
            git._credential_env = _git_header_env(self.clone_url, header)
        return git, header is not None

    def _no_path_error(self):
        return StorageError(
            f"{self._what()} has no path; give the flow file's path in the "
            f"repository, e.g. {type(self).__name__}(..., path='flows/etl.py')"
        )

    def get_flow(self, flow_name=None):
        if not self.flows and not self.path:
            raise self._no_path_error()
        flow_name, flow_path = self._entry(flow_name, fallback=self.path)
        return self._load(flow_path, flow_name)

    def _load(self, flow_path, flow_name):
        if not flow_path:
            raise self._no_path_error()
        git, with_token = self._checkout(flow_path)
        try:
            return git.get_flow(flow_name)
        except StorageError as exc:
            hint = ""
            if not with_token and ("cannot clone" in str(exc) or "cannot fetch" in str(exc)):
                hint = (" (no access token was used: for a private repository pass "
                        "access_token_secret='NAME' and run `orchestrator secret set NAME`)")
            raise StorageError(f"{self._what()}: {exc}{hint}") from None

    def add_flow(self, flow, project=None, version=None):
        """Record the flow's path, and check the file is there and defines it."""
        self._check_add(flow, project, version)
        self._load(self.path, flow.name)
        self.flows[flow.name] = self.path
        self._flows[flow.name] = flow
        return self.path


def _git_header_env(url, header):
    """Environment that makes git send `header` to `url` (and nowhere else)."""
    index = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    return {"GIT_CONFIG_COUNT": str(index + 1),
            f"GIT_CONFIG_KEY_{index}": f"http.{url}.extraHeader",
            f"GIT_CONFIG_VALUE_{index}": header}


def _github_web_root(base_url):
    """The web address repositories are cloned from, given GitHub's REST API URL
    (`base_url`, Prefect 1's argument): api.github.com -> github.com,
    https://ghe.example.com/api/v3 -> https://ghe.example.com."""
    if not base_url:
        return "https://github.com"
    root = _with_scheme(base_url)
    root = re.sub(r"/api(/v3)?$", "", root)
    return re.sub(r"^(https?://)api\.github\.com$", r"\1github.com", root)


class GitHub(_GitHost):
    """Prefect 1's GitHub storage: flow file `path` of repository `repo`
    ('org/name'), at `ref` (branch, tag or commit; default: the default branch).

        GitHub(repo="org/flows", path="flows/etl.py", ref="main",
               access_token_secret="GITHUB_TOKEN")

    Cloned from https://github.com/org/flows.git; `base_url` (GitHub
    Enterprise's API URL, https://ghe.example.com/api/v3) clones from that
    host instead. The token is the secret named by `access_token_secret`, else
    the local secret or environment variable GITHUB_ACCESS_TOKEN, else none.
    """

    _fields = ("repo", "path", "ref", "access_token_secret", "base_url")
    _repr_fields = ("repo", "path", "ref")
    _token_default, _token_user = "GITHUB_ACCESS_TOKEN", "x-access-token"

    def __init__(self, repo, path, ref=None, access_token_secret=None, base_url=None,
                 **kwargs):
        self.repo = repo
        self.path = path
        self.ref = ref
        self.access_token_secret = access_token_secret
        self.base_url = base_url
        self._set_options(kwargs)

    @property
    def clone_url(self):
        return f"{_github_web_root(self.base_url)}/{self.repo}.git"



class GitLab(_GitHost):
    """Prefect 1's GitLab storage: flow file `path` of project `repo`
    ('group/project'), at `ref` (default: the default branch), on gitlab.com or
    the server `host` (https://gitlab.example.com).

        GitLab(repo="data/flows", path="flows/etl.py", access_token_secret="GITLAB_TOKEN")

    The token is the secret named by `access_token_secret`, else the local
    secret or environment variable GITLAB_ACCESS_TOKEN, else none.
    """

    _fields = ("repo", "host", "path", "ref", "access_token_secret")
    _repr_fields = ("repo", "host", "path", "ref")
    _token_default, _token_user = "GITLAB_ACCESS_TOKEN", "oauth2"

    def __init__(self, repo, host=None, path=None, ref=None, access_token_secret=None,
                 **kwargs):
        self.repo = repo
        self.host = host
        self.path = path
        self.ref = ref
        self.access_token_secret = access_token_secret
        self._set_options(kwargs)

    @property
    def clone_url(self):
        if str(self.repo).isdigit():
            raise StorageError(
                f"GitLab storage repo={self.repo!r} is a project id; git clones by path: "
                "give the project's path instead, e.g. repo='group/project'"
            )
        return f"{_with_scheme(self.host or 'https://gitlab.com')}/{self.repo}.git"



class Bitbucket(_GitHost):
    """Prefect 1's Bitbucket storage: flow file `path` of repository `repo` in
    `project`, at `ref` (default: the default branch).

        Bitbucket(project="DATA", repo="flows", host="https://bitbucket.example.com",
                  path="flows/etl.py", access_token_secret="BITBUCKET_TOKEN")   # Server
        Bitbucket(project="DATA", repo="flows", workspace="acme", path="flows/etl.py",
                  cloud_username_secret="BB_USER", cloud_app_password_secret="BB_PASSWORD")

    Bitbucket Server (`host`) is cloned from {host}/scm/{project}/{repo}.git with
    a bearer token (`access_token_secret`, else BITBUCKET_ACCESS_TOKEN);
    Bitbucket Cloud (`workspace`) from https://bitbucket.org/{workspace}/{repo}.git
    with a user name and app password (the two secrets, else
    BITBUCKET_CLOUD_USERNAME and BITBUCKET_CLOUD_APP_PASSWORD).
    """

    _fields = ("project", "repo", "workspace", "host", "path", "ref", "access_token_secret",
               "cloud_username_secret", "cloud_app_password_secret")
    _repr_fields = ("project", "repo", "workspace", "host", "path", "ref")

    def __init__(self, project, repo, workspace=None, host=None, path=None, ref=None,
                 access_token_secret=None, cloud_username_secret=None,
                 cloud_app_password_secret=None, **kwargs):
        if workspace and access_token_secret:
            # Refused when made, as Prefect 1 refuses it.
            raise StorageError(
                f"Bitbucket storage got workspace={workspace!r} (Bitbucket Cloud) and "
                f"access_token_secret={access_token_secret!r} (Bitbucket Server); Cloud "
                "signs in with cloud_username_secret and cloud_app_password_secret: drop "
                "one of the two"
            )
        self.project = project
        self.repo = repo
        self.workspace = workspace
        self.host = host
        self.path = path
        self.ref = ref
        self.access_token_secret = access_token_secret
        self.cloud_username_secret = cloud_username_secret
        self.cloud_app_password_secret = cloud_app_password_secret
        self._set_options(kwargs)

    @property
    def clone_url(self):
        if self.workspace:
            return f"https://bitbucket.org/{self.workspace}/{self.repo}.git"
        if not self.host:
            raise StorageError(
                f"Bitbucket storage for repo {self.repo!r} has neither workspace= "
                "(Bitbucket Cloud) nor host= (Bitbucket Server); give workspace='...' "
                "for bitbucket.org, or host='https://bitbucket.example.com' for a server"
            )
        return f"{_with_scheme(self.host)}/scm/{self.project}/{self.repo}.git"

    def _auth_header(self):
        what = self._what()
        if self.workspace:
            user = (_secret_value(self.cloud_username_secret, what)
                    if self.cloud_username_secret is not None
                    else os.environ.get("BITBUCKET_CLOUD_USERNAME"))
            password = (_secret_value(self.cloud_app_password_secret, what)
                        if self.cloud_app_password_secret is not None
                        else os.environ.get("BITBUCKET_CLOUD_APP_PASSWORD"))
            if bool(user) != bool(password):
                missing = ("cloud_app_password_secret (or BITBUCKET_CLOUD_APP_PASSWORD)"
                           if user else "cloud_username_secret (or BITBUCKET_CLOUD_USERNAME)")
                raise StorageError(f"{what}: Bitbucket Cloud needs a user name and an app "
                                   f"password; {missing} is not set")
            return _basic_auth(user, password) if user else None
        if self.access_token_secret is not None:
            token = _secret_value(self.access_token_secret, what)
        else:
            token = _default_secret("BITBUCKET_ACCESS_TOKEN")
        return f"Authorization: Bearer {token}" if token else None


# -- flows uploaded as bytes: S3, GCS, Azure, Webhook ------------------------------

def _flow_to_bytes(flow, storage_name):
    """The flow pickled (cloudpickle) in a JSON envelope that says with what it
    was pickled, so a failure to load it elsewhere can say why."""
    try:
        pickled = cloudpickle.dumps(flow)
    except Exception as exc:
        raise StorageError(
            f"Flow {flow.name!r} cannot be pickled for {storage_name} storage "
            f"({type(exc).__name__}: {exc}); create clients and connections inside "
            "tasks instead of at flow definition, or store the flow as a script "
            "(stored_as_script=True)"
        ) from None
    return json.dumps({
        "flow": base64.b64encode(pickled).decode("ascii"),
        "versions": {"python": _python_version(), "cloudpickle": cloudpickle.__version__,
                     "orchestrator": __version__},
        "host": socket.gethostname(),
    }).encode("utf-8")


def _flow_from_bytes(data, flow_name, where, expected_sha256):
    """The flow in `data` (made by `_flow_to_bytes`), loaded only if `data` is
    exactly what was uploaded at registration: a pickle runs code, so one put
    there by anyone else is refused."""
    if not expected_sha256:
        raise StorageError(
            f"Refusing to unpickle flow {flow_name!r} from {where}: no digest of it was "
            "recorded at registration, so it cannot be told from one put there by "
            "someone else; register the flow again"
        )
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise StorageError(
            f"Refusing to unpickle flow {flow_name!r} from {where}: it is not the flow "
            "uploaded at registration (its sha256 differs), so it was replaced since, "
            "for instance by registering another version to the same key. Register the "
            "flow again, and leave the key unset so each version gets its own object"
        )
    try:
        envelope = json.loads(data.decode("utf-8"))
        pickled = base64.b64decode(envelope["flow"])
        versions = envelope.get("versions", {})
        meta = {"host": envelope.get("host", "?"), "python": versions.get("python", "?"),
                "cloudpickle": versions.get("cloudpickle", "?")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StorageError(
            f"{where} does not hold a flow stored by this orchestrator (no flow "
            "envelope); register the flow again"
        ) from None
    return _unpickle_flow(pickled, flow_name, where, meta)


def _flow_from_script(data, flow_name, where, file_name):
    """Flow `flow_name` defined by the Python source `data` (from `where`).

    The source is written to `$ORCHESTRATOR_HOME/scripts/<sha256>/<file_name>`
    and run from there, so tracebacks show its lines; the same source is
    written once.
    """
    digest = hashlib.sha256(data).hexdigest()
    name = _safe_name(PurePosixPath(str(file_name)).name or "flow.py")
    if not name.endswith(".py"):
        name += ".py"
    path = home_dir() / "scripts" / digest[:40] / name
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
    except OSError as exc:
        raise StorageError(
            f"Cannot write the flow script from {where} to {path}: {exc}; check that "
            "ORCHESTRATOR_HOME is writable"
        ) from None
    try:
        flows = load_flows_from_file(path)
    except FlowFileError as exc:
        raise StorageError(f"Flow script from {where}: {exc}") from None
    return _pick(flows, flow_name, where, "pass the flow's name to get_flow")


_FLOW_FILE_RUN_NAME = "__orchestrator_flow_file__"  # what load_flows_from_file runs files as


def _flow_file_being_loaded():
    """The flow file being loaded now (by `orchestrator register` or Script/Git
    storage), if a storage is being made while one is: Prefect 1's CLI put it in
    the context as `local_script_path` for the same purpose."""
    from ..core.context import context

    given = context.get("local_script_path")
    if given:
        return given
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == _FLOW_FILE_RUN_NAME:
            return frame.f_globals.get("__file__")
        frame = frame.f_back
    return None


class _KeepsDigests:
    """For storage that keeps pickled flows where others can write them (an object
    store, a web service): the sha256 of each flow it stored (`_digests`, flow
    name -> digest) goes into the ref, and a flow whose bytes differ is refused
    when loaded."""

    def _ref_extras(self):
        return {"sha256": dict(self._digests)}

    def _restore_extras(self, ref):
        digests = ref.get("sha256", {})
        if not isinstance(digests, dict):
            raise TypeError("'sha256' must map flow names to digests")
        self._digests = dict(digests)


class _ObjectStore(_KeepsDigests, _Prefect1Storage):
    """A flow uploaded to an object store at registration and downloaded at each
    run, through fsspec and the store's package (s3fs, gcsfs, adlfs: extras).

    Pickled flows (the default) go to a new key per registration,
    '<flow slug>/<UTC time slug>' unless a key is given, with their sha256
    recorded in the ref. With `stored_as_script=True` the flow's .py file is
    uploaded (or, without a local script, expected at the key) and run at each
    run.
    """

    _protocol = ""      # fsspec's name for the store
    _package = ""       # the package fsspec needs for it
    _extra = ""         # our extra that installs that package
    _container_word, _key_word, _script_hint = "bucket", "key", ""

    def _container(self):
        raise NotImplementedError

    def _given_key(self):
        """The key (blob name) given to the constructor, or None."""
        return self.key

    def _script_to_upload(self):
        """The local .py file to upload with stored_as_script, or None."""

    def _filesystem_options(self, for_upload):
        return {}

    def _url(self, key):
        return f"{self._protocol}://{self._container()}/{key}"

    def _filesystem(self, for_upload=False):
        storage_name = type(self).__name__
        install = (f"install it with `pip install -e '.[{self._extra}]'` (or `pip install "
                   f"{self._package}`) on every host that registers or runs such flows")
        try:
            import fsspec
        except ImportError:
            raise StorageError(
                f"{storage_name} storage needs the fsspec and {self._package} packages, "
                f"which are not installed; {install}"
            ) from None
        if not self._container():
            raise StorageError(
                f"{storage_name} storage has no {self._container_word}; give e.g. "
                f"{storage_name}({self._container_word}='my-flows')"
            )
        try:
            return fsspec.filesystem(self._protocol, **self._filesystem_options(for_upload))
        except ImportError as exc:
            raise StorageError(
                f"{storage_name} storage needs the {self._package} package ({exc}); {install}"
            ) from None
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(
                f"{storage_name} storage cannot connect to {self._protocol}://"
                f"{self._container()} ({type(exc).__name__}: {exc}); check its settings "
                "and this host's credentials"
            ) from None

    def _upload(self, key, data, flow_name):
        filesystem = self._filesystem(for_upload=True)
        path, url = f"{self._container()}/{key}", self._url(key)
        try:
            self._check_can_write(filesystem, path, url)
            filesystem.pipe_file(path, data)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(
                f"Cannot upload flow {flow_name!r} to {url} ({type(exc).__name__}: {exc}); "
                f"check that the {self._container_word} exists and this host's credentials "
                "may write to it"
            ) from None
        logger.info("Uploaded flow %r to %s (%d bytes)", flow_name, url, len(data))

    def _check_can_write(self, filesystem, path, url):
        """Raise StorageError if writing `path` must not replace what is there."""

    def _download(self, key, flow_name):
        filesystem = self._filesystem()
        url = self._url(key)
        try:
            return filesystem.cat_file(f"{self._container()}/{key}")
        except FileNotFoundError:
            raise StorageError(
                f"Flow {flow_name!r} is not at {url}: the object was deleted or never "
                "uploaded; register the flow again (or upload its script there)"
            ) from None
        except Exception as exc:
            raise StorageError(
                f"Cannot download flow {flow_name!r} from {url} ({type(exc).__name__}: "
                f"{exc}); check this host's credentials and network"
            ) from None

    def add_flow(self, flow, project=None, version=None):
        """Upload the flow (pickled, or its script), or check its script is at the key."""
        self._check_add(flow, project, version)
        storage_name = type(self).__name__
        key = self._given_key() or _timestamped_key(flow.name)
        if self.stored_as_script:
            script = self._script_to_upload()
            if script is not None:
                try:
                    data = Path(script).read_bytes()
                except OSError as exc:
                    raise StorageError(
                        f"{storage_name} storage cannot read local_script_path {script!r} "
                        f"({exc}); give the flow's .py file"
                    ) from None
                self._upload(key, data, flow.name)
            elif not self._given_key():
                raise StorageError(
                    f"{storage_name} storage with stored_as_script=True needs "
                    f"{self._key_word}= (where the flow's .py file is in the "
                    f"{self._container_word}){self._script_hint}"
                )
            else:
                self._load(flow.name, key, None)  # the script must be there, and define it
            self._digests.pop(flow.name, None)
        else:
            data = _flow_to_bytes(flow, storage_name)
            self._upload(key, data, flow.name)
            self._digests[flow.name] = hashlib.sha256(data).hexdigest()
        self.flows[flow.name] = key
        self._flows[flow.name] = flow
        return key

    def _load(self, flow_name, key, digest):
        data = self._download(key, flow_name)
        where = self._url(key)
        if self.stored_as_script:
            return _flow_from_script(data, flow_name, where, key)
        return _flow_from_bytes(data, flow_name, where, digest)

    def get_flow(self, flow_name=None):
        fallback = self._given_key() if self.stored_as_script else None
        flow_name, key = self._entry(flow_name, fallback=fallback)
        return self._load(flow_name, key, self._digests.get(flow_name))


class S3(_ObjectStore):
    """Prefect 1's S3 storage: the flow uploaded to `bucket` at registration.

        S3(bucket="my-flows")                                    # pickled
        S3(bucket="my-flows", key="flows/etl.py", stored_as_script=True,
           local_script_path="flows/etl.py")                     # the script

    Needs the `s3` extra (`pip install -e '.[s3]'`: fsspec and s3fs).
    `client_options` are boto3 client arguments (endpoint_url, region_name,
    ...); `upload_options` are extra arguments of the upload (ServerSideEncryption,
    ...). Credentials come from the usual AWS places (environment, ~/.aws).
    """

    _fields = ("bucket", "key", "local_script_path", "client_options", "upload_options")
    _repr_fields = ("bucket", "key", "stored_as_script")
    _protocol, _package, _extra = "s3", "s3fs", "s3"
    _container_word, _key_word = "bucket", "key"
    _script_hint = (", or local_script_path= (the .py file to upload; `orchestrator "
                    "register FILE` uses FILE)")

    def __init__(self, bucket, key=None, stored_as_script=False, local_script_path=None,
                 client_options=None, upload_options=None, **kwargs):
        self.bucket = bucket
        self.key = key
        self.upload_options = upload_options
        self.client_options = client_options
        if local_script_path is None and stored_as_script:
            local_script_path = _flow_file_being_loaded()
        self.local_script_path = (os.path.abspath(os.fspath(local_script_path))
                                  if local_script_path else None)
        self._digests = {}
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def __repr__(self):
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._repr_fields)
        if self.client_options:
            shown += f", client_options={_masked(self.client_options)}"
        return f"S3({shown})"

    def _container(self):
        return self.bucket

    def _script_to_upload(self):
        return self.local_script_path

    def _filesystem_options(self, for_upload):
        options = {"client_kwargs": dict(self.client_options or {})}
        if for_upload and self.upload_options:
            options["s3_additional_kwargs"] = dict(self.upload_options)
        return options


class GCS(_ObjectStore):
    """Prefect 1's GCS storage: the flow uploaded to Google Cloud Storage `bucket`.

        GCS(bucket="my-flows", project="analytics")

    Needs the `gcs` extra (`pip install -e '.[gcs]'`: fsspec and gcsfs);
    credentials come from the usual Google places (GOOGLE_APPLICATION_CREDENTIALS, ...).
    """

    _fields = ("bucket", "key", "project", "local_script_path")
    _repr_fields = ("bucket", "key", "project", "stored_as_script")
    _protocol, _package, _extra = "gcs", "gcsfs", "gcs"
    _container_word, _key_word = "bucket", "key"
    _script_hint = S3._script_hint

    def __init__(self, bucket, key=None, project=None, stored_as_script=False,
                 local_script_path=None, **kwargs):
        self.bucket = bucket
        self.key = key
        self.project = project
        if local_script_path is None and stored_as_script:
            local_script_path = _flow_file_being_loaded()
        self.local_script_path = (os.path.abspath(os.fspath(local_script_path))
                                  if local_script_path else None)
        self._digests = {}
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def _container(self):
        return self.bucket

    def _script_to_upload(self):
        return self.local_script_path

    def _filesystem_options(self, for_upload):
        return {"project": self.project} if self.project else {}


class Azure(_ObjectStore):
    """Prefect 1's Azure storage: the flow uploaded to Azure Blob Storage `container`.

        Azure(container="flows", connection_string_secret="AZURE_STORAGE")

    Needs the `azure` extra (`pip install -e '.[azure]'`: fsspec and adlfs).
    The connection string is the secret named by `connection_string_secret`,
    else the environment variable AZURE_STORAGE_CONNECTION_STRING. With
    `blob_name`, a second registration replaces the blob only with
    `overwrite=True`. With `stored_as_script=True`, the script must already be
    at `blob_name` (as in Prefect 1, Azure storage uploads no scripts).
    """

    _fields = ("container", "connection_string_secret", "blob_name", "overwrite")
    _repr_fields = ("container", "blob_name", "stored_as_script")
    _protocol, _package, _extra = "az", "adlfs", "azure"
    _container_word, _key_word = "container", "blob_name"
    _script_hint = ""

    def __init__(self, container, connection_string_secret=None, blob_name=None,
                 overwrite=False, stored_as_script=False, **kwargs):
        self.container = container
        self.connection_string_secret = connection_string_secret
        self.blob_name = blob_name
        self.overwrite = overwrite
        self._digests = {}
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def _container(self):
        return self.container

    def _given_key(self):
        return self.blob_name

    def _connection_string(self):
        what = f"Azure storage for container {self.container!r}"
        if self.connection_string_secret is not None:
            return _secret_value(self.connection_string_secret, what)
        value = _default_secret("AZURE_STORAGE_CONNECTION_STRING")
        if not value:
            raise StorageError(
                f"{what} has no connection string: pass connection_string_secret='NAME' "
                "(and run `orchestrator secret set NAME`), or set the environment "
                "variable AZURE_STORAGE_CONNECTION_STRING"
            )
        return value

    def _filesystem_options(self, for_upload):
        connection_string = self._connection_string()
        if "AccountKey=" in connection_string or "SharedAccessSignature=" in connection_string:
            return {"connection_string": connection_string}
        # No key in it: sign in as this host's Azure identity, as Prefect 1 did
        # with DefaultAzureCredential.
        account = re.search(r"AccountName=([^;]+)", connection_string)
        return {"account_name": account.group(1) if account else None, "anon": False}

    def _check_can_write(self, filesystem, path, url):
        if not self.overwrite and filesystem.exists(path):
            raise StorageError(
                f"Azure storage: blob {url} exists and overwrite=False; pass "
                "overwrite=True to replace it, or leave blob_name unset so each "
                "registration gets its own blob"
            )


# -- Webhook ---------------------------------------------------------------------

_HTTP_METHODS = ("GET", "PATCH", "POST", "PUT")
_REQUEST_ARGUMENTS = ("url", "params", "headers", "data", "json", "timeout", "auth", "cookies",
                      "verify", "cert", "allow_redirects", "proxies", "stream")
_WEBHOOK_TIMEOUT = 300  # seconds, when the request arguments give no timeout


class _TemplateValues(Mapping):
    """`${NAME}` in Webhook request arguments: the environment variable NAME,
    else the secret NAME (Prefect 1's lookup order)."""

    def __init__(self, what):
        self.what = what

    def __getitem__(self, name):
        value = os.environ.get(name)
        if value is not None:
            return value
        return _secret_value(name, self.what, missing=(
            f"{self.what}: template ${{{name}}} is neither an environment variable nor a "
            f"secret; set one of them (`orchestrator secret set {name}`)"))

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def _render_templates(value, what):
    """`value` (a dict) with `${NAME}` in its strings replaced, in nested dicts too
    (not in lists), as Prefect 1 does."""
    rendered = {}
    for key, item in value.items():
        if isinstance(item, str):
            try:
                rendered[key] = string.Template(item).substitute(_TemplateValues(what))
            except ValueError as exc:
                raise StorageError(
                    f"{what}: {key}={item!r} has a bad template ({exc}); write ${{NAME}} "
                    "for a value and $$ for a literal $"
                ) from None
        elif isinstance(item, dict):
            rendered[key] = _render_templates(item, what)
        else:
            rendered[key] = item
    return rendered


class WebhookResponse:
    """The answer to a Webhook request: `status_code`, `headers`, `content`,
    `text`, `json()` (what Prefect 1's `_build_responses` held, from requests)."""

    def __init__(self, status_code, headers, content, url):
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def ok(self):
        return self.status_code < 400

    @property
    def text(self):
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)

    def __repr__(self):
        return f"<WebhookResponse [{self.status_code}]>"


def _send_request(method, arguments, body, what, template_url):
    """Send one HTTP request described by requests-style `arguments` (already
    rendered); the response, or a StorageError naming `template_url` (never the
    rendered one, which may hold a secret)."""
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    unknown = [k for k in arguments if k not in _REQUEST_ARGUMENTS]
    if unknown:
        raise StorageError(
            f"{what}: request argument {unknown[0]!r} is not supported here; the supported "
            f"ones are {', '.join(_REQUEST_ARGUMENTS)}"
        )
    url = arguments.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"{what}: url={template_url!r} is not an http(s) URL; give "
                           "e.g. {'url': 'https://flows.example.com/etl'}")
    params = arguments.get("params")
    if params:
        query = params if isinstance(params, str) else urllib.parse.urlencode(params, doseq=True)
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + query
    headers = {str(k): str(v) for k, v in (arguments.get("headers") or {}).items()}
    if body is None and arguments.get("json") is not None:
        body = json.dumps(arguments["json"]).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    elif body is None and arguments.get("data") is not None:
        data = arguments["data"]
        body = (urllib.parse.urlencode(data).encode("utf-8") if isinstance(data, dict)
                else data.encode("utf-8") if isinstance(data, str) else bytes(data))
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/octet-stream"
    auth = arguments.get("auth")
    if auth is not None:
        if not isinstance(auth, (list, tuple)) or len(auth) != 2:
            raise StorageError(f"{what}: auth must be a (user, password) pair")
        headers["Authorization"] = _basic_auth(*auth).split(": ", 1)[1]
    cookies = arguments.get("cookies")
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    timeout = arguments.get("timeout")
    if isinstance(timeout, (list, tuple)):
        timeout = max(t for t in timeout if t is not None) if any(timeout) else None
    timeout = _WEBHOOK_TIMEOUT if timeout is None else timeout

    handlers = []
    if url.startswith("https://"):
        verify = arguments.get("verify", True)
        context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert = arguments.get("cert")
        if cert:
            certfile, keyfile = (cert, None) if isinstance(cert, str) else tuple(cert)
            context.load_cert_chain(certfile, keyfile)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    if arguments.get("proxies") is not None:
        handlers.append(urllib.request.ProxyHandler(dict(arguments["proxies"])))
    if arguments.get("allow_redirects", True) is False:
        class NoRedirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        handlers.append(NoRedirects())
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    # As Prefect 1's session: up to 3 more tries when no connection could be made.
    for attempt in range(4):
        try:
            with opener.open(request, timeout=timeout) as answer:
                return WebhookResponse(answer.status, dict(answer.headers), answer.read(),
                                       template_url)
        except urllib.error.HTTPError as exc:
            content = exc.read() or b""
            response = WebhookResponse(exc.code, dict(exc.headers or {}), content,
                                       template_url)
            if exc.code < 400:
                return response  # a redirect not followed (allow_redirects=False)
            snippet = response.text.strip().replace("\n", " ")[:200]
            raise StorageError(
                f"{what}: {method} {template_url} answered {exc.code} {exc.reason}"
                f"{': ' + snippet if snippet else ''}; check the URL, the method and the "
                "credentials in the request arguments"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            refused = isinstance(reason, (ConnectionRefusedError, socket.gaierror))
            if refused and attempt < 3:
                continue
            raise StorageError(
                f"{what}: {method} {template_url} failed ({type(reason).__name__}: "
                f"{reason}); check that the server is up and reachable from this host"
            ) from None


class Webhook(_KeepsDigests, _Prefect1Storage):
    """Prefect 1's Webhook storage: the flow sent with one HTTP request at
    registration and fetched with another at each run.

        Webhook(
            build_request_kwargs={"url": "https://flows.example.com/etl",
                                  "headers": {"Authorization": "Bearer ${FLOWS_TOKEN}"}},
            build_request_http_method="PUT",
            get_flow_request_kwargs={"url": "https://flows.example.com/etl",
                                     "headers": {"Authorization": "Bearer ${FLOWS_TOKEN}"}},
            get_flow_request_http_method="GET",
        )

    The request arguments are those of `requests` (url, params, headers, data,
    json, timeout, auth, cookies, verify, cert, allow_redirects, proxies);
    `${NAME}` in their strings is replaced when the request is sent by the
    environment variable NAME, else the secret NAME. The flow is pickled, or
    with `stored_as_script=True` the file `flow_script_path` is sent. The
    responses to the upload are in `_build_responses` (flow name -> response).
    """

    _fields = ("build_request_kwargs", "build_request_http_method", "get_flow_request_kwargs",
               "get_flow_request_http_method", "flow_script_path")

    def __init__(self, build_request_kwargs, build_request_http_method,
                 get_flow_request_kwargs, get_flow_request_http_method,
                 stored_as_script=False, flow_script_path=None, **kwargs):
        methods = {}
        for name, method in (("build_request_http_method", build_request_http_method),
                             ("get_flow_request_http_method", get_flow_request_http_method)):
            # Refused when made, as Prefect 1 refuses it.
            if not isinstance(method, str) or method.upper() not in _HTTP_METHODS:
                raise StorageError(
                    f"Webhook storage {name}={method!r} is not an HTTP method it sends; "
                    f"use one of {', '.join(_HTTP_METHODS)}"
                )
            methods[name] = method.upper()
        self.build_request_kwargs = build_request_kwargs
        self.build_request_http_method = methods["build_request_http_method"]
        self.get_flow_request_kwargs = get_flow_request_kwargs
        self.get_flow_request_http_method = methods["get_flow_request_http_method"]
        self.flow_script_path = flow_script_path
        self._build_responses = None
        self._digests = {}
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def __repr__(self):
        build = (self.build_request_kwargs or {}).get("url")
        get = (self.get_flow_request_kwargs or {}).get("url")
        return (f"Webhook({self.build_request_http_method} {build!r}, "
                f"{self.get_flow_request_http_method} {get!r}, "
                f"stored_as_script={self.stored_as_script!r})")

    def _arguments(self, name):
        value = getattr(self, name)
        if not isinstance(value, dict):
            raise StorageError(
                f"Webhook storage {name}={value!r} is not a dict of request arguments; "
                "give e.g. {'url': 'https://flows.example.com/etl'}"
            )
        return value

    def add_flow(self, flow, project=None, version=None):
        """Send the flow (pickled, or the script `flow_script_path`) with the build request."""
        self._check_add(flow, project, version)
        what = f"Webhook storage, uploading flow {flow.name!r}"
        if self.stored_as_script:
            if not self.flow_script_path:
                raise StorageError(
                    f"{what}: stored_as_script=True needs flow_script_path= (the flow's "
                    ".py file to send)"
                )
            try:
                data = Path(self.flow_script_path).read_bytes()
            except OSError as exc:
                raise StorageError(
                    f"{what}: cannot read flow_script_path {self.flow_script_path!r} "
                    f"({exc}); give the flow's .py file"
                ) from None
        else:
            data = _flow_to_bytes(flow, "Webhook")
        template = self._arguments("build_request_kwargs")
        arguments = _render_templates(template, what)
        if "data" in arguments:
            warnings.warn(
                "Webhook storage: 'data' in build_request_kwargs is replaced by the flow's "
                "content; remove it", RuntimeWarning, stacklevel=2)
            del arguments["data"]
        arguments.pop("json", None)  # the body is the flow
        response = _send_request(self.build_request_http_method, arguments, data, what,
                                 template.get("url"))
        logger.info("Uploaded flow %r with %s %s (%d)", flow.name,
                    self.build_request_http_method, template.get("url"),
                    response.status_code)
        # One flow per Webhook storage, as in Prefect 1.
        self._build_responses = {flow.name: response}
        self.flows = {flow.name: flow.name}
        self._flows = {flow.name: flow}
        self._digests = {} if self.stored_as_script else {
            flow.name: hashlib.sha256(data).hexdigest()}
        return flow.name

    def get_flow(self, flow_name=None):
        flow_name, _ = self._entry(flow_name)
        what = f"Webhook storage, fetching flow {flow_name!r}"
        template = self._arguments("get_flow_request_kwargs")
        arguments = _render_templates(template, what)
        response = _send_request(self.get_flow_request_http_method, arguments, None, what,
                                 template.get("url"))
        where = f"{self.get_flow_request_http_method} {template.get('url')}"
        if self.stored_as_script:
            name = PurePosixPath(str(self.flow_script_path or "flow.py")).name
            return _flow_from_script(response.content, flow_name, where, name)
        return _flow_from_bytes(response.content, flow_name, where,
                                self._digests.get(flow_name))


# -- Docker ----------------------------------------------------------------------

class Docker(_Prefect1Storage):
    """Prefect 1's Docker storage, kept with the flow but not built: there is no
    Docker engine or Docker agent here.

    Registration records where the flow would be in the image and builds
    nothing (with a warning); a run of the flow cannot load it on this host
    and its error says which storage to use instead (Script, Local, Git,
    GitHub, S3, ...). The arguments are Prefect 1's and are stored as given.
    """

    _fields = ("registry_url", "base_image", "dockerfile", "dockerignore",
               "python_dependencies", "image_name", "image_tag", "env_vars", "files",
               "prefect_version", "local_image", "ignore_healthchecks", "base_url",
               "tls_config", "build_kwargs", "prefect_directory", "path",
               "extra_dockerfile_commands")
    _repr_fields = ("registry_url", "image_name", "image_tag")

    def __init__(self, registry_url=None, base_image=None, dockerfile=None, dockerignore=None,
                 python_dependencies=None, image_name=None, image_tag=None, env_vars=None,
                 files=None, prefect_version=None, local_image=False,
                 ignore_healthchecks=False, base_url=None, tls_config=False,
                 build_kwargs=None, prefect_directory="/opt/prefect", path=None,
                 stored_as_script=False, extra_dockerfile_commands=None, **kwargs):
        # Refused when made, as Prefect 1 refuses them.
        if base_image and dockerfile:
            raise StorageError(
                f"Docker storage got base_image={base_image!r} and dockerfile="
                f"{dockerfile!r}; give only one of them"
            )
        relative = [p for p in (files or {}) if not os.path.isabs(p)]
        if relative:
            raise StorageError(
                f"Docker storage files: {', '.join(map(repr, relative))} are not absolute "
                "paths; give each file to copy into the image by its absolute path"
            )
        self.registry_url = registry_url
        self.base_image = base_image
        self.dockerfile = dockerfile
        self.dockerignore = dockerignore
        self.python_dependencies = list(python_dependencies or [])
        self.image_name = image_name
        self.image_tag = image_tag
        self.env_vars = dict(env_vars or {})
        self.files = dict(files or {})
        self.prefect_version = prefect_version
        self.local_image = local_image
        self.ignore_healthchecks = ignore_healthchecks
        self.base_url = base_url
        # A docker.tls.TLSConfig cannot be stored as JSON: kept as "TLS on".
        self.tls_config = tls_config if isinstance(tls_config, bool) else True
        self.build_kwargs = dict(build_kwargs or {})
        self.prefect_directory = prefect_directory
        self.path = path
        self.extra_dockerfile_commands = (list(extra_dockerfile_commands)
                                          if extra_dockerfile_commands is not None else None)
        self._set_options(kwargs, stored_as_script=stored_as_script)

    def __repr__(self):
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._repr_fields)
        if self.env_vars:
            shown += f", env_vars={_masked(self.env_vars)}"
        return f"Docker({shown})"

    @property
    def name(self):
        """The image's full name, registry/image:tag (Prefect 1's `name`)."""
        if self.image_name is None or self.image_tag is None:
            raise StorageError(
                "Docker storage has no image_name and image_tag (no image is built here); "
                "give both to name an image built elsewhere"
            )
        return f"{PurePosixPath(self.registry_url or '', self.image_name)}:{self.image_tag}"

    def add_flow(self, flow, project=None, version=None):
        """Record where the flow would be in the image; no image is built here."""
        self._check_add(flow, project, version)
        location = self.path or f"{self.prefect_directory}/flows/{_slug(flow.name)}.prefect"
        warnings.warn(
            f"Flow {flow.name!r} has Docker storage: no Docker image is built here, and "
            "this orchestrator runs flows as local processes, so its runs will fail to "
            "load it. Use Script, Local, Git, GitHub or S3 storage (and LocalRun) to run "
            "it here", UserWarning, stacklevel=2)
        self.flows[flow.name] = location
        self._flows[flow.name] = flow
        return location

    def get_flow(self, flow_name=None):
        flow_name, location = self._entry(flow_name)
        image = (f"image {self.name}" if self.image_name and self.image_tag
                 else "an image that was never built here")
        raise StorageError(
            f"Flow {flow_name!r} has Docker storage: it lives at {location} inside "
            f"{image}, and this orchestrator runs flows as local processes (it has no "
            "Docker agent), so it cannot load it. Give the flow storage this host can "
            "read, e.g. storage=Script('flows/etl.py'), Local(), GitHub(...) or S3(...), "
            "with run_config=LocalRun(), and register it again"
        )


# -- fingerprints --------------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 8

# Task attributes described field by field in `_describe_task`; any other
# attribute (a Constant's value, a result, a target, ...) is described generically.
_TASK_FIELDS = ("name", "slug", "tags", "max_retries", "retry_delay", "timeout", "trigger",
                "skip_on_upstream_skip", "checkpoint", "cache_for", "nout", "log_stdout",
                "run", "__doc__")


def _stable_repr(value):
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{type(value).__qualname__}: repr failed with {type(exc).__name__}>"
    return _ADDRESS.sub("", text)


def _json_key(value):
    return json.dumps(value, sort_keys=True)


def _describe_code(code, depth):
    return {
        "code": code.co_code.hex(),
        "consts": [_describe(c, depth + 1) for c in code.co_consts],
        "names": list(code.co_names),
    }


def _describe_function(fn, depth=0):
    """A function by its source (or bytecode), closure and defaults, never its identity."""
    try:
        body = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        body = _describe_code(fn.__code__, depth)
    closure = []
    for cell in fn.__closure__ or ():
        try:
            closure.append(_describe(cell.cell_contents, depth + 1))
        except ValueError:  # an empty cell
            closure.append(None)
    return {
        "function": fn.__qualname__,
        "body": body,
        "closure": closure,
        "defaults": _describe(fn.__defaults__, depth + 1),
        "kwdefaults": _describe(fn.__kwdefaults__, depth + 1),
    }


def _describe_trigger(trigger):
    """A trigger by name and closure (`some_successful(at_least=2)` keeps its 2).

    Not by source: a trigger is chosen by name, and a new release of the
    built-in triggers should not give every registered flow a new version.
    """
    if not isinstance(trigger, types.FunctionType):
        return _describe(trigger)
    closure = []
    for cell in trigger.__closure__ or ():
        try:
            closure.append(_describe(cell.cell_contents, 1))
        except ValueError:  # an empty cell
            closure.append(None)
    return {"trigger": trigger.__qualname__, "closure": closure}


def _describe(value, depth=0):
    """A JSON-able description of `value` that is the same in every process."""
    if depth > _MAX_DEPTH:
        return _stable_repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, complex)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [_describe(v, depth + 1) for v in value]]
    if isinstance(value, (set, frozenset)):
        # Set order depends on the per-process string hash seed: sort.
        return [type(value).__name__,
                sorted((_describe(v, depth + 1) for v in value), key=_json_key)]
    if isinstance(value, dict):
        items = [[_describe(k, depth + 1), _describe(v, depth + 1)] for k, v in value.items()]
        return ["dict", sorted(items, key=lambda kv: _json_key(kv[0]))]
    if isinstance(value, types.CodeType):
        return _describe_code(value, depth)
    if isinstance(value, types.FunctionType):
        return _describe_function(value, depth)
    if isinstance(value, types.MethodType):
        return ["method", _describe(value.__func__, depth + 1)]
    if isinstance(value, functools.partial):
        return ["partial", _describe(value.func, depth + 1), _describe(value.args, depth + 1),
                _describe(value.keywords, depth + 1)]
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', None)}.{value.__qualname__}"
    if type(value).__repr__ is object.__repr__ and hasattr(value, "__dict__"):
        # The default repr says nothing but the type: describe the attributes.
        return [type(value).__qualname__, _describe(vars(value), depth + 1)]
    return _stable_repr(value)


def _seconds(value):
    return value.total_seconds() if hasattr(value, "total_seconds") else _describe(value)


def _describe_task(task, slug):
    run = task.__dict__.get("run") or getattr(type(task), "run", None)
    if isinstance(run, types.MethodType):
        run = run.__func__
    return {
        "slug": slug,
        "type": type(task).__qualname__,
        "name": task.name,
        "max_retries": task.max_retries,
        "retry_delay": _seconds(task.retry_delay),
        "timeout": _describe(task.timeout),
        "trigger": _describe_trigger(task.trigger),
        "skip_on_upstream_skip": _describe(task.skip_on_upstream_skip),
        "checkpoint": _describe(task.checkpoint),
        "tags": sorted(map(str, task.tags)),
        "cache_for": _seconds(task.cache_for),
        "nout": task.nout,
        "log_stdout": _describe(task.log_stdout),
        "run": _describe(run),
        "attributes": {key: _describe(value) for key, value in vars(task).items()
                       if key not in _TASK_FIELDS},
    }


def flow_fingerprint(flow):
    """A sha256 (hex) of everything that decides how `flow` behaves.

    Covers each task (by slug: type, settings, its trigger by name and
    arguments, the source of its `run` or, without source, its bytecode, other
    attributes such as a Constant's value), the edges, keyword constants,
    parameters and their defaults (a callable default by its source, never by
    a value it returns), reference tasks, handlers and the schedule. Storage,
    run config and executor are not included: they say where and how a flow
    runs, not what it does. The same flow built in another process has the
    same fingerprint (no ids, addresses or hash-seed-dependent orders).
    """
    slugs = flow.slugs

    def slug_of(t):
        return slugs.get(t, t.name)

    description = {
        "name": flow.name,
        "tasks": sorted((_describe_task(t, slug_of(t)) for t in flow.tasks),
                        key=lambda d: d["slug"]),
        "edges": sorted(([slug_of(e.upstream_task), slug_of(e.downstream_task), e.key,
                          e.mapped, e.flattened] for e in flow.edges), key=_json_key),
        "constants": sorted(([slug_of(t), _describe(values)]
                             for t, values in flow.constants.items() if values), key=_json_key),
        "parameters": sorted(([p.name, p.required, _describe(p.default)]
                              for p in flow.parameters()), key=_json_key),
        "reference_tasks": sorted(slug_of(t) for t in flow.reference_tasks()),
        "state_handlers": _describe(flow.state_handlers),
        "terminal_state_handler": _describe(flow.terminal_state_handler),
        "result": _describe(flow.result),
        "schedule": _describe(flow.schedule) if flow.schedule is not None else None,
    }
    text = json.dumps(description, sort_keys=True, separators=(",", ":"), default=_stable_repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
