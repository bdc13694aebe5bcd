"""Flow storage: where a registered flow is kept, and how a run loads it back.

Registration calls `storage.add_flow(flow, project, version)` and saves
`storage.to_ref()` (a JSON dict) with the flow version; the process that runs
the flow rebuilds the storage with `Storage.from_ref(ref)` and calls
`get_flow(name)`.

    Local()                       # default: a cloudpickle under $ORCHESTRATOR_HOME/flows
    Script("flows/etl.py")        # run the file again at run time: edits take effect
    Module("mypackage.flows")     # import a module on the run's sys.path
    Git("https://host/repo.git", "flows/etl.py", ref="v1.2")  # a file in a git checkout

Local storage only works on the host that registered the flow (the Prefect 1
FAQ's `ModuleNotFoundError` case); its errors say so and name the storage
that works elsewhere. Pickles are loaded only from inside the storage's own
flows directory, never from a path given by anyone else.

`flow_fingerprint(flow)` is a digest of what makes a flow behave as it does,
so registering an unchanged flow can keep its version.
"""

import functools
import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path, PurePosixPath

import cloudpickle
import filelock

from . import __version__
from .config import home_dir
from .core.flow import Flow
from .exceptions import OrchestratorError
from .refs import Referable
from .flow_files import FlowFileError, flows_in, load_flows_from_file, pick_flow

__all__ = ["StorageError", "Storage", "Local", "Script", "Module", "Git",
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



def _bind_source_flow(storage, flow, project, version, what):
    """Registration for storage that loads flows from source (Script, Module):
    check the flow can be found there, and remember its name."""
    _check_registration(flow, project, version)
    if storage.flow_name is not None and storage.flow_name != flow.name:
        raise StorageError(
            f"{what} is set to flow {storage.flow_name!r} but was given flow "
            f"{flow.name!r}; use one {type(storage).__name__} storage per flow")
    storage.get_flow(flow.name)
    storage.flow_name = flow.name


def _check_registration(flow, project, version):
    if not isinstance(flow, Flow):
        raise StorageError(
            f"add_flow needs a Flow, got {flow!r} ({type(flow).__name__}); pass the "
            "object made by `with Flow(...) as flow:`"
        )
    if not isinstance(project, str) or not project.strip():
        raise StorageError(
            f"Project {project!r} for flow {flow.name!r} must be a non-empty string"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise StorageError(
            f"Version {version!r} for flow {flow.name!r} must be a whole number >= 0"
        )


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
    """The flow pickled (cloudpickle) into `$ORCHESTRATOR_HOME/flows/<project>/<flow>/v<N>.pkl`.

    Only the host that registered the flow can run it; that host's name is a
    default label, so only its agents pick the flow up (`add_default_labels=False`
    drops it). `directory` replaces `$ORCHESTRATOR_HOME/flows`.
    """

    def __init__(self, directory=None, add_default_labels=True):
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise StorageError(
                f"Local storage directory={directory!r} is not a path; pass a string or "
                "leave it out to use $ORCHESTRATOR_HOME/flows"
            )
        self.directory = os.path.abspath(os.fspath(directory)) if directory is not None else None
        self.add_default_labels = bool(add_default_labels)
        self.host = socket.gethostname()
        # flow name -> {"path": relative to the flows directory, "host", "python", ...}
        self.flows = {}

    def __repr__(self):
        return f"Local(directory={self.directory!r}, flows={sorted(self.flows)})"

    @property
    def labels(self):
        return [self.host] if self.add_default_labels else []

    def flows_directory(self):
        """The directory every pickle of this storage lives in (read at call time)."""
        if self.directory is not None:
            return Path(self.directory)
        return home_dir() / "flows"

    def add_flow(self, flow, project, version):
        _check_registration(flow, project, version)
        try:
            data = cloudpickle.dumps(flow)
        except Exception as exc:
            raise StorageError(
                f"Flow {flow.name!r} cannot be pickled for Local storage "
                f"({type(exc).__name__}: {exc}); create clients and connections inside "
                "tasks instead of at flow definition, or use Script, Module or Git "
                "storage, which store no pickle"
            ) from None
        relative = PurePosixPath(_safe_name(project), _safe_name(flow.name), f"v{version}.pkl")
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
        logger.debug("Stored flow %r version %s at %s", flow.name, version, path)

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

    def get_flow(self, flow_name):
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

    def _unpickle(self, flow_name, path, data, meta):
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
                    f"Flow {flow_name!r} could not be unpickled from {path} "
                    f"({type(exc).__name__}: {exc}): it was registered with Python "
                    f"{then_python} and cloudpickle {then_cp}, this process has Python "
                    f"{now_python} and cloudpickle {now_cp}. Register the flow again "
                    "with this environment, or use Script or Git storage"
                ) from None
            raise StorageError(
                f"Flow {flow_name!r} could not be unpickled from {path} "
                f"({type(exc).__name__}: {exc}); register the flow again"
            ) from None
        if not isinstance(flow, Flow):
            raise StorageError(
                f"{path} holds a {type(flow).__name__}, not a Flow, so it is corrupt; "
                "register the flow again"
            )
        return flow

    def to_ref(self):
        return {
            "type": "Local",
            "directory": self.directory,
            "add_default_labels": self.add_default_labels,
            "host": self.host,
            "flows": {name: dict(entry) for name, entry in self.flows.items()},
        }

    @classmethod
    def _from_ref(cls, ref):
        storage = cls(directory=ref.get("directory"),
                      add_default_labels=ref.get("add_default_labels", True))
        storage.host = ref.get("host", storage.host)
        flows = ref.get("flows", {})
        if not isinstance(flows, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("path"), str) for e in flows.values()):
            raise TypeError("'flows' must map flow names to {'path': ...}")
        storage.flows = {name: dict(entry) for name, entry in flows.items()}
        return storage


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

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Module(Storage):
    """A flow defined at the top level of an importable module (`mypackage.flows`)."""

    def __init__(self, module, flow_name=None):
        if not isinstance(module, str) or not _MODULE_NAME.match(module):
            raise StorageError(
                f"Module storage module={module!r} is not a module name; give a dotted "
                "name such as 'mypackage.flows'"
            )
        self.module = module
        self.flow_name = flow_name

    def __repr__(self):
        return f"Module(module={self.module!r}, flow_name={self.flow_name!r})"

    def add_flow(self, flow, project, version):
        _bind_source_flow(self, flow, project, version,
                          f"Module storage for {self.module!r}")

    def _import(self):
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if self.module == missing or self.module.startswith(missing + "."):
                raise StorageError(
                    f"Module storage cannot import {self.module!r} ({exc}); install the "
                    "package that provides it, or add its directory to sys.path "
                    "(PYTHONPATH) of the process that runs the flow"
                ) from None
            raise StorageError(
                f"Importing module {self.module!r} failed: {exc}; install {missing!r} "
                "in the environment that runs the flow"
            ) from None
        except Exception as exc:
            raise StorageError(
                f"Importing module {self.module!r} failed with {type(exc).__name__}: "
                f"{exc}; fix the module so importing it only defines flows"
            ) from None

    def get_flow(self, flow_name=None):
        module = self._import()
        flows = flows_in(vars(module))
        if not flows:
            raise StorageError(
                f"Module {self.module!r} ({getattr(module, '__file__', None)}) defines no "
                "Flow at its top level; define one with `with Flow(\"name\") as flow:`"
            )
        name = flow_name if flow_name is not None else self.flow_name
        return _pick(flows, name, f"Module {self.module!r}",
                     "choose one with Module(module, flow_name=...)")

    def to_ref(self):
        return {"type": "Module", "module": self.module, "flow_name": self.flow_name}

    @classmethod
    def _from_ref(cls, ref):
        return cls(ref["module"], flow_name=ref.get("flow_name"))


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


