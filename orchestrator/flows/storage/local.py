"""`Local` storage: the flow kept on the host that registered it, pickled under
the flows directory (or to a file of the user's choosing), or as its script."""

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import socket
from pathlib import Path, PurePosixPath

import cloudpickle

from ...config import home_dir
from ...version import __version__
from ..loading import FlowFileError, load_flows_from_file
from .base import Storage, StorageError, _check_registration, _flow_file_being_loaded, _pick
from .pickled import _python_version, _safe_name, _slug, _unpickle_flow, _write_atomically
from .prefect1 import _options_from_ref, _options_ref, _storage_options, _warn_ignored_options
from .sources import _MODULE_NAME, Module

# The package's name, not __name__: all of storage logs through one logger,
# the name logging settings and tests select its records by (a child logger's
# records would carry the child's name).
logger = logging.getLogger("orchestrator.flows.storage")


@contextlib.contextmanager
def _file_lock(path):
    """Hold the exclusive lock on file `path` that every process on the host
    takes before it writes a flow there (flock(2), as filelock takes it: the
    two exclude each other). Not filelock itself: importing it costs a process
    27 ms and every fork a hook of its own, and a run's process, which only
    reads flows (without the lock), must not pay for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (and with it, the lock)


def _verified(data, meta_text):
    """The metadata of a stored pickle, if it is whole and names the pickle's
    sha256; else what is wrong: "invalid" (the metadata) or "mismatch"."""
    try:
        meta = json.loads(meta_text)
        expected = meta["sha256"]
    except (ValueError, KeyError, TypeError):
        return "invalid"
    return meta if hashlib.sha256(data).hexdigest() == expected else "mismatch"


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
            with _file_lock(path.parent / ".lock"):
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
        try:
            # Each file is replaced whole (written aside, then renamed), so a read
            # without the lock sees a whole pickle and whole metadata; only when
            # the two disagree (a registration between the reads) is it read
            # again under the lock that registration holds.
            data, meta_text = self._read_files(path)
            meta = _verified(data, meta_text)
            if isinstance(meta, str):
                with _file_lock(path.parent / ".lock"):
                    data, meta_text = self._read_files(path)
        except FileNotFoundError:
            if not path.exists():
                raise self._missing(flow_name, path, entry) from None
            raise StorageError(
                f"Flow {flow_name!r} in Local storage is corrupt: its metadata file "
                f"{path.with_suffix('.json')} is missing; register the flow again"
            ) from None
        except OSError as exc:
            raise StorageError(f"Cannot read flow {flow_name!r} from {path}: {exc}") from None
        if isinstance(meta, str):  # read again under the lock: whole now, or corrupt
            meta = _verified(data, meta_text)
            if isinstance(meta, str):
                what = (f"{path.with_suffix('.json')} is not valid metadata"
                        if meta == "invalid" else
                        f"{path} does not match the sha256 recorded when it was registered")
                raise StorageError(f"Flow {flow_name!r} in Local storage is corrupt: {what}; "
                                   "register the flow again")
        return self._unpickle(flow_name, path, data, meta)

    @staticmethod
    def _read_files(path):
        return path.read_bytes(), path.with_suffix(".json").read_text(encoding="utf-8")

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
