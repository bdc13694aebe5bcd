"""The checks of what users give us, shared by the CLI, the REST API and the
library: one function per kind of input, each returning the value it accepts
or raising `InputError` with the field, the value (shortened when long) and
the fix.

    from orchestrator import validation
    run_id = validation.check_id("42")             # 42
    validation.check_name("a\\nb")                  # InputError: ... has a line break ...
    validation.check_parameters({"day": float("nan")})   # InputError: ... not a finite number

`service.create_flow_run` and `service.register_flow` call these, so a run
created from the command line, over HTTP or from a task meets the same rules;
the edges add only what is theirs to read (argv text, request bodies).
The limits are those of the store: 64-bit integer keys, names shown on one
line, parameters read back whole (and recursively) by every listing.
"""

import json
import math
import re

from ..exceptions import InputError

__all__ = ["InputError", "MAX_ID", "MAX_NAME_LENGTH", "MAX_PARAMETERS_BYTES", "MAX_DEPTH",
           "MAX_CONCURRENCY_LIMIT", "check_id", "check_name", "check_labels",
           "check_parameters", "check_idempotency_key", "check_concurrency_limit",
           "check_storable", "shown"]

MAX_ID = 2 ** 63 - 1  # SQLite's and PostgreSQL's BIGINT keys
MAX_NAME_LENGTH = 200
MAX_PARAMETERS_BYTES = 1024 * 1024  # as the API's largest request body
MAX_DEPTH = 32  # of objects and lists: stored values are read back recursively
MAX_CONCURRENCY_LIMIT = 100_000

# For each kind of id: the field the API calls it, and where a user finds ids.
_ID_KINDS = {"flow run": ("run_id", "list runs with: orchestrator runs"),
             "flow": ("flow_id", "list flows with: orchestrator flows")}
_DIGITS = re.compile(r"[0-9]+")


def shown(value, limit=40):
    """`value` as a message shows it: its repr, cut to about `limit` characters
    (a string says its full length), so that a 5 MB value still makes a
    one-line message."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def check_id(value, kind="flow run", field=None):
    """`value`, an int or its decimal text (as argv and URLs give it), as the id of
    a stored `kind` ("flow run" or "flow"): a whole number from 1 to MAX_ID."""
    default_field, hint = _ID_KINDS[kind]
    field = field or default_field
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        text = value.strip()
        digits = text.lstrip("0") or "0"
        # Longer than MAX_ID's 19 digits is out of range; no need to convert it.
        number = int(digits) if len(digits) <= 19 else MAX_ID + 1
    elif isinstance(value, int) and not isinstance(value, bool):
        text, number = str(value), value
    else:
        raise InputError(f"{shown(value)} is not a {kind} id: ids are whole numbers from 1 "
                         f"to {MAX_ID}; {hint}", field)
    if not 1 <= number <= MAX_ID:
        text = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} digits)"
        raise InputError(f"{kind.capitalize()} id {text} is out of range: ids are whole "
                         f"numbers from 1 to {MAX_ID}; {hint}", field)
    return number


def _name_problem(value):
    if not isinstance(value, str):
        return f"is of type {type(value).__name__}, not a string"
    if not value:
        return "is empty"
    if not value.strip():
        return "is blank"
    if "\n" in value or "\r" in value:
        return "has a line break"
    if len(value) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    return None


def check_name(value, field="name", what=None):
    """A name (of a run, a project, a label, a secret...): 1 to 200 characters on
    one line, not blank, storable. `what` begins the message (default: from
    `field`, e.g. "Name")."""
    what = what or field.replace("_", " ").capitalize()
    problem = _name_problem(value)
    if problem:
        raise InputError(f"{what} {shown(value)} {problem}: use 1 to {MAX_NAME_LENGTH} "
                         "characters on one line", field)
    return check_storable(value, field)


def check_labels(value, field="labels"):
    """A list of labels, each a name (see check_name); returned as a list (a set,
    as a library caller may give, sorted)."""
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=str)
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{field} {shown(value)} is not a list of labels; give a list of "
                         'strings, e.g. ["etl", "gpu"]', field)
    for label in value:
        check_name(label, field, what="Label")
    return list(value)


def check_idempotency_key(value, field="idempotency_key"):
    """An idempotency key: a name (see check_name)."""
    return check_name(value, field, what="Idempotency key")


def check_parameters(value, field="parameters"):
    """A run's parameters: a JSON object of names to JSON values (finite numbers,
    storable strings, nested at most MAX_DEPTH deep), at most MAX_PARAMETERS_BYTES
    of JSON (UTF-8, compact)."""
    if not isinstance(value, dict):
        raise InputError(f"{field} {shown(value)} is not an object of parameter names to "
                         'values; give e.g. {"day": "2024-05-01"}', field)
    _check_tree(value, field, 0, json_only=True)
    size = _json_size(value)
    if size > MAX_PARAMETERS_BYTES:
        largest = max(value, key=lambda name: _json_size(value[name]))
        raise InputError(
            f"{field} are {size} bytes of JSON, over the limit of {MAX_PARAMETERS_BYTES} "
            f"bytes (1 MiB); the largest is {shown(largest)} ({_json_size(value[largest])} "
            "bytes). Pass large data by reference instead, e.g. a file path or URL", field)
    return value


def check_concurrency_limit(value, field="limit"):
    """How many runs (or tasks) at once: a whole number (3 or 3.0, as JSON may say
    it) from 0 to MAX_CONCURRENCY_LIMIT; 0 holds them all."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or not 0 <= number <= MAX_CONCURRENCY_LIMIT:
        raise InputError(f"Concurrency limit {shown(value)} is not valid: give a whole number "
                         f"from 0 to {MAX_CONCURRENCY_LIMIT} (0 holds every run with the "
                         "label, or every task with the tag)", field)
    return number


def check_storable(value, field, depth=0):
    """Strings anywhere in `value` must be storable (no NUL, no lone surrogate),
    and objects and lists nest at most MAX_DEPTH deep. Other values pass."""
    _check_tree(value, field, depth, json_only=False)
    return value


def _check_tree(value, field, depth, json_only):
    """check_storable; with `json_only`, also only JSON's types, string keys and
    finite numbers. Nested fields are named `field.key` (list items keep the
    field of their list)."""
    if depth > MAX_DEPTH:
        raise InputError(f"{field} nests objects or lists more than {MAX_DEPTH} deep; "
                         "flatten it", field)
    if isinstance(value, str):
        if "\x00" in value:
            raise InputError(f"{field} {shown(value)} contains a NUL character; remove it",
                             field)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{field} {shown(value)} contains invalid Unicode (a lone "
                             "surrogate); give valid UTF-8 text", field) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            if json_only and not isinstance(key, str):
                raise InputError(f"{field} has the key {shown(key)} of type "
                                 f"{type(key).__name__}; JSON object keys are strings: "
                                 f"write it as {str(key)!r}", field)
            _check_tree(key, field, depth + 1, json_only)
            _check_tree(item, f"{field}.{key}", depth + 1, json_only)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_tree(item, field, depth + 1, json_only)
    elif not json_only or value is None or isinstance(value, (bool, int)):
        pass
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{field} = {value!r} is not a finite number, and JSON has no "
                             "NaN or Infinity; give a number, null or a string", field)
    else:
        raise InputError(f"{field} {shown(value)} is of type {type(value).__name__}, "
                         "which JSON cannot hold; give strings, numbers, booleans, null, "
                         "lists or objects", field)


def _json_size(value):
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
