"""Results: where a checkpointed task result is written and read back.

    @task(result=LocalResult(dir="~/data/out", location="{task_name}-{today}.pkl"))

`location` is a template filled from the run context (`{task_name}`,
`{today}`, `{map_index}`, `{flow_run_id}`, parameters by name, ...). Files are
written to a temporary name and renamed, so a reader never sees half a file.
"""

import os
import string
import tempfile
import threading
from pathlib import Path

from ..exceptions import ResultError
from .serializers import PickleSerializer

__all__ = ["Result", "LocalResult", "PackedResult", "SerializationError",
           "unpicklable_message"]


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
    `<dir>/<flow_run_id>.<pid>.results`.

    The default for runs started from the store. A run mapping over 10,000
    items writes one file, not 10,000: each result is an append under a thread
    lock, and its location is `<file>#<offset>+<length>`. Each process has its
    own file, so workers never contend for one. In the run's own process the
    appends are buffered and `flush_all()` writes them at the end of the run
    (a read of the same file flushes first); a crash can only lose results
    whose tasks a resumed run then runs again. Other processes (Dask workers)
    write through at once.
    """

    _files = {}
    _files_lock = threading.Lock()

    def __init__(self, dir, serializer=None):
        super().__init__(location=None, serializer=serializer)
        self.dir = Path(dir)
        self.origin_pid = os.getpid()

    def __getstate__(self):
        return {"dir": self.dir, "serializer": self.serializer, "location": None,
                "origin_pid": self.origin_pid}

    def _file(self, run_id):
        key = (os.getpid(), str(self.dir), run_id)
        with self._files_lock:
            entry = self._files.get(key)
            if entry is None:
                path = self.dir / f"{run_id}.{os.getpid()}.results"
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

    @classmethod
    def flush_all(cls):
        """Write this process's buffered results to disk."""
        with cls._files_lock:
            entries = [e for key, e in cls._files.items() if key[0] == os.getpid()]
        for _, fh, _, lock in entries:
            with lock:
                fh.flush()

    def read(self, location):
        path, _, span = str(location).rpartition("#")
        try:
            offset, length = (int(x) for x in span.split("+"))
        except ValueError:
            raise ResultError(f"{location!r} is not a packed result location") from None
        with self._files_lock:
            mine = [e for key, e in self._files.items()
                    if key[0] == os.getpid() and str(e[0]) == path]
        for _, fh, _, lock in mine:
            with lock:
                fh.flush()
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
        except OSError as exc:
            raise ResultError(f"Cannot read result {path}: {exc.strerror}") from None
        if len(data) != length:
            raise ResultError(f"Result {location} is cut short; the file was truncated")
        return self.serializer.deserialize(data)

    def exists(self, location, /, **values):
        try:
            self.read(location)
        except ResultError:
            return False
        return True
