"""What goes in and out of the API: request bodies and query strings read
and checked field by field, and errors as JSON. The documents the API answers
with (flows, runs, task runs, log lines, ...) are `orchestrator.service.documents`,
which the CLI's --json and the library's tasks print alike.

Every check raises `ApiError`, or `InputError` from `orchestrator.core.validation`
(which checks values for the CLI and the API alike, and which the app answers
as a 400 naming the field), with the field, the problem and the fix, so a bad
input is a 4xx with a message, never a 500.
"""

import datetime as _dt
import json
import re

import falcon

from ..core.states import TERMINAL_RUN_STATES, StateName
from ..service.documents import LEVELS
from ..core.validation import MAX_ID as MAX_ID  # (the API's documents and routes use it)
from ..core.validation import MAX_PARAMETERS_BYTES, check_labels, check_name, check_storable

# A run's parameters may be as large as a whole body (both 1 MiB).
MAX_BODY_BYTES = MAX_PARAMETERS_BYTES
MAX_PAGE = 500
# What a stored flow run may be in: the agent's steps, the final states, and the
# passing states a flow runner can report.
RUN_STATES = (StateName.SCHEDULED, StateName.SUBMITTED, StateName.RUNNING,
              StateName.CANCELLING, *TERMINAL_RUN_STATES, StateName.PENDING,
              StateName.RETRYING, StateName.PAUSED, StateName.LOOPED, StateName.MAPPED)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
          411: "length_required", 413: "payload_too_large", 415: "unsupported_media_type",
          422: "invalid", 429: "too_many_requests", 500: "internal", 503: "unavailable"}


class ApiError(falcon.HTTPError):
    """An error answered as `{"error": {"code", "message", "field"}}`."""

    def __init__(self, status, message, field=None, code=None, headers=None):
        super().__init__(status, title=message, headers=headers)
        self.message = message
        self.field = field
        self.error_code = code


def bad_request(message, field=None):
    return ApiError(falcon.HTTP_400, message, field=field)


def error_document(exc):
    """The JSON body for any falcon HTTPError (ours or falcon's own)."""
    status = exc.status_code if hasattr(exc, "status_code") else int(str(exc.status)[:3])
    message = getattr(exc, "message", None) or exc.description or exc.title or "Error"
    if exc.description and exc.title and not isinstance(exc, ApiError):
        message = f"{exc.title}: {exc.description}"
    return {"error": {"code": getattr(exc, "error_code", None) or _CODES.get(
        status, "error"), "message": message, "field": getattr(exc, "field", None)}}


# -- reading requests ----------------------------------------------------------------
def read_body(req, max_bytes=MAX_BODY_BYTES):
    """The request's JSON object, at most `max_bytes` long."""
    if req.content_length is not None and req.content_length > max_bytes:
        raise ApiError(falcon.HTTP_413, f"The request body is {req.content_length} bytes; "
                       f"the limit is {max_bytes} bytes. Send less data per request.")
    raw = req.bounded_stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(falcon.HTTP_413, f"The request body is over {max_bytes} bytes; "
                       "send less data per request.")
    if not raw.strip():
        raise bad_request("The request has no body; send a JSON object with "
                          "Content-Type: application/json")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise bad_request("The request body is not UTF-8 text; send UTF-8 encoded JSON")
    except RecursionError:
        raise bad_request("The request body is nested too deeply; flatten it") from None
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON ({exc}); send a JSON object")
    if not isinstance(body, dict):
        raise bad_request(f"The request body is a JSON {type(body).__name__}, not an object; "
                          'send an object such as {"flow": "project/name"}')
    for key, value in body.items():  # each field is named by its key in messages
        check_storable(key, "body", depth=1)
        check_storable(value, key, depth=1)
    return body


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number; send null or a string instead")


def only_fields(body, allowed):
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise bad_request(f"Unknown field {unknown[0]!r}; the fields are "
                          f"{', '.join(sorted(allowed))}", unknown[0])


def whole_number(value):
    """`value` as an int when JSON Schema calls it an integer (3 or 3.0), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def optional_string(body, field, required=False):
    """body[field], a name (see validation.check_name), or None when absent."""
    value = body.get(field)
    if value is None:
        if required:
            raise bad_request(f"Field {field!r} is required", field)
        return None
    return check_name(value, field)


def optional_labels(body, field="labels"):
    """body[field], a list of labels (see validation.check_labels; one string
    is not taken for a list here, as it is from Python), or None when absent."""
    value = body.get(field)
    return None if value is None else check_labels(value, field)


def parse_time(value, field):
    """An ISO 8601 string with a UTC offset -> epoch seconds."""
    if not isinstance(value, str):
        raise bad_request(f"{field} {value!r} is not a time; give ISO 8601 with an offset, "
                          "e.g. 2024-05-01T06:00:00+00:00", field)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{field} {value!r} is not an ISO 8601 time; give e.g. "
                          "2024-05-01T06:00:00+00:00", field) from None
    if when.tzinfo is None:
        raise bad_request(f"{field} {value!r} has no UTC offset; add one, e.g. "
                          f"{text}+00:00", field)
    try:
        epoch = when.timestamp()
        _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc)  # shown back in UTC later
        return epoch
    except (OverflowError, ValueError, OSError):
        raise bad_request(f"{field} {value!r} is out of range: give a time between years "
                          "1 and 9999 in UTC", field) from None


def query_int(req, name, default, low, high):
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise bad_request(f"Query parameter {name}={raw!r} is not valid: give a whole "
                          f"number from {low} to {high}", name)
    return value


def query_time(req, name):
    raw = req.get_param(name)
    return None if raw is None else parse_time(raw, name)


def query_states(req):
    """`?state=A&state=B` or `?state=A,B`; each must be a state name."""
    values = req.get_param_as_list("state") or []
    states = [s.strip() for v in values for s in v.split(",")]
    if "" in states:
        raise bad_request("A state in ?state= is empty; give state names such as "
                          "?state=Failed or ?state=Failed,Cancelled", "state")
    for state in states:
        if state not in RUN_STATES:
            raise bad_request(f"State {state!r} is not a state; use one of "
                              f"{', '.join(RUN_STATES)}", "state")
    return states or None


def query_level(req):
    raw = req.get_param("level")
    if raw is None:
        return 0
    if raw in LEVELS:
        return LEVELS[raw]
    if re.fullmatch(r"[0-9]{1,3}", raw) and int(raw) <= 100:
        return int(raw)
    raise bad_request(f"Log level {raw!r} is not valid; use one of "
                      f"{', '.join(LEVELS)} (or a number up to 100)", "level")


def path_name(value, what):
    return check_name(value, what, what=f"{what.capitalize()} name")
