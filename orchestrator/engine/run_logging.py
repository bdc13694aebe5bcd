"""Run logging: loggers tied to the running flow and task.

Every record that reaches the orchestrator's handler is stamped with
`flow_name`, `flow_run_id`, `task_name`, `task_slug` and `map_index` from the
run context. Loggers named in `[logging] extra_loggers` share the handler.
`log_stdout=True` routes a task's `print` into its logger, per task even when
tasks run on several threads at once. On a worker in another process, records
are captured per task and carried back to the flow's process, where they are
logged again, so nothing logged on a Dask worker is lost.
"""

import contextvars
import logging
import sys
import threading

from ..core.context import current_stack
from ..config import load_config

__all__ = ["get_logger", "task_logger", "ensure_logging", "configure_logging"]

ROOT = "orchestrator"
_STAMPS = ("flow_name", "flow_run_id", "task_name", "task_slug", "map_index")

_lock = threading.Lock()
_configured = None  # the [logging] settings it was configured with
_handler = None
_handled_extra = ()
_capture = contextvars.ContextVar("orchestrator_log_capture", default=None)
_stdout_target = contextvars.ContextVar("orchestrator_stdout_target", default=None)


# The values to hide in log lines (secrets read in this process): the one
# registry, which the store-backed log handler reads too.
_redactions = frozenset()


def add_redaction(value):
    """Hide `value` (a secret) in every log record from now on."""
    global _redactions
    if value:
        with _lock:
            _redactions = _redactions | {str(value)}


def redacted_values():
    """The values hidden in log records (replaced, never changed in place: safe to
    read without the lock)."""
    return _redactions


def _redact(record):
    message = record.getMessage()
    hidden = message
    for value in _redactions:
        hidden = hidden.replace(value, "********")
    if hidden != message:
        record.msg, record.args = hidden, None


def stamp_record(record):
    """Set the run identity (and hide secrets) on a record, once."""
    if getattr(record, "flow_name", None) is not None:
        return
    if _redactions:
        _redact(record)
    stack = current_stack()
    for name in _STAMPS:
        if getattr(record, name, None) is not None:
            continue  # given by the caller (extra=...): the task run it belongs to
        value = None
        for layer in stack:
            if name in layer:
                value = layer[name]
                break
        setattr(record, name, value)


class RunContextFilter(logging.Filter):
    """Stamps run identity on records; drops them here while they are being
    captured for another process (they are logged there instead)."""

    def filter(self, record):
        stamp_record(record)
        return _capture.get() is None


class _CaptureHandler(logging.Handler):
    def emit(self, record):
        buffer = _capture.get()
        if buffer is not None:
            stamp_record(record)
            buffer.append(record_to_dict(record, self))


_capture_handler = _CaptureHandler()


def record_to_dict(record, handler=None):
    """A picklable copy of `record` with its message already formatted."""
    data = {}
    for key, value in record.__dict__.items():
        if value is None or isinstance(value, (str, int, float, bool)):
            data[key] = value
    data["msg"] = record.getMessage()
    data["args"] = None
    if record.exc_info:
        data["exc_text"] = logging.Formatter().formatException(record.exc_info)
    data["exc_info"] = None
    return data


def emit_captured(records):
    """Log again, in this process, records captured on a worker."""
    for data in records:
        record = logging.makeLogRecord(data)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def configure_logging(config=None):
    """(Re)configure the orchestrator's loggers from `config` (default: load it)."""
    global _configured, _handler, _handled_extra
    from ..config import log_formatter  # ConfigError naming a bad format

    config = config if config is not None else load_config()
    settings = config["logging"]
    with _lock:
        level = getattr(logging, settings["level"])
        formatter = log_formatter(settings)
        root = logging.getLogger(ROOT)
        if _handler is not None:
            for name in (ROOT,) + _handled_extra:
                logging.getLogger(name).removeHandler(_handler)
        _handler = logging.StreamHandler(_StderrProxy())
        _handler.setFormatter(formatter)
        _handler.addFilter(RunContextFilter())
        root.setLevel(level)
        root.propagate = bool(settings.get("propagate", False))
        root.addHandler(_handler)
        _handled_extra = tuple(settings.get("extra_loggers") or ())
        for name in _handled_extra:
            extra = logging.getLogger(name)
            extra.addHandler(_handler)
            extra.setLevel(level)
        _configured = _settings_copy(settings)


class _StderrProxy:
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


def ensure_logging(config=None):
    """Configure logging unless done already (from the one loaded); given
    `config`, unless done already with its [logging] settings (a warm run
    process finds logging set up by its warm-start process, and sets it up
    again only if its own settings differ)."""
    if _configured is None or (config is not None
                               and _settings_copy(config["logging"]) != _configured):
        configure_logging(config)


def _settings_copy(settings):
    return {key: list(value) if isinstance(value, (list, tuple)) else value
            for key, value in settings.items()}


def get_logger(name=None):
    """A logger for user code: in a task, tied to that task; in a flow, to the flow.

    `get_logger("name")` gives `orchestrator.name`, which also carries the run's
    identity on its records.
    """
    ensure_logging()
    if name:
        return logging.getLogger(f"{ROOT}.{name}")
    task_name = flow_name = None
    for layer in current_stack():
        if task_name is None and "task_name" in layer:
            task_name = layer["task_name"]
        if flow_name is None and "flow_name" in layer:
            flow_name = layer["flow_name"]
    if task_name is not None:
        return logging.getLogger(f"{ROOT}.task.{task_name}")
    if flow_name is not None:
        return logging.getLogger(f"{ROOT}.flow.{flow_name}")
    return logging.getLogger(ROOT)


def task_logger(task_name):
    """The logger of the task called `task_name` (what `get_logger()` gives in its run)."""
    ensure_logging()
    return logging.getLogger(f"{ROOT}.task.{task_name}")


# -- capturing records on workers in other processes --------------------------
def start_capture(extra_loggers=()):
    """Collect this context's records into a list; returns (list, token)."""
    root = logging.getLogger(ROOT)
    if _capture_handler not in root.handlers:
        root.addHandler(_capture_handler)
    for name in extra_loggers:
        extra = logging.getLogger(name)
        if _capture_handler not in extra.handlers:
            extra.addHandler(_capture_handler)
    buffer = []
    return buffer, _capture.set(buffer)


def stop_capture(token):
    _capture.reset(token)


# -- print() capture -----------------------------------------------------------
class _LineLogger:
    def __init__(self, logger):
        self.logger = logger
        self.partial = ""

    def write(self, text):
        text = self.partial + text
        *lines, self.partial = text.split("\n")
        for line in lines:
            self.logger.info(line)
        return len(text)

    def close(self):
        if self.partial:
            self.logger.info(self.partial)
            self.partial = ""


class _StdoutRouter:
    """Stands in for sys.stdout: writes of a task with log_stdout go to its
    logger, every other write to the real stream."""

    def __init__(self, original):
        self._original = original

    def write(self, text):
        target = _stdout_target.get()
        if target is None:
            return self._original.write(text)
        return target.write(text)

    def flush(self):
        if _stdout_target.get() is None:
            self._original.flush()

    def __getattr__(self, name):
        return getattr(self._original, name)


def start_stdout_capture():
    if not isinstance(sys.stdout, _StdoutRouter):
        sys.stdout = _StdoutRouter(sys.stdout)
    line_logger = _LineLogger(get_logger())
    return line_logger, _stdout_target.set(line_logger)


def stop_stdout_capture(line_logger, token):
    line_logger.close()
    _stdout_target.reset(token)
