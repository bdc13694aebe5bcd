"""Configuration: defaults, then `$ORCHESTRATOR_HOME/config.toml`, then the
environment (`ORCHESTRATOR__SECTION__KEY=value`, as Prefect's
`PREFECT__LOGGING__LEVEL`).

    from orchestrator.config import load_config
    config = load_config()
    config["logging"]["level"], config.source("logging", "level")

Environment values are parsed as TOML values when they parse (`true`, `3`,
`["boto3"]`) and kept as strings otherwise. Known settings are checked when
the configuration loads: switches such as `flows.checkpointing` become bools
(from true/false, yes/no, 1/0 in any case), the `services` durations become
floats (positive, finite, at most a day, the heartbeat interval below the
timeout), and a log format that cannot format a record is a ConfigError
then, not an error on every log call or a run that never gets a heartbeat.
"""

import logging
import math
import os
from pathlib import Path

from .exceptions import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["DEFAULTS", "Config", "home_dir", "private_dir", "load_config", "log_formatter",
           "api_token", "rotate_api_token", "api_url"]

ENV_PREFIX = "ORCHESTRATOR__"

DEFAULTS = {
    "logging": {
        "level": "INFO",
        "format": "[%(asctime)s] %(levelname)s - %(name)s | %(message)s",
        "datefmt": "%Y-%m-%d %H:%M:%S%z",
        "extra_loggers": [],
        "propagate": False,
    },
    "flows": {
        "checkpointing": False,
    },
    "services": {
        "heartbeat_interval": 5.0,
        "heartbeat_timeout": 60.0,
        "cancel_grace": 10.0,
        # A task-tag slot counts while its holder renews it: a slot of a lost
        # Dask worker or a dead process comes back this long after its last renewal.
        "task_slot_lease": 30.0,
        # Agents fork each run process from a warm process that has already
        # imported what a run needs (orchestrator.daemons.zygote); false: a fresh
        # interpreter per run.
        "warm_starts": True,
    },
    # `import prefect` in flow files we load resolves to orchestrator's names
    # (see orchestrator.prefect1.imports); off unless asked for.
    "compat": {
        "prefect_imports": False,
    },
    # Where runs from the store keep task results: a folder or an fsspec URL
    # (s3://bucket/prefix). Empty: `$ORCHESTRATOR_HOME/results`, filled in at
    # load. Hosts sharing a database need one location they all read, or a run
    # resumed on another host cannot restore its finished tasks.
    "results": {
        "location": "",
    },
}

# Switches; `flows.use_local_secrets` may also be left unset (None): it then
# follows whether the run comes from the store (see orchestrator.tasks.secrets).
_BOOLEANS = {("logging", "propagate"): False, ("flows", "checkpointing"): False,
             ("flows", "use_local_secrets"): True, ("compat", "prefect_imports"): False,
             ("services", "warm_starts"): False}
_TRUE_WORDS = ("true", "yes", "1")
_FALSE_WORDS = ("false", "no", "0")

# Durations in seconds. Zero or less would make a heartbeat loop spin, reap
# every run at once or kill a cancelled run with no grace; above a day, a wait
# overflows or a dead run goes unnoticed for days.
_SECONDS = ("heartbeat_interval", "heartbeat_timeout", "cancel_grace", "task_slot_lease")
_MAX_SECONDS = 86400.0

# Attributes run logging stamps on every record it handles (see
# orchestrator.engine.run_logging), so a format may use them.
_RUN_STAMPS = ("flow_name", "flow_run_id", "task_name", "task_slug", "map_index")


def home_dir():
    """`ORCHESTRATOR_HOME`, or `~/.orchestrator`."""
    return Path(os.environ.get("ORCHESTRATOR_HOME") or Path.home() / ".orchestrator")


def private_dir(path):
    """Directory `path`, made if missing, readable by its owner only (0700): the
    home holds the database (secrets too), run logs and results."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class Config(dict):
    """Nested dict of settings that remembers where each value came from."""

    def __init__(self, values, sources):
        super().__init__(values)
        self._sources = sources

    def source(self, section, key):
        """'default', the config file's path, or the environment variable's name."""
        return self._sources.get((section, key), "default")

    def items_with_sources(self):
        for section, values in self.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    yield section, key, value, self.source(section, key)


def _parse_env_value(text):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(home=None, environ=None):
    """The effective configuration for `home` (default: `home_dir()`).

    Parsed and checked again only when what it comes from changed: the config
    file's bytes, the ORCHESTRATOR__ variables, or HOME (for `~`). A warm run
    process finds the one its warm-start process read."""
    environ = os.environ if environ is None else environ
    home = Path(home) if home is not None else home_dir()
    path = home / "config.toml"
    try:
        text = path.read_bytes() if path.is_file() else None
    except OSError as exc:
        raise ConfigError(f"Cannot read {path} ({exc}); fix its permissions or move it "
                          "aside") from None
    key = (str(home), environ.get("HOME"), text,
           tuple((name, value) for name, value in environ.items() if name.startswith(ENV_PREFIX)))
    read = _read.get(key)
    if read is None:
        read = _read_config(home, path, text, environ)
        if len(_read) < 64:  # (a process that meets many is not worth keeping them for)
            _read[key] = read
    values, sources = read
    return Config({section: _copy(keys) for section, keys in values.items()}, dict(sources))


def _copy(keys):
    """A caller's own copy of a section (its lists too: the one read is kept)."""
    if not isinstance(keys, dict):
        return keys
    return {key: list(value) if isinstance(value, list) else value
            for key, value in keys.items()}


