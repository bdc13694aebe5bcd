"""REST resources: each handler parses, calls `service` (the one door to the
store), renders with `service.documents`.

Domain errors (NotFound, Conflict, bad parameters) become 4xx JSON in
`orchestrator.api` (see `create_app`), not here.
"""

import importlib.resources
import json
import os
import re
import socket
import subprocess

import falcon

from .. import service
from ..version import __version__
from ..core.validation import check_concurrency_limit, check_id, shown
from ..service.documents import (agent_document, artifact_document, flow_document,
                                 log_document, run_document, state_document,
                                 task_run_document)
from .render import (MAX_ID, MAX_PAGE, ApiError, bad_request, only_fields, optional_labels,
                     optional_string, parse_time, path_name, query_int, query_level,
                     query_states, query_time, read_body, whole_number)


def _json(resp, document, status=falcon.HTTP_200):
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(document)


def _cursor(req):
    raw = req.get_param("cursor")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", raw):
        raise bad_request(f"cursor {raw!r} is not valid; pass back the next_cursor of the "
                          "previous page", "cursor")
    return min(int(raw), MAX_ID)


class Health:
    """GET /api/health: the version and whether the services are alive; with the
    token also the database, the agent's name and labels (not for strangers)."""

    def __init__(self, status):
        self.status = status

    def on_get(self, req, resp):
        status = dict(self.status(), version=__version__)
        if not req.context.get("authorized"):
            status = {key: {"alive": value.get("alive", False)} if isinstance(value, dict)
                      else value for key, value in status.items()
                      if key in ("status", "version", "agent", "scheduler", "reaper")}
        _json(resp, status)

    def on_head(self, req, resp):
        # Health checks that use HEAD: the same answer, without the body (and
        # without asking the services, which a HEAD never shows).
        resp.status = falcon.HTTP_200
        resp.content_type = falcon.MEDIA_JSON