class Git(Storage):
    """A flow file in a git repository, checked out at `ref` (branch, tag or commit).

    The repository is cloned once per host into `$ORCHESTRATOR_HOME/git/<sha1 of
    repo>/` (or under `cache_dir`) and fetched at every `get_flow`, so a moved
    branch is picked up. A file lock next to the checkout keeps concurrent
    runs on one host from checking out over each other.
    """

    timeout = 300  # seconds for any one git command, and for waiting on the lock

    def __init__(self, repo, path, ref="main", cache_dir=None):
        if not isinstance(repo, str) or not repo.strip() or repo.startswith("-"):
            raise StorageError(
                f"Git storage repo={repo!r} is not a repository URL or path; give e.g. "
                "'https://github.com/org/flows.git' or '/srv/git/flows'"
            )
        if "://" not in repo and os.path.isdir(repo):
            repo = os.path.abspath(repo)
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
        if (not isinstance(ref, str) or not ref or ref.startswith("-")
                or any(c.isspace() or ord(c) < 32 for c in ref)):
            raise StorageError(
                f"Git storage ref={ref!r} is not a branch, tag or commit name; give e.g. "
                "'main', 'v1.2' or a commit sha"
            )
        self.repo = repo
        self.path = pure.as_posix()
        self.ref = ref
        self.cache_dir = os.path.abspath(os.fspath(cache_dir)) if cache_dir is not None else None

    def __repr__(self):
        return f"Git(repo={self.repo!r}, path={self.path!r}, ref={self.ref!r})"

    def checkout_directory(self):
        """Where this repository is cloned on this host (read at call time)."""
        base = Path(self.cache_dir) if self.cache_dir is not None else home_dir() / "git"
        return base / hashlib.sha1(self.repo.encode("utf-8")).hexdigest()

    def add_flow(self, flow, project, version):
        _check_registration(flow, project, version)
        self.get_flow(flow.name)

    def _git(self, *args, cwd=None):
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        try:
            return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise StorageError(
                "Git storage needs the `git` program, which is not on PATH; install git "
                "on the host that runs the flow"
            ) from None
        except subprocess.TimeoutExpired:
            raise StorageError(
                f"`git {args[0]}` for {self.repo!r} did not finish within {self.timeout} s; "
                "check the network and that the repository URL is right"
            ) from None

    def _update_checkout(self, checkout):
        if not (checkout / ".git").is_dir():
            shutil.rmtree(checkout, ignore_errors=True)
            partial = checkout.with_name(checkout.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            done = self._git("clone", "--quiet", "--no-checkout", "--", self.repo, str(partial))
            if done.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                raise StorageError(
                    f"Git storage cannot clone {self.repo!r}: {_git_error_line(done.stderr)}; "
                    "check the URL and that this host can reach it (network, credentials)"
                )
            os.replace(partial, checkout)
            logger.info("Cloned %s into %s", self.repo, checkout)
        else:
            done = self._git("fetch", "--quiet", "--force", "--prune", "--tags", "origin",
                             cwd=checkout)
            if done.returncode != 0:
                raise StorageError(
                    f"Git storage cannot fetch {self.repo!r}: {_git_error_line(done.stderr)}; "
                    "check the URL and that this host can reach it (network, credentials)"
                )

    def _resolve_ref(self, checkout):
        for candidate in (f"refs/remotes/origin/{self.ref}", f"refs/tags/{self.ref}", self.ref):
            done = self._git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}",
                             cwd=checkout)
            if done.returncode == 0:
                return done.stdout.strip()
        done = self._git("rev-parse", "--verify", f"{self.ref}^{{commit}}", cwd=checkout)
        listed = self._git("for-each-ref", "--format=%(refname)", "refs/remotes/origin",
                           "refs/tags", cwd=checkout).stdout.split()
        branches = sorted(r[len("refs/remotes/origin/"):] for r in listed
                          if r.startswith("refs/remotes/origin/") and not r.endswith("/HEAD"))
        tags = sorted(r[len("refs/tags/"):] for r in listed if r.startswith("refs/tags/"))
        raise StorageError(
            f"Git storage: ref {self.ref!r} is not a branch, tag or commit of {self.repo!r} "
            f"(git: {_git_error_line(done.stderr)}); branches: {', '.join(branches) or 'none'}; "
            f"tags: {', '.join(tags) or 'none'}. Use one of them or a commit sha"
        )

    def _check_out(self, checkout, commit):
        done = self._git("checkout", "--quiet", "--force", "--detach", commit, cwd=checkout)
        if done.returncode != 0:
            raise StorageError(
                f"Git storage cannot check out {self.ref!r} ({commit[:12]}) of "
                f"{self.repo!r}: {_git_error_line(done.stderr)}; delete {checkout} to clone afresh"
            )
        self._git("clean", "-ffdxq", cwd=checkout)

    def _missing_path_error(self, checkout, commit):
        names = self._git("ls-tree", "-r", "--name-only", commit, cwd=checkout).stdout.split("\n")
        python_files = [n for n in names if n.endswith(".py")]
        shown = ", ".join(python_files[:20]) or "none"
        if len(python_files) > 20:
            shown += f", ... ({len(python_files)} in all)"
        return StorageError(
            f"Git storage: {self.path!r} is not a file in {self.repo!r} at ref {self.ref!r} "
            f"(commit {commit[:12]}); .py files there: {shown}. Fix the path or the ref"
        )

    def get_flow(self, flow_name=None):
        checkout = self.checkout_directory()
        checkout.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(checkout) + ".lock", timeout=self.timeout)
        try:
            with lock:
                self._update_checkout(checkout)
                commit = self._resolve_ref(checkout)
                self._check_out(checkout, commit)
                flow_path = (checkout / self.path).resolve()
                if not flow_path.is_relative_to(checkout.resolve()) or not flow_path.is_file():
                    raise self._missing_path_error(checkout, commit)
                # Loaded under the lock: another run may check out another ref next.
                where = (f"{self.path} in {self.repo!r} at {self.ref!r} "
                         f"(commit {commit[:12]})")
                try:
                    flows = load_flows_from_file(flow_path)
                except FlowFileError as exc:
                    raise StorageError(f"Git storage, {where}: {exc}") from None
                return _pick(flows, flow_name, where, "pass the flow's name to get_flow")
        except filelock.Timeout:
            raise StorageError(
                f"Git storage: another process has held {lock.lock_file} for more than "
                f"{self.timeout} s; wait for that run to finish, or stop the stuck process "
                "that holds the lock"
            ) from None

    def to_ref(self):
        return {"type": "Git", "repo": self.repo, "path": self.path, "ref": self.ref,
                "cache_dir": self.cache_dir}

    @classmethod
    def _from_ref(cls, ref):
        return cls(ref["repo"], ref["path"], ref=ref.get("ref", "main"),
                   cache_dir=ref.get("cache_dir"))


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
