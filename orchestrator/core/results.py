"""Results: where a checkpointed task result is written and read back.

    @task(result=LocalResult(dir="~/data/out", location="{task_name}-{today}.pkl"))

`location` is a template filled from the run context (`{task_name}`,
`{today}`, `{map_index}`, `{flow_run_id}`, parameters by name, ...). Files are
written to a temporary name and renamed, so a reader never sees half a file.

Runs from the store pack their results (`PackedResult`) under `[results]
location`: a folder, or an fsspec URL (`s3://bucket/prefix`, `gcs://...`,
`az://...`, `file:///...`, `memory://` in tests) that every host can read, so a
run resumed on another host finds the checkpoints of its finished tasks.
"""

import os
import re
import string
import tempfile
import threading
import uuid
from pathlib import Path

from ..exceptions import ResultError
from .serializers import PickleSerializer

__all__ = ["Result", "LocalResult", "PackedResult", "SerializationError",
           "unpicklable_message", "is_url"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# fsspec protocol -> (the package that implements it, our extra that installs it)
FILESYSTEM_PACKAGES = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
    "adl": ("adlfs", "azure"),
}


def is_url(location):
    """Is `location` an fsspec URL (`s3://bucket/prefix`) rather than a path?"""
    return _URL.match(str(location)) is not None


class SerializationError(ResultError):
    """The serializer could not turn a value into bytes; `.error` says why."""

    def __init__(self, value, error):
        super().__init__(f"cannot serialize {type(value).__name__}: {error}")
        self.value = value
        self.error = error


CHECKPOINT_FIX = (
    "Turn off checkpointing for this task with @task(checkpoint=False), or create "
    "the client or connection inside the task that uses it instead of returning it."
)
PROCESSES_FIX = (
    "Create the client or connection inside the task that uses it instead of "
    "returning it, or run the flow on LocalExecutor or "
    "LocalDaskExecutor(scheduler='threads'), where results stay in one process."
)


def unpicklable_message(task_name, value, exc, why, fix=CHECKPOINT_FIX):
    """The error text for a result that cannot be serialized."""
    return (
        f"Task {task_name!r} returned a {type(value).__module__}.{type(value).__qualname__}, "
        f"which cannot be pickled ({exc}), and {why}. {fix}"
    )


class Result:
    """Base class: a serializer and a location template."""

    def __init__(self, location=None, serializer=None):
        self.location = location
        self.serializer = serializer or PickleSerializer()

    def format_location(self, template, /, **values):
        template = template if template is not None else "{flow_run_id}/{task_slug}{map_suffix}.result"
        try:
            return string.Formatter().vformat(template, (), _Missing(values))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ResultError(
                f"Result location {template!r} cannot be filled in: {exc}. "
                f"Available names: {', '.join(sorted(values))}"
            ) from None

    def write(self, value, /, **values):
        """Serialize `value` to this result's location; returns the location."""
        raise NotImplementedError

    def read(self, location):
        raise NotImplementedError

    def exists(self, location, /, **values):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(location={self.location!r})"


class _Missing(dict):
    def __missing__(self, key):
        raise KeyError(key)