class WebPage:
    """The web page: a few static files from the package, read once, served with
    a Content-Security-Policy that allows no request beyond this server."""

    FILES = {"index.html": "text/html; charset=utf-8",
             "app.js": "text/javascript; charset=utf-8",
             "app.css": "text/css; charset=utf-8"}
    HEADERS = {
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                   "connect-src 'self'; img-src 'self' data:; "
                                   "base-uri 'none'; form-action 'none'; "
                                   "frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    def __init__(self):
        # Package resources, not file paths: the files may be inside a zip (scripts/build).
        folder = importlib.resources.files(__package__) / "web"
        self.files = {name: (folder / name).read_bytes() for name in self.FILES}

    def on_get(self, req, resp):
        self._send(resp, "index.html")

    def on_get_file(self, req, resp, name):
        if name not in self.files:
            raise ApiError(falcon.HTTP_404, f"No such file: /static/{name}")
        self._send(resp, name)

    def _send(self, resp, name):
        resp.content_type = self.FILES[name]
        resp.data = self.files[name]
        resp.set_headers(self.HEADERS)


class OpenApi:
    def __init__(self, document):
        self.text = json.dumps(document)

    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_JSON
        resp.text = self.text


# -- flows ---------------------------------------------------------------------------
_REST_STORAGE = ("Script", "Module", "Git")


class Flows:
    """/api/flows: list current flows; register one from Script, Module or Git storage."""

    def __init__(self, store):
        self.store = store

    def on_get(self, req, resp):
        project = req.get_param("project")
        archived = req.get_param_as_bool("archived", default=False)
        flows = service.list_flows(self.store, project=project, include_archived=archived)
        _json(resp, {"flows": [flow_document(f, service.flow_run_summary(self.store, f["id"]))
                               for f in flows]})

    def on_post(self, req, resp):
        body = read_body(req)
        only_fields(body, ("project", "storage", "flow_name", "labels"))
        project = optional_string(body, "project", required=True)
        flow_name = optional_string(body, "flow_name")
        labels = optional_labels(body)
        ref = body.get("storage")
        if not isinstance(ref, dict) or ref.get("type") not in _REST_STORAGE:
            raise bad_request(
                f"storage {ref!r} is not valid: give a Script, Module or Git reference, e.g. "
                '{"type": "Script", "path": "/srv/flows/etl.py"}; pickled (Local) flows '
                "cannot be registered over the API", "storage")
        _check_storage_ref(ref)
        service.get_project(self.store, project)
        if ref["type"] != "Git":
            flow_name = flow_name or ref.get("flow_name") or None
            ref = dict(ref, flow_name=flow_name)
        if labels is None:
            # The flow's file is on this host: by default its runs go to this host's
            # agents (which carry the host name), as Local storage does.
            labels = [socket.gethostname()]
        record, new = _register_in_child({"project": project, "storage": ref,
                                          "flow_name": flow_name, "labels": labels})
        _json(resp, flow_document(record, service.flow_run_summary(self.store, record["id"])),
              falcon.HTTP_201 if new else falcon.HTTP_200)


REGISTER_TIMEOUT = 300.0  # seconds: a Git clone may take a while


def _register_in_child(request):
    """Registration runs the flow's code (its file or module is imported): do it in
    a child process, so a flow that exits, hangs or leaks cannot take the server,
    its agent or its scheduler down."""
    from ..daemons.agent import describe_exit, orchestrator_command

    what = f"{request['storage']['type']} storage {request['storage']}"
    try:
        done = subprocess.run([*orchestrator_command(), "register-ref"],
                              input=json.dumps(request), capture_output=True, text=True,
                              timeout=REGISTER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise bad_request(f"Loading the flow from {what} took more than "
                          f"{REGISTER_TIMEOUT:g} s; make importing it quick (no work at "
                          "import time)", "storage") from None
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if done.returncode == 0 and isinstance(answer, dict) and "flow" in answer:
        return answer["flow"], answer["new"]
    if isinstance(answer, dict) and "error" in answer:
        error = answer["error"]
        status = {"NotFound": falcon.HTTP_404, "Conflict": falcon.HTTP_409}.get(
            error.get("kind"), falcon.HTTP_400)
        raise ApiError(status, error.get("message") or "Registration failed", "storage")
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    raise bad_request(f"Loading the flow from {what} {describe_exit(done.returncode)} before "
                      f"registering it{': ' + tail if tail else ''}; fix the flow's file or "
                      "module", "storage")


def _check_storage_ref(ref):
    """Storage references from the network: known keys, no way out of a checkout."""
    allowed = {"Script": ("type", "path", "flow_name"),
               "Module": ("type", "module", "flow_name"),
               "Git": ("type", "repo", "path", "ref")}[ref["type"]]
    unknown = sorted(set(ref) - set(allowed))
    if unknown:
        raise bad_request(f"storage field {unknown[0]!r} is not accepted for "
                          f"{ref['type']} storage; its fields are {', '.join(allowed)}",
                          f"storage.{unknown[0]}")
    for key in allowed[1:]:
        if key in ref and ref[key] is not None and not isinstance(ref[key], str):
            raise bad_request(f"storage.{key} {ref[key]!r} must be a string", f"storage.{key}")
    path = ref.get("path")
    if ref["type"] == "Script":
        if not path or not os.path.isabs(path) or not path.endswith(".py") \
                or ".." in path.replace("\\", "/").split("/"):
            raise bad_request(f"storage.path {path!r} is not valid: give the absolute path "
                              "of a .py file on the server, without '..'", "storage.path")
        if not os.path.isfile(path):
            raise ApiError(falcon.HTTP_404, f"storage.path {path!r} is not a file on the "
                           "server; give the path of the flow file there", "storage.path")
    if ref["type"] == "Git":
        if not path or os.path.isabs(path) or ".." in path.replace("\\", "/").split("/"):
            raise bad_request(f"storage.path {path!r} is not valid: give the flow file's "
                              "path inside the repository, e.g. flows/etl.py, without '..'",
                              "storage.path")


class Flow:
    """/api/flows/{flow_id}: one flow (any version) with its parameters and schedule."""

    def __init__(self, store):
        self.store = store

    def on_get(self, req, resp, flow_id):
        _json(resp, flow_document(service.get_flow(self.store, flow_id),
                                  service.flow_run_summary(self.store, flow_id)))

    def on_post_pause(self, req, resp, flow_id):
        self._set_active(resp, flow_id, False)

    def on_post_resume(self, req, resp, flow_id):
        self._set_active(resp, flow_id, True)

    def _set_active(self, resp, flow_id, active):
        flow, deleted = service.set_schedule_active(self.store, flow_id, active)
        _json(resp, dict(flow_document(flow, service.flow_run_summary(self.store, flow["id"])),
                         deleted_runs=deleted))


# -- flow runs -----------------------------------------------------------------------
class FlowRuns:
    """/api/flow_runs: create a run; list runs newest first, one page at a time."""

    def __init__(self, store, on_run_created=None):
        self.store = store
        self.on_run_created = on_run_created

    def on_post(self, req, resp):
        body = read_body(req)
        only_fields(body, ("flow", "parameters", "name", "labels", "scheduled_start_time",
                           "idempotency_key"))
        flow = body.get("flow")
        if whole_number(flow) is not None:
            flow = check_id(whole_number(flow), "flow", field="flow")
        elif not (isinstance(flow, str) and flow.strip() and len(flow) <= 401):
            raise bad_request(f"flow {shown(flow)} is not valid: give 'project/name' or a "
                              "flow id", "flow")
        when = body.get("scheduled_start_time")
        # service checks the name, labels, parameters and key (as for the CLI).
        run, created = service.create_flow_run(
            self.store, flow, parameters=body.get("parameters"), name=body.get("name"),
            labels=optional_labels(body),
            scheduled_start_time=None if when is None
            else parse_time(when, "scheduled_start_time"),
            idempotency_key=body.get("idempotency_key"), report=True)
        if created and self.on_run_created is not None:
            self.on_run_created(run)
        _json(resp, run_document(run), falcon.HTTP_201 if created else falcon.HTTP_200)

    def on_get(self, req, resp):
        limit = query_int(req, "limit", 50, 1, MAX_PAGE)
        rows = service.list_flow_runs(
            self.store, flow=req.get_param("flow"), states=query_states(req), limit=limit,
            before_id=_cursor(req), since=query_time(req, "since"),
            until=query_time(req, "until"))
        _json(resp, {"flow_runs": [run_document(r) for r in rows],
                     "next_cursor": str(rows[-1]["id"]) if len(rows) == limit else None})


class FlowRun:
    """/api/flow_runs/{run_id} and its actions and parts."""

    def __init__(self, store):
        self.store = store

    def on_get(self, req, resp, run_id):
        _json(resp, run_document(service.get_flow_run(self.store, run_id)))

    def on_patch(self, req, resp, run_id):
        body = read_body(req)
        only_fields(body, ("name",))
        name = optional_string(body, "name", required=True)
        _json(resp, run_document(service.rename_flow_run(self.store, run_id, name)))

    def on_post_cancel(self, req, resp, run_id):
        service.cancel_flow_run(self.store, run_id)
        _json(resp, run_document(service.get_flow_run(self.store, run_id)))

    def on_get_explain(self, req, resp, run_id):
        run = service.get_flow_run(self.store, run_id)
        _json(resp, {"id": run["id"], "state": run["state"],
                     "reasons": service.explain_flow_run(self.store, run_id)})

    def on_get_task_runs(self, req, resp, run_id):
        _json(resp, {"task_runs": [task_run_document(t)
                                   for t in service.task_runs(self.store, run_id)]})

    def on_get_states(self, req, resp, run_id):
        _json(resp, {"states": [state_document(e)
                                for e in service.state_history(self.store, run_id)]})

    def on_get_artifacts(self, req, resp, run_id):
        _json(resp, {"artifacts": [artifact_document(a)
                                   for a in service.artifacts(self.store, run_id)]})

    def on_get_logs(self, req, resp, run_id):
        run = service.get_flow_run(self.store, run_id)
        after = _cursor(req) or 0
        limit = query_int(req, "limit", 1000, 1, 10000)
        task = req.get_param("task")
        if task is not None and not 0 < len(task) <= 255:
            raise bad_request(f"task {task[:40]!r}… is not a task slug: give 1 to 255 "
                              "characters, e.g. load-1", "task")
        rows = service.logs(self.store, run_id, after_id=after, min_level=query_level(req),
                            limit=limit, task_slug=task)
        _json(resp, {"logs": [log_document(r) for r in rows],
                     "next_cursor": str(rows[-1]["id"] if rows else after),
                     "run_state": run["state"]})


# -- agents, limits, secrets ---------------------------------------------------------
class Agents:
    def __init__(self, store):
        self.store = store

    def on_get(self, req, resp):
        _json(resp, {"agents": [agent_document(*one) for one in service.agents(self.store)]})


_KINDS = service.LIMIT_KINDS


class ConcurrencyLimits:
    """/api/concurrency_limits[/{kind}/{label}]: run limits per label, task limits per tag."""

    def __init__(self, store):
        self.store = store

    def on_get(self, req, resp):
        _json(resp, {"concurrency_limits": service.concurrency_limits(self.store)})

    def on_put_one(self, req, resp, kind, label):
        kind, label = self._key(kind, label)
        body = read_body(req)
        only_fields(body, ("limit",))
        limit = check_concurrency_limit(body.get("limit"))
        _json(resp, service.set_concurrency_limit(self.store, label, limit, kind=kind))

    def on_delete_one(self, req, resp, kind, label):
        kind, label = self._key(kind, label)
        service.delete_concurrency_limit(self.store, label, kind=kind)
        resp.status = falcon.HTTP_204

    @staticmethod
    def _key(kind, label):
        if kind not in _KINDS:
            raise ApiError(falcon.HTTP_404, f"Limit kind {kind!r} is not known; use "
                           "label or tag", "kind")
        return kind, path_name(label, "label")


class Secrets:
    """/api/secrets[/{name}]: names can be listed; values are written, never read."""

    def __init__(self, store):
        self.store = store

    def on_get(self, req, resp):
        _json(resp, {"secrets": [{"name": n} for n in service.secret_names(self.store)]})

    def on_put_one(self, req, resp, name):
        name = path_name(name, "secret")
        body = read_body(req)
        only_fields(body, ("value",))
        service.set_secret(self.store, name, body.get("value"))
        resp.status = falcon.HTTP_204

    def on_delete_one(self, req, resp, name):
        service.delete_secret(self.store, path_name(name, "secret"))
        resp.status = falcon.HTTP_204
