"""Configuration: defaults, then `$ORCHESTRATOR_HOME/config.toml`, then the
environment (`ORCHESTRATOR__SECTION__KEY=value`, as Prefect's
`PREFECT__LOGGING__LEVEL`).

    from orchestrator.config import load_config
    config = load_config()
    config["logging"]["level"], config.source("logging", "level")

Environment values are parsed as TOML values when they parse (`true`, `3`,
`["boto3"]`) and kept as strings otherwise.
"""

import os
from pathlib import Path

from .exceptions import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["DEFAULTS", "Config", "load_config", "home_dir"]

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
    "tasks": {
        "defaults": {},
    },
}


def home_dir():
    """`ORCHESTRATOR_HOME`, or `~/.orchestrator`."""
    return Path(os.environ.get("ORCHESTRATOR_HOME") or Path.home() / ".orchestrator")


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
    """The effective configuration for `home` (default: `home_dir()`)."""
    environ = os.environ if environ is None else environ
    home = Path(home) if home is not None else home_dir()
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    sources = {}
    path = home / "config.toml"
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
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
                f"Environment variable {name} should look like "
                f"{ENV_PREFIX}SECTION__KEY (e.g. ORCHESTRATOR__LOGGING__LEVEL)"
            )
        section, key = parts
        values.setdefault(section, {})[key] = _parse_env_value(text)
        sources[(section, key)] = name
    _check(values)
    return Config(values, sources)


def _check(values):
    extra = values["logging"].get("extra_loggers")
    if isinstance(extra, str):
        raise ConfigError(
            f"logging.extra_loggers = {extra!r} is a string; use a list: "
            f"extra_loggers = [{extra!r}]"
        )
    level = str(values["logging"].get("level", "INFO")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            f"logging.level = {values['logging']['level']!r} is not a level; use one of "
            "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    values["logging"]["level"] = level