class LocalResult(Result):
    """A file under `dir` (default `$ORCHESTRATOR_HOME/results`)."""

    def __init__(self, dir=None, location=None, serializer=None, validate_dir=True):
        super().__init__(location=location, serializer=serializer)
        self._dir = dir
        if dir is not None and validate_dir:
            path = Path(os.path.expanduser(str(dir)))
            if path.exists() and not path.is_dir():
                raise ResultError(
                    f"LocalResult dir {str(dir)!r} exists and is not a directory; "
                    "point dir at a folder"
                )

    @property
    def dir(self):
        if self._dir is not None:
            return Path(os.path.expanduser(str(self._dir)))
        from ..config import home_dir

        return home_dir() / "results"

    def path_for(self, location):
        path = Path(location)
        return path if path.is_absolute() else self.dir / path

    def write(self, value, /, **values):
        location = self.format_location(values.pop("_target", None) or self.location,
                                        **values)
        try:
            data = self.serializer.serialize(value)
        except Exception as exc:
            raise SerializationError(value, exc) from exc
        path = self.path_for(location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise ResultError(
                f"Cannot write result to {path}: {exc.strerror}. Check that the "
                "directory is writable, or set another dir on LocalResult"
            ) from None
        return str(path)

    def read(self, location):
        path = self.path_for(location)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ResultError(f"Cannot read result {path}: {exc.strerror}") from None
        return self.serializer.deserialize(data)

    def exists(self, location, /, **values):
        return self.path_for(self.format_location(location, **values)).exists()


class PackedResult(Result):
    """Every result of a run appended to one file per process:
    `<dir>/<flow_run_id>.<pid>-<token>.results`.

    The default for runs started from the store. A run mapping over 10,000
    items writes one file, not 10,000: each result is an append under a thread
    lock, and its location is `<file>#<offset>+<length>`. Each process has its
    own file (the random token keeps two hosts' processes with one pid apart),
    so workers never contend for one. In the run's own process the appends are
    buffered; `flush_all()` writes them before the task states that name them
    are stored and at the end of the run (a read of the same file flushes
    first), so a stored location always has its bytes. Other processes (Dask
    workers) write through at once.

    `dir` may be an fsspec URL instead (`s3://bucket/prefix`): object stores
    cannot append, so the run's process keeps its results in memory and each
    flush writes them as one new object, `<run>.<pid>-<token>.<part>.results`
    (never changed after); a Dask worker writes one object per result. Reads
    go by the location alone, so any PackedResult reads any location.
    """

    _files = {}
    _files_lock = threading.Lock()
    _parts = {}   # (pid, url, run_id) -> _Parts: results at a URL not yet written
    _process = (None, "")   # (pid, its random token)

    def __init__(self, dir, serializer=None):
        super().__init__(location=None, serializer=serializer)
        self.dir = str(dir).rstrip("/") if is_url(dir) else Path(dir)
        self.origin_pid = os.getpid()

    def __getstate__(self):
        return {"dir": self.dir, "serializer": self.serializer, "location": None,
                "origin_pid": self.origin_pid}

    @classmethod
    def _process_name(cls):
        """`<pid>-<token>`, new in a forked child (its pid differs)."""
        pid, token = cls._process
        if pid != os.getpid():
            pid, token = cls._process = (os.getpid(), uuid.uuid4().hex[:8])
        return f"{pid}-{token}"

    def _file(self, run_id):
        key = (os.getpid(), str(self.dir), run_id)
        with self._files_lock:
            entry = self._files.get(key)
            if entry is None:
                path = self.dir / f"{run_id}.{self._process_name()}.results"
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                buffered = os.getpid() == self.origin_pid
                # Results may hold what secrets gave: readable by their owner only.
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                fh = os.fdopen(fd, "ab", buffering=(1 << 20) if buffered else 0)
                entry = self._files[key] = [path, fh, fh.seek(0, os.SEEK_END),
                                            threading.Lock()]
            return entry

    def write(self, value, /, **values):
        run_id = str(values.get("flow_run_id") or "results").replace(os.sep, "_")
        try:
            data = self.serializer.serialize(value)
        except Exception as exc:
            raise SerializationError(value, exc) from exc
        if isinstance(self.dir, str):
            return self._write_to_url(run_id, data)
        try:
            entry = self._file(run_id)
            path, fh, _, lock = entry
            with lock:
                offset = entry[2]
                fh.write(data)
                entry[2] += len(data)
        except OSError as exc:
            raise ResultError(
                f"Cannot write result under {self.dir}: {exc.strerror}. Check that the "
                "directory is writable") from None
        return f"{path}#{offset}+{len(data)}"

    def _write_to_url(self, run_id, data):
        _filesystem(self.dir)  # a missing package or a bad URL: said at the first write
        key = (os.getpid(), self.dir, run_id)
        with self._files_lock:
            parts = self._parts.get(key)
            if parts is None:
                parts = self._parts[key] = _Parts(
                    self.dir, f"{run_id}.{self._process_name()}",
                    buffered=os.getpid() == self.origin_pid)
        with parts.lock:
            name = parts.name()
            if parts.buffered:
                offset = len(parts.buffer)
                parts.buffer += data
                return f"{self.dir}/{name}#{offset}+{len(data)}"
            parts.number += 1
        _put(self.dir, name, data)
        return f"{self.dir}/{name}#0+{len(data)}"

    @classmethod
    def flush_all(cls):
        """Write this process's buffered results (files, and objects at URLs).

        Raises OSError when a file cannot be written (a full disk: try again), and
        ResultError when an object cannot be; what was not written is kept for the
        next call."""
        with cls._files_lock:
            entries = [e for key, e in cls._files.items() if key[0] == os.getpid()]
            parts = [p for key, p in cls._parts.items() if key[0] == os.getpid()]
        for _, fh, _, lock in entries:
            with lock:
                fh.flush()
        failure = None
        for part in parts:
            try:
                part.flush()
            except ResultError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    @classmethod
    def close_all(cls):
        """Write and close this process's result files, and forget them (a later
        write opens its file anew)."""
        try:
            cls.flush_all()
        finally:  # (closed all the same: what could not be written is lost)
            with cls._files_lock:
                mine = [key for key in cls._files if key[0] == os.getpid()]
                entries = [cls._files.pop(key) for key in mine]
            for _, fh, _, lock in entries:
                with lock:
                    try:
                        fh.close()
                    except OSError:
                        pass

    @classmethod
    def forget_buffers(cls):
        """Drop this process's results at URLs that are still held in memory, and
        take a new token, as a new process starts: what was not flushed is lost,
        and later parts get new names (a written part never changes)."""
        with cls._files_lock:
            for key in [k for k in cls._parts if k[0] == os.getpid()]:
                del cls._parts[key]
            cls._process = (None, "")

    def read(self, location):
        path, _, span = str(location).rpartition("#")
        try:
            offset, length = (int(x) for x in span.split("+"))
        except ValueError:
            raise ResultError(f"{location!r} is not a packed result location") from None
        if is_url(path):
            data = self._read_from_url(path, offset, length)
        else:
            data = self._read_file(path, offset, length)
        if len(data) != length:
            raise ResultError(f"Result {location} is cut short; the file was truncated")
        return self.serializer.deserialize(data)

    def _read_file(self, path, offset, length):
        with self._files_lock:
            mine = [e for key, e in self._files.items()
                    if key[0] == os.getpid() and str(e[0]) == path]
        for _, fh, _, lock in mine:
            with lock:
                fh.flush()
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except OSError as exc:
            raise ResultError(f"Cannot read result {path}: {exc.strerror}") from None

    def _read_from_url(self, url, offset, length):
        folder, _, name = url.rpartition("/")
        with self._files_lock:
            mine = [p for key, p in self._parts.items()
                    if key[0] == os.getpid() and p.url == folder]
        for parts in mine:
            data = parts.held(name)
            if data is not None:
                return bytes(data[offset:offset + length])
        fs, root = _filesystem(folder)
        try:
            return fs.cat_file(f"{root}/{name}", start=offset, end=offset + length)
        except FileNotFoundError:
            raise ResultError(f"Cannot read result {url}: no such object") from None
        except Exception as exc:
            raise ResultError(
                f"Cannot read result {url}: {type(exc).__name__}: {exc}") from None

    def exists(self, location, /, **values):
        try:
            self.read(location)
        except ResultError:
            return False
        return True


class _Parts:
    """A process's results of one run at a URL: the part being filled in memory,
    and the parts being (or not yet) written."""

    def __init__(self, url, prefix, buffered):
        self.url = url
        self.prefix = prefix
        self.buffered = buffered
        self.number = 0
        self.buffer = bytearray()
        self.unwritten = {}   # object name -> bytes
        self.lock = threading.Lock()

    def name(self):
        return f"{self.prefix}.{self.number}.results"

    def held(self, name):
        with self.lock:
            if name == self.name():
                return self.buffer
            return self.unwritten.get(name)

    def flush(self):
        with self.lock:
            if self.buffer:
                self.unwritten[self.name()] = bytes(self.buffer)
                self.buffer = bytearray()
                self.number += 1
            waiting = list(self.unwritten.items())
        for name, data in waiting:
            _put(self.url, name, data)  # a second writer of one part writes the same bytes
            with self.lock:
                self.unwritten.pop(name, None)


_filesystems = {}


def _filesystem(url):
    """(the fsspec filesystem, the path inside it) for `url`; ResultError naming
    what to install when fsspec or the store's package is missing."""
    found = _filesystems.get(url)
    if found is not None:
        return found
    protocol = url.split("://", 1)[0].lower()
    package, extra = FILESYSTEM_PACKAGES.get(protocol, (None, None))
    needs = f"fsspec and {package}" if package else "fsspec"
    install = (f"install it with `pip install -e '.[{extra}]'` (or `pip install fsspec "
               f"{package}`) on every host that runs flows" if extra else
               "install it with `pip install fsspec` on every host that runs flows")
    try:
        import fsspec
    except ImportError:
        raise ResultError(
            f"The results location {url} needs the {needs} package"
            f"{'s' if package else ''}, which {'are' if package else 'is'} not installed; "
            f"{install}, or set [results] location to a path") from None
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise ResultError(
            f"The results location {url} needs the {package or protocol} package ({exc}); "
            f"{install}") from None
    except ValueError as exc:
        raise ResultError(
            f"The results location {url} is not a URL fsspec can open ({exc}); use a "
            "path, or a URL such as s3://bucket/prefix, gcs://bucket/prefix, "
            "az://container/prefix or file:///shared/results") from None
    except Exception as exc:
        raise ResultError(
            f"The results location {url} cannot be opened ({type(exc).__name__}: {exc}); "
            "check the URL and this host's credentials") from None
    if "file" in _protocols(fs):  # object stores need no folders (nor new buckets)
        try:
            fs.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise ResultError(
                f"Cannot create the results location {url}: {exc.strerror}; point "
                "[results] location at a folder this host can write to") from None
    _filesystems[url] = (fs, root.rstrip("/"))
    return _filesystems[url]


def _protocols(fs):
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _put(url, name, data):
    fs, root = _filesystem(url)
    try:
        fs.pipe_file(f"{root}/{name}", bytes(data))
    except Exception as exc:
        raise ResultError(
            f"Cannot write result {url}/{name}: {type(exc).__name__}: {exc}. Check that "
            "the results location is writable from this host") from None
