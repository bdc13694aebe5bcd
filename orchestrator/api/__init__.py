"""The REST API: a falcon WSGI app over one Store, served by waitress.

    app = create_app(store, token=api_token(create=True), status=up.status,
                     on_run_created=lambda run: agent.wake.set())

Every path under /api but /api/health needs `Authorization: Bearer <token>`
(the token is in `$ORCHESTRATOR_HOME/api-token`). Errors are JSON
`{"error": {"code", "message", "field"}}` with a 4xx status; an unexpected
failure is a 500 whose body says no more than that (the log has the rest).
The OpenAPI 3.1 description of every operation is at /api/openapi.json.
"""

import hmac
import json
import logging
import re

import falcon

from ..exceptions import Conflict, NotFound, OrchestratorError, ParameterError
from ..store import StoreUnavailable
from ..core.validation import check_storable
from . import resources
from .openapi import openapi_document
from .render import MAX_BODY_BYTES, ApiError, error_document

__all__ = ["create_app", "MAX_BODY_BYTES"]

logger = logging.getLogger(__name__)

_ID = "{%s:int(min=1, max=9223372036854775807)}"
_PUBLIC = ("/", "/api/health")


class TokenAuth:
    """Middleware: every request needs the bearer token (constant-time check) but
    the health check and the web page's static files. Deny by default: a path
    that only looks public to a prefix test (`//api/flows`) is not let through."""

    def __init__(self, token):
        if not token:
            raise OrchestratorError("The API needs a token; start it with "
                                    "orchestrator up or orchestrator server, which make one")
        self.token = token.encode()

    def process_request(self, req, resp):
        path = req.path
        scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
        req.context.authorized = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), self.token)
        if path in _PUBLIC or (path.startswith("/static/") and "/" not in path[8:]):
            return
        if not req.context.authorized:
            raise ApiError(falcon.HTTP_401, "A valid API token is required: send "
                           "Authorization: Bearer <the token in $ORCHESTRATOR_HOME/api-token>",
                           headers={"WWW-Authenticate": "Bearer"})


class KnownQueryParameters:
    """Middleware: a query parameter the operation does not have is an error, so a
    typo (`?stat=Failed`) is not silently ignored. The OpenAPI document is the list."""

    def __init__(self, document):
        self.allowed = {}
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                self.allowed[(path, method.upper())] = {
                    p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"}

    def process_resource(self, req, resp, resource, params):
        if not req.query_string:
            return
        template = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", req.uri_template or "")
        allowed = self.allowed.get((template, req.method))
        if allowed is None:
            return
        for name, value in req.params.items():
            if name not in allowed:
                raise ApiError(falcon.HTTP_400, f"Unknown query parameter {name!r}; this "
                               f"operation takes {', '.join(sorted(allowed)) or 'none'}",
                               name)
            check_storable(value, name)


def _serialize_error(req, resp, exc):
    document = error_document(exc)
    if not isinstance(exc, ApiError):
        status = document["error"]["code"]
        if status == "not_found":
            document["error"]["message"] = (f"No such path: {req.path}; the API's paths "
                                            "are listed at /api/openapi.json")
        elif status == "method_not_allowed":
            allowed = (exc.headers or {}).get("Allow", "")
            document["error"]["message"] = (f"{req.method} is not allowed on {req.path}; "
                                            f"use {allowed or 'another method'}")
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(document)


# What to do when something is not found, said as this API's requests (the store
# and the use cases say only what is missing). Projects are made by the CLI only.
_ADVICE = {
    "project": lambda name: f"Create it with: orchestrator project create {name}",
    "flow": lambda name: "list flows with GET /api/flows",
    "flow run": lambda name: "list runs with GET /api/flow_runs",
    "secret": lambda name: f"Set it with PUT /api/secrets/{name}",
    "artifact": lambda name: "a run's artifacts are listed by GET /api/flow_runs/RUN/artifacts",
    "concurrency limit": lambda name: "list them with GET /api/concurrency_limits",
}


def _domain_error(req, resp, exc, params):
    field = getattr(exc, "field", None)
    if isinstance(exc, StoreUnavailable):  # a full disk: the same request works later
        raise ApiError(falcon.HTTP_503, str(exc), headers={"Retry-After": "60"})
    if isinstance(exc, NotFound):
        if exc.kind in _ADVICE:
            exc = exc.advised(_ADVICE[exc.kind](exc.name))
        raise ApiError(falcon.HTTP_404, str(exc), field)
    if isinstance(exc, Conflict):
        raise ApiError(falcon.HTTP_409, str(exc), field)
    raise ApiError(falcon.HTTP_400, str(exc), field or _field_of(exc))


def _field_of(exc):
    return "parameters" if isinstance(exc, ParameterError) else None


def _unexpected_error(req, resp, exc, params):
    logger.error("API %s %s failed", req.method, req.path, exc_info=exc)
    raise ApiError(falcon.HTTP_500, "The server failed to answer this request; its log "
                   "says why")


def create_app(store, token, status=None, on_run_created=None):
    """The WSGI app. `status()` returns the services' state for /api/health;
    `on_run_created(run)` is called after the API creates a run (to wake an agent)."""
    document = openapi_document()
    app = falcon.App(middleware=[TokenAuth(token), KnownQueryParameters(document)])
    app.req_options.auto_parse_qs_csv = False
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(_serialize_error)
    app.add_error_handler(OrchestratorError, _domain_error)
    app.add_error_handler(Exception, _unexpected_error)  # HTTPError keeps its own handler

    web = resources.WebPage()
    app.add_route("/", web)
    app.add_route("/static/{name}", web, suffix="file")
    app.add_route("/api/health", resources.Health(status or (lambda: {"status": "ok"})))
    app.add_route("/api/openapi.json", resources.OpenApi(document))
    app.add_route("/api/flows", resources.Flows(store))
    flow = resources.Flow(store)
    app.add_route("/api/flows/" + _ID % "flow_id", flow)
    app.add_route("/api/flows/" + _ID % "flow_id" + "/schedule/pause", flow, suffix="pause")
    app.add_route("/api/flows/" + _ID % "flow_id" + "/schedule/resume", flow, suffix="resume")
    app.add_route("/api/flow_runs", resources.FlowRuns(store, on_run_created))
    run = resources.FlowRun(store)
    one_run = "/api/flow_runs/" + _ID % "run_id"
    app.add_route(one_run, run)
    for part in ("cancel", "explain", "task_runs", "states", "logs", "artifacts"):
        app.add_route(f"{one_run}/{part}", run, suffix=part)
    app.add_route("/api/agents", resources.Agents(store))
    limits = resources.ConcurrencyLimits(store)
    app.add_route("/api/concurrency_limits", limits)
    app.add_route("/api/concurrency_limits/{kind}/{label}", limits, suffix="one")
    secrets = resources.Secrets(store)
    app.add_route("/api/secrets", secrets)
    app.add_route("/api/secrets/{name}", secrets, suffix="one")
    return app