_read = {}  # what load_config made, by what it came from


def _read_config(home, path, text, environ):
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    sources = {}
    if text is not None:
        try:
            data = tomllib.loads(text.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{path} is not valid TOML ({exc}); fix the file or move it aside"
            ) from None
        for section, keys in data.items():
            if not isinstance(keys, dict):
                raise ConfigError(
                    f"{path}: {section!r} must be a [section] table, e.g. "
                    f"[logging] with level = \"INFO\""
                )
            values.setdefault(section, {}).update(keys)
            for key in keys:
                sources[(section, key)] = str(path)
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"Environment variable {name} should look like {ENV_PREFIX}SECTION__KEY: "
                f"a section and a key, two names after {ENV_PREFIX} joined by a double "
                "underscore (e.g. ORCHESTRATOR__LOGGING__LEVEL=DEBUG); nested sections "
                "are not supported"
            )
        section, key = parts
        values.setdefault(section, {})[key] = _parse_env_value(text)
        sources[(section, key)] = name
    _check(values, sources, home)
    return values, sources


def _check(values, sources=None, home=None):
    logging_ = values["logging"]
    extra = logging_.get("extra_loggers")
    if isinstance(extra, str):
        raise ConfigError(
            f"logging.extra_loggers = {extra!r} is a string; use a list: "
            f"extra_loggers = [{extra!r}]"
        )
    if extra is not None and (not isinstance(extra, list)
                              or not all(isinstance(name, str) for name in extra)):
        raise ConfigError(
            f"logging.extra_loggers = {extra!r} must be a list of logger names (strings), "
            'e.g. extra_loggers = ["boto3", "urllib3"]'
        )
    level = str(logging_.get("level", "INFO")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            f"logging.level = {logging_['level']!r} is not a level; use one of "
            "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    logging_["level"] = level
    for (section, key), may_be_unset in _BOOLEANS.items():
        keys = values.get(section, {})
        if keys.get(key) is None and may_be_unset:
            continue
        keys[key] = _as_bool(section, key, keys.get(key))
    _check_services(values["services"], sources or {})
    _check_results(values.setdefault("results", {}), sources or {}, home)
    log_formatter(logging_)


def _check_services(services, sources):
    def where(key):
        source = sources.get(("services", key))
        return f" (from {source})" if source else ""

    for key in _SECONDS:
        value = services.get(key)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not 0 < value <= _MAX_SECONDS):
            raise ConfigError(
                f"services.{key} = {value!r}{where(key)} is not valid: give a number of "
                f"seconds above 0 and at most {_MAX_SECONDS:g}, e.g. {key} = "
                f"{DEFAULTS['services'][key]:g}")
        services[key] = float(value)
    interval, timeout = services["heartbeat_interval"], services["heartbeat_timeout"]
    if interval >= timeout:
        raise ConfigError(
            f"services.heartbeat_interval = {interval:g}{where('heartbeat_interval')} is not "
            f"below services.heartbeat_timeout = {timeout:g}{where('heartbeat_timeout')}: "
            "every run would be taken for dead between two heartbeats; make the interval "
            "a fraction of the timeout, e.g. heartbeat_interval = 5 with "
            "heartbeat_timeout = 60")


def _check_results(results, sources, home):
    """`results.location`: unset gives `<home>/results`; a path must be absolute
    (every process, on every host, must find the same place); a URL must name
    its bucket or folder. `~` is expanded and a trailing slash dropped."""
    source = sources.get(("results", "location"))
    value = results.get("location")
    if source is None and not value:
        results["location"] = str((Path(home) if home is not None else home_dir())
                                  / "results")
        return
    where = f" (from {source})" if source else ""
    fix = ("give an absolute path every host mounts, e.g. location = "
           '"/mnt/shared/orchestrator-results", or an fsspec URL such as '
           '"s3://bucket/prefix"; in the environment: ORCHESTRATOR__RESULTS__LOCATION')
    if not isinstance(value, str):
        raise ConfigError(f"results.location = {value!r}{where} must be a string: {fix}")
    text = value.strip()
    if not text:
        raise ConfigError(f"results.location{where} is empty: leave it out for "
                          f"$ORCHESTRATOR_HOME/results, or {fix}")
    if "://" in text:
        protocol, _, rest = text.partition("://")
        if not protocol.replace("+", "").replace("-", "").replace(".", "").isalnum() \
                or not rest.strip("/"):
            raise ConfigError(
                f"results.location = {value!r}{where} names no bucket or folder after the "
                f"protocol: {fix}")
        results["location"] = text.rstrip("/")
        return
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        raise ConfigError(
            f"results.location = {value!r}{where} is a relative path, which each process "
            f"would find in its own working directory: {fix}")
    results["location"] = os.path.normpath(path)


