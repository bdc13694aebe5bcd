"""The OpenAPI 3.1 description of the REST API, served at /api/openapi.json.

It is written by hand next to the resources it describes; a test runs
schemathesis over every operation of a live server against it, so a change
to one without the other fails the suite.
"""

from ..version import __version__
from .render import LEVELS, MAX_BODY_BYTES, MAX_ID, MAX_PAGE, RUN_STATES


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema):
    return {"anyOf": [schema, {"type": "null"}]}


_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_STRING_OR_NULL = {"type": ["string", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"}
_LABELS = {"type": "array", "items": _NAME}


def _object(properties, required=None, additional=False):
    schema = {"type": "object", "properties": properties,
              "required": sorted(properties) if required is None else required}
    if not additional:
        schema["additionalProperties"] = False
    return schema


SCHEMAS = {
    "Error": _object({"error": _object({
        "code": {"type": "string"}, "message": {"type": "string"},
        "field": _STRING_OR_NULL})}),
    "Health": _object({
        "status": {"type": "string"}, "version": {"type": "string"},
        "database": {"type": "string"}}, required=["status", "version"], additional=True),
    "Parameter": _object({
        "name": {"type": "string"}, "required": {"type": "boolean"},
        "callable_default": {"type": "boolean"}, "default": {}}),
    "Flow": _object({
        "id": _ID, "project": {"type": "string"}, "name": {"type": "string"},
        "full_name": {"type": "string"}, "version": {"type": "integer"},
        "labels": {"type": "array", "items": {"type": "string"}},
        "parameters": {"type": "array", "items": _ref("Parameter")},
        "schedule": {"type": ["object", "null"]}, "schedule_active": {"type": "boolean"},
        "settings": {"type": "object"}, "storage": {"type": "object"},
        "run_config": {"type": ["object", "null"]}, "archived": {"type": "boolean"},
        "created": _TIME, "schedule_description": _STRING_OR_NULL, "next_run": _TIME_OR_NULL,
        "recent_runs": {"type": "array", "maxItems": 10, "items": _object({
            "id": _ID, "state": {"type": "string", "enum": list(RUN_STATES)}})}}),
    "FlowList": _object({"flows": {"type": "array", "items": _ref("Flow")}}),
    "RegisterFlow": _object({
        "project": _NAME,
        "storage": {"oneOf": [
            _object({"type": {"const": "Script"},
                     "path": {"type": "string", "pattern": r"^/.*\.py$"},
                     "flow_name": _STRING_OR_NULL}, required=["type", "path"]),
            _object({"type": {"const": "Module"},
                     "module": {"type": "string",
                                "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"},
                     "flow_name": _STRING_OR_NULL}, required=["type", "module"]),
            _object({"type": {"const": "Git"}, "repo": _NAME,
                     "path": {"type": "string", "minLength": 1}, "ref": _NAME},
                    required=["type", "repo", "path"]),
        ]},
        "flow_name": _nullable(_NAME),
        "labels": dict(_nullable(_LABELS), description="Labels its runs need; default: "
                       "the server's host name, so this host's agents run them")},
        required=["project", "storage"]),
    "FlowRun": _object({
        "id": _ID, "name": {"type": "string"}, "flow_id": _ID, "flow": {"type": "string"},
        "project": {"type": "string"}, "flow_name": {"type": "string"},
        "flow_version": {"type": "integer"}, "parameters": {"type": "object"},
        "labels": {"type": "array", "items": {"type": "string"}},
        "state": {"type": "string", "enum": list(RUN_STATES)}, "message": _STRING_OR_NULL,
        "scheduled_start_time": _TIME, "start_time": _TIME_OR_NULL,
        "end_time": _TIME_OR_NULL, "heartbeat": _TIME_OR_NULL, "agent": _STRING_OR_NULL,
        "pid": _INT_OR_NULL, "idempotency_key": _STRING_OR_NULL,
        "auto_scheduled": {"type": "boolean"}, "restarts": {"type": "integer"},
        "attempt": dict({"type": "integer", "minimum": 0}, description=(
            "Each claim of the run mints the next attempt; only the process of the "
            "current attempt may write about the run")),
        "created": _TIME, "updated": _TIME}),
    "CreateFlowRun": _object({
        "flow": {"oneOf": [_ID, {"type": "string", "minLength": 1, "maxLength": 401,
                                 "pattern": r"\S"}]},
        "parameters": _nullable({"type": "object"}),
        "name": _nullable(_NAME), "labels": _nullable(_LABELS),
        "scheduled_start_time": _nullable(_TIME),
        "idempotency_key": _nullable(_NAME)}, required=["flow"]),
    "RenameFlowRun": _object({"name": _NAME}),
    "FlowRunPage": _object({"flow_runs": {"type": "array", "items": _ref("FlowRun")},
                            "next_cursor": _STRING_OR_NULL}),
    "Explanation": _object({"id": _ID, "state": {"type": "string"},
                            "reasons": {"type": "array", "items": {"type": "string"}}}),
    "TaskRun": _object({
        "id": {"type": "integer"}, "task_slug": {"type": "string"},
        "task_name": {"type": "string"}, "map_index": _INT_OR_NULL,
        "state": {"type": "string"}, "message": _STRING_OR_NULL,
        "run_count": {"type": "integer"}, "start_time": _TIME_OR_NULL,
        "end_time": _TIME_OR_NULL, "result_location": _STRING_OR_NULL}),
    "TaskRunList": _object({"task_runs": {"type": "array", "items": _ref("TaskRun")}}),
    "StateList": _object({"states": {"type": "array", "items": _object({
        "state": {"type": "string"}, "message": _STRING_OR_NULL, "time": _TIME})}}),
    "Artifact": _object({
        "id": {"type": "string", "format": "uuid"},
        "task_slug": dict(_STRING_OR_NULL, description="null: made outside a task"),
        "map_index": _INT_OR_NULL, "kind": {"type": "string", "enum": ["markdown", "link"]},
        "text": dict({"type": "string"}, description=(
            "The markdown, or the link; shown as text, never as HTML")),
        "created": _TIME, "updated": _TIME}),
    "ArtifactList": _object({"artifacts": {"type": "array", "items": _ref("Artifact")}}),
    "LogLine": _object({
        "id": {"type": "integer"}, "time": _TIME, "level": {"type": "integer"},
        "level_name": {"type": "string"}, "logger": {"type": "string"},
        "message": {"type": "string"}, "task_slug": _STRING_OR_NULL,
        "map_index": _INT_OR_NULL}),
    "LogPage": _object({"logs": {"type": "array", "items": _ref("LogLine")},
                        "next_cursor": {"type": "string"}, "run_state": {"type": "string"}}),
    "Agent": _object({
        "name": {"type": "string"}, "labels": {"type": "array", "items": {"type": "string"}},
        "id": dict({"type": ["string", "null"]}, description=(
            "The agent process's unique id (null: an agent of a version before ids)")),
        "host": {"type": "string"},
        "host_id": dict({"type": ["string", "null"]}, description=(
            "Where its pid means something: the kernel boot and PID namespace")),
        "pid": {"type": "integer"}, "limit": _INT_OR_NULL,
        "strict_labels": dict({"type": "boolean"}, description=(
            "Takes runs without labels only when it has no labels (Prefect 1's rule)")),
        "started": _TIME, "last_seen": _TIME, "alive": {"type": "boolean"},
        "running": {"type": "array", "items": {"type": "integer"}}}),
    "AgentList": _object({"agents": {"type": "array", "items": _ref("Agent")}}),
    "ConcurrencyLimit": _object({
        "kind": {"type": "string", "enum": ["label", "tag"]}, "label": {"type": "string"},
        "limit": {"type": "integer", "minimum": 0},
        "holders": {"type": "array", "items": {"type": "integer"}}}),
    "ConcurrencyLimitList": _object({"concurrency_limits": {
        "type": "array", "items": _ref("ConcurrencyLimit")}}),
    "SetConcurrencyLimit": _object({"limit": {"type": "integer", "minimum": 0,
                                              "maximum": 100000}}),
    "SecretList": _object({"secrets": {"type": "array",
                                       "items": _object({"name": {"type": "string"}})}}),
    "SetSecret": _object({"value": {"type": "string", "minLength": 1}}),
}


SCHEMAS["FlowWithDeleted"] = _object(dict(
    SCHEMAS["Flow"]["properties"], deleted_runs={"type": "integer", "minimum": 0}))


def _json_body(schema_name):
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _ok(schema_name, status="200", description="OK", extra=None):
    responses = {status: {"description": description, "content": {
        "application/json": {"schema": _ref(schema_name)}}}}
    responses.update(extra or {})
    responses["default"] = {"description": "An error", "content": {
        "application/json": {"schema": _ref("Error")}}}
    return responses


def _no_content():
    return {"204": {"description": "Done"}, "default": {"description": "An error", "content": {
        "application/json": {"schema": _ref("Error")}}}}


def _param(name, where="query", schema=None, required=False, description=""):
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema or {"type": "string"}, "description": description}


_RUN_ID = _param("run_id", "path", _ID)
_FLOW_ID = _param("flow_id", "path", _ID)
_CURSOR = _param("cursor", schema={"type": "string", "pattern": "^[0-9]{1,19}$"},
                 description="next_cursor of the previous page")


def _op(operation_id, summary, responses, parameters=(), body=None, public=False):
    op = {"operationId": operation_id, "summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = list(parameters)
    if body:
        op["requestBody"] = _json_body(body)
    if public:
        op["security"] = []
    return op


def openapi_document():
    """The OpenAPI 3.1 document (a dict)."""
    paths = {
        "/api/health": {"get": _op("health", "Version, database and service liveness",
                                   _ok("Health"), public=True),
                        "head": _op("health_head", "Whether the server answers (for "
                                    "health checks that use HEAD)", {
                                        "200": {"description": "It answers"}}, public=True)},
        "/api/openapi.json": {"get": _op("openapi", "This document", {
            "200": {"description": "The OpenAPI document",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "default": {"description": "An error", "content": {
                "application/json": {"schema": _ref("Error")}}}})},
        "/api/flows": {
            "get": _op("list_flows", "Current flows (every version with archived=true)",
                       _ok("FlowList"), [
                           _param("project", description="Only this project's flows"),
                           _param("archived", schema={"type": "boolean"},
                                  description="Include archived versions")]),
            "post": _op("register_flow", "Register a flow from Script, Module or Git storage",
                        _ok("Flow", "201", "A new version", {"200": {
                            "description": "Unchanged: the current version", "content": {
                                "application/json": {"schema": _ref("Flow")}}}}),
                        body="RegisterFlow"),
        },
        "/api/flows/{flow_id}": {"get": _op("get_flow", "A flow with its parameters and "
                                            "schedule", _ok("Flow"), [_FLOW_ID])},
        "/api/flows/{flow_id}/schedule/pause": {"post": _op(
            "pause_schedule", "Stop scheduling the flow; delete its future auto runs",
            _ok("FlowWithDeleted"), [_FLOW_ID])},
        "/api/flows/{flow_id}/schedule/resume": {"post": _op(
            "resume_schedule", "Schedule the flow again", _ok("FlowWithDeleted"), [_FLOW_ID])},
        "/api/flow_runs": {
            "post": _op("create_flow_run", "Create a run of a flow's current version",
                        _ok("FlowRun", "201", "Created", {"200": {
                            "description": "The run an earlier request with this "
                                           "idempotency_key created",
                            "content": {"application/json": {"schema": _ref("FlowRun")}}}}),
                        body="CreateFlowRun"),
            "get": _op("list_flow_runs", "Runs, newest first, one page at a time (with since or "
                       "until: latest scheduled start first)",
                       _ok("FlowRunPage"), [
                           _param("flow", description="'project/name', a name, or an id"),
                           _param("state", schema={"type": "array", "items": {
                               "type": "string", "enum": list(RUN_STATES)}}),
                           _param("since", schema=_TIME,
                                  description="Scheduled at or after this time"),
                           _param("until", schema=_TIME,
                                  description="Scheduled before this time"),
                           _param("limit", schema={"type": "integer", "minimum": 1,
                                                   "maximum": MAX_PAGE}),
                           _CURSOR]),
        },
        "/api/flow_runs/{run_id}": {
            "get": _op("get_flow_run", "A flow run", _ok("FlowRun"), [_RUN_ID]),
            "patch": _op("rename_flow_run", "Rename a flow run", _ok("FlowRun"), [_RUN_ID],
                         body="RenameFlowRun"),
        },
        "/api/flow_runs/{run_id}/cancel": {"post": _op(
            "cancel_flow_run", "Cancel: at once if not started, else stop its process",
            _ok("FlowRun"), [_RUN_ID])},
        "/api/flow_runs/{run_id}/explain": {"get": _op(
            "explain_flow_run", "Why the run has not started, in sentences",
            _ok("Explanation"), [_RUN_ID])},
        "/api/flow_runs/{run_id}/task_runs": {"get": _op(
            "list_task_runs", "The run's task runs", _ok("TaskRunList"), [_RUN_ID])},
        "/api/flow_runs/{run_id}/states": {"get": _op(
            "list_flow_run_states", "The run's state history", _ok("StateList"), [_RUN_ID])},
        "/api/flow_runs/{run_id}/artifacts": {"get": _op(
            "list_flow_run_artifacts", "Markdown reports and links the run's tasks "
            "published, oldest first", _ok("ArtifactList"), [_RUN_ID])},
        "/api/flow_runs/{run_id}/logs": {"get": _op(
            "get_flow_run_logs", "Log lines after a cursor, oldest first", _ok("LogPage"), [
                _RUN_ID, _CURSOR,
                _param("level", schema={"anyOf": [
                    {"type": "string", "enum": list(LEVELS)},
                    {"type": "integer", "minimum": 0, "maximum": 100}]},
                    description="Lines at this level or above"),
                _param("task", schema={"type": "string", "minLength": 1, "maxLength": 255},
                       description="Only the lines of this task (its slug, e.g. 'load-1')"),
                _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 10000})])},
        "/api/agents": {"get": _op("list_agents", "Agents with their running runs",
                                   _ok("AgentList"))},
        "/api/concurrency_limits": {"get": _op(
            "list_concurrency_limits", "Limits and the runs holding them",
            _ok("ConcurrencyLimitList"))},
        "/api/concurrency_limits/{kind}/{label}": {
            "put": _op("set_concurrency_limit", "Set a label's (runs) or tag's (tasks) limit",
                       _ok("ConcurrencyLimit"), [
                           _param("kind", "path", {"type": "string", "enum": ["label", "tag"]}),
                           _param("label", "path", _NAME)], body="SetConcurrencyLimit"),
            "delete": _op("delete_concurrency_limit", "Remove a limit", _no_content(), [
                _param("kind", "path", {"type": "string", "enum": ["label", "tag"]}),
                _param("label", "path", _NAME)]),
        },
        "/api/secrets": {"get": _op("list_secrets", "Secret names (values are never returned)",
                                    _ok("SecretList"))},
        "/api/secrets/{name}": {
            "put": _op("set_secret", "Set a secret's value", _no_content(),
                       [_param("name", "path", _NAME)], body="SetSecret"),
            "delete": _op("delete_secret", "Delete a secret", _no_content(),
                          [_param("name", "path", _NAME)]),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator", "version": __version__,
                 "description": "Flows, runs, logs, agents, limits and secrets of one "
                                f"orchestrator store. Request bodies are JSON, at most "
                                f"{MAX_BODY_BYTES} bytes; times are ISO 8601 with an offset."},
        "servers": [{"url": "/"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The token in "
                                           "$ORCHESTRATOR_HOME/api-token"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