def _as_bool(section, key, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)):
        word = str(value).strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ConfigError(
        f"{section}.{key} = {value!r} is not a boolean; use true or false "
        f"(also accepted, in any case: {', '.join(_TRUE_WORDS[1:] + _FALSE_WORDS[1:])})"
    )


def log_formatter(settings):
    """The logging.Formatter for `[logging]` settings (`format`, `datefmt`).

    Raises ConfigError, naming the setting, when they are not strings or cannot
    format a record, so a bad format fails once at load, not on every log call.
    """
    fmt, datefmt = settings.get("format"), settings.get("datefmt")
    if not isinstance(fmt, str):
        raise ConfigError(
            f"logging.format = {fmt!r} must be a string, e.g. "
            f"format = {DEFAULTS['logging']['format']!r}"
        )
    if datefmt is not None and not isinstance(datefmt, str):
        raise ConfigError(
            f"logging.datefmt = {datefmt!r} must be a string of time.strftime codes, "
            f"e.g. datefmt = {DEFAULTS['logging']['datefmt']!r}"
        )
    if (fmt, datefmt) in _FORMATS_TRIED:
        return logging.Formatter(fmt, datefmt)
    record = logging.LogRecord("orchestrator", logging.INFO, __file__, 0, "message",
                               None, None)
    for name in _RUN_STAMPS:
        setattr(record, name, None)
    try:
        formatter = logging.Formatter(fmt, datefmt)
        formatter.format(record)
        formatter.formatTime(record, datefmt)
    except KeyError as exc:
        raise ConfigError(
            f"logging.format = {fmt!r} uses the field {exc.args[0]!r}, which log records "
            "do not have; use LogRecord attributes such as %(name)s, %(levelname)s, "
            f"%(message)s, or the run's {', '.join(_RUN_STAMPS)}"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"logging.format = {fmt!r} (with datefmt = {datefmt!r}) cannot format a "
            f"record ({exc}); write fields as %(name)s, with the closing ')' and a "
            "conversion such as 's', and a literal percent sign as %%"
        ) from None
    _FORMATS_TRIED.add((fmt, datefmt))
    return formatter


_FORMATS_TRIED = set()  # (format, datefmt) pairs that formatted a record


# -- the API's token and address -------------------------------------------------
API_TOKEN_FILE = "api-token"
API_URL_FILE = "api-url"
DEFAULT_API_URL = "http://127.0.0.1:4200"


def api_token(home=None, create=False):
    """The REST API's bearer token from `$ORCHESTRATOR_HOME/api-token`.

    With `create`, a missing token file is made first (32 random bytes,
    URL-safe, mode 0600, created exclusively so two starting servers agree on
    one token). Returns None when there is no token and `create` is false.
    """
    import secrets

    path = (Path(home) if home else home_dir()) / API_TOKEN_FILE
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole to a private file first, then linked into place: a process
        # starting at the same moment sees no token or the whole one, never half.
        draft = path.with_name(f".{API_TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
            os.link(draft, path)
        except FileExistsError:
            pass  # another process made it a moment ago: use theirs
        finally:
            draft.unlink(missing_ok=True)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"Cannot read the API token {path}: {exc}; check the file's "
                          "owner and mode (it should be 0600 and yours)") from None
    if create and not token:
        raise ConfigError(f"The API token file {path} is empty; delete it and start the "
                          "server again to make a new one")
    return token or None


def rotate_api_token(home=None):
    """Replace the token with a new one (running servers must be restarted)."""
    path = (Path(home) if home else home_dir()) / API_TOKEN_FILE
    path.unlink(missing_ok=True)
    return api_token(home, create=True)


def api_url(home=None):
    """Where a client finds the API: ORCHESTRATOR_API_URL, else the address the
    running server wrote to `$ORCHESTRATOR_HOME/api-url`, else port 4200."""
    url = os.environ.get("ORCHESTRATOR_API_URL")
    if url:
        return url.rstrip("/")
    try:
        written = ((Path(home) if home else home_dir()) / API_URL_FILE).read_text().strip()
    except OSError:
        written = ""
    return written.rstrip("/") or DEFAULT_API_URL
