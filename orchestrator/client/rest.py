"""`orchestrator.Client`: the REST API from Python scripts, on this host or another.

    from orchestrator import Client

    client = Client()                  # the local server, with the local token
    run = client.create_flow_run("etl/sales-report", parameters={"day": "2024-05-01"})
    run = client.wait_for_flow_run(run["id"], timeout=600)
    print(run["state"], [line["message"] for line in client.get_logs(run["id"])])

`Client()` finds the server at ORCHESTRATOR_API_URL, else where the running
`orchestrator up`/`server` said it listens (`$ORCHESTRATOR_HOME/api-url`),
else http://127.0.0.1:4200; and the token in ORCHESTRATOR_API_TOKEN, else
`$ORCHESTRATOR_HOME/api-token`. Runs and flows are dicts as the API returns
them (times are ISO 8601 strings). One persistent connection per thread.
"""

import datetime as _dt
import http.client
import json
import os
import threading
import time
import urllib.parse
import uuid

from ..config import api_token, api_url
from ..core.states import TERMINAL_RUN_STATES
from ..exceptions import OrchestratorError

__all__ = ["Client", "ClientError", "ServerNotRunning", "FINISHED_STATES"]

FINISHED_STATES = TERMINAL_RUN_STATES


class ClientError(OrchestratorError):
    """The API answered with an error; `status`, `code` and `field` say which."""

    def __init__(self, message, status=None, code=None, field=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


class ServerNotRunning(ClientError, ConnectionError):
    """Nothing answers at the client's URL."""


class Client:
    def __init__(self, url=None, token=None, timeout=30.0):
        self.url = (url or api_url()).rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"API url {self.url!r} is not an http(s) URL; give e.g. "
                              "http://127.0.0.1:4200")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.token = token or os.environ.get("ORCHESTRATOR_API_TOKEN") or api_token()
        self.timeout = timeout
        self._local = threading.local()

    def __repr__(self):
        return f"Client(url={self.url!r})"

    # -- flows ------------------------------------------------------------------
    def health(self):
        return self._call("GET", "/api/health")

    def list_flows(self, project=None):
        return self._call("GET", "/api/flows", query={"project": project})["flows"]

    def get_flow(self, flow_id):
        return self._call("GET", f"/api/flows/{_whole(flow_id, 'flow id')}")

    def register_flow(self, project, storage, flow_name=None, labels=None):
        """Register a flow from storage on the server: a Script, Module or Git
        storage object (or its `to_ref()` dict). Returns the flow."""
        ref = storage.to_ref() if hasattr(storage, "to_ref") else storage
        return self._call("POST", "/api/flows", body={
            "project": project, "storage": ref, "flow_name": flow_name, "labels": labels})

    # -- flow runs --------------------------------------------------------------
    def create_flow_run(self, flow, parameters=None, name=None, labels=None,
                        scheduled_start_time=None, idempotency_key=None):
        """Create a run of `flow` ('project/name', a name, or an id); returns the run.

        With `idempotency_key`, creating it again (a retried script) returns the
        first run instead of a second one.
        """
        when = scheduled_start_time
        if isinstance(when, _dt.datetime):
            if when.tzinfo is None:
                raise ClientError(f"scheduled_start_time {when.isoformat()} has no time zone; "
                                  "give an aware datetime, e.g. with tzinfo=timezone.utc")
            when = when.isoformat()
        # A key always: a request retried after a dropped connection cannot make a
        # second run.
        body = {"flow": flow, "parameters": parameters or {},
                "idempotency_key": idempotency_key or f"client-{uuid.uuid4().hex}"}
        for key, value in (("name", name), ("labels", labels), ("scheduled_start_time", when)):
            if value is not None:
                body[key] = list(value) if key == "labels" and not isinstance(
                    value, str) else value
        return self._call("POST", "/api/flow_runs", body=body)

    def get_flow_run(self, run_id):
        return self._call("GET", f"/api/flow_runs/{_run_id(run_id)}")

    def list_flow_runs(self, flow=None, state=None, since=None, until=None, limit=50,
                       cursor=None):
        """One page of runs, newest first: (runs, next_cursor or None)."""
        states = [state] if isinstance(state, str) else list(state or ())
        page = self._call("GET", "/api/flow_runs", query={
            "flow": flow, "state": ",".join(states) or None, "since": _iso(since),
            "until": _iso(until), "limit": limit, "cursor": cursor})
        return page["flow_runs"], page["next_cursor"]

    def wait_for_flow_run(self, run_id, timeout=None, poll_interval=0.5):
        """Wait until the run finishes; returns it. Raises TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_flow_run(run_id)
            if run["state"] in FINISHED_STATES:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Flow run {run['id']} is still {run['state']} after "
                                   f"{timeout} s; wait longer, or see why with "
                                   f"orchestrator explain {run['id']}")
            pause = poll_interval if deadline is None else min(
                poll_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def cancel_flow_run(self, run_id):
        return self._call("POST", f"/api/flow_runs/{_run_id(run_id)}/cancel")

    def set_flow_run_name(self, run_id, name):
        return self._call("PATCH", f"/api/flow_runs/{_run_id(run_id)}", body={"name": name})

    def explain_flow_run(self, run_id):
        return self._call("GET", f"/api/flow_runs/{_run_id(run_id)}/explain")["reasons"]

    def get_task_runs(self, run_id):
        return self._call("GET", f"/api/flow_runs/{_run_id(run_id)}/task_runs")["task_runs"]

    def get_logs(self, run_id, after=None, level=None, limit=1000, task=None):
        """Log lines of a run (of one task, by its slug), oldest first; pass the last
        line's id as `after` to tail."""
        page = self._call("GET", f"/api/flow_runs/{_run_id(run_id)}/logs", query={
            "cursor": after, "level": level, "limit": limit, "task": task})
        return page["logs"]

    # -- the rest ---------------------------------------------------------------
    def list_agents(self):
        return self._call("GET", "/api/agents")["agents"]

    def set_secret(self, name, value):
        self._call("PUT", f"/api/secrets/{urllib.parse.quote(name, safe='')}",
                   body={"value": value})

    def delete_secret(self, name):
        self._call("DELETE", f"/api/secrets/{urllib.parse.quote(name, safe='')}")

    # -- HTTP -------------------------------------------------------------------
    def _connection(self):
        """(this thread's connection, whether it served a request before)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return conn, False

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _call(self, method, path, body=None, query=None):
        target = self._prefix + path
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            if pairs:
                target += "?" + urllib.parse.urlencode(pairs)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle kept-alive connection: anew
                raise ClientError(f"The server at {self.url} closed the connection "
                                  f"({exc!r}); is it stopping?") from None
            except TimeoutError:
                self.close()
                raise ClientError(f"{method} {target}: no answer from {self.url} within "
                                  f"{self.timeout} s; pass Client(timeout=...) to wait "
                                  "longer") from None
            except OSError as exc:
                self.close()
                raise ServerNotRunning(
                    f"No orchestrator server answers at {self.url} "
                    f"({exc.strerror or exc}); start one with `orchestrator up` (or "
                    "`orchestrator server`), or point the client at it with "
                    "Client(url=...) or ORCHESTRATOR_API_URL") from None
        if resp.will_close:
            self.close()
        if resp.status == 204:
            return None
        try:
            document = json.loads(payload) if payload else None
        except ValueError:
            raise ClientError(f"{method} {target}: the server answered {resp.status} with "
                              f"non-JSON text: {payload[:200]!r}", status=resp.status) from None
        if resp.status >= 400:
            error = (document or {}).get("error", {}) if isinstance(document, dict) else {}
            message = error.get("message") or f"HTTP {resp.status}"
            if resp.status == 401:
                message += (" (the client's token did not match; it reads "
                            "$ORCHESTRATOR_HOME/api-token or ORCHESTRATOR_API_TOKEN)")
            raise ClientError(message, status=resp.status, code=error.get("code"),
                              field=error.get("field"))
        return document


def _run_id(run_id):
    return _whole(run_id, "flow run id")


def _whole(value, what):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ClientError(f"{value!r} is not a {what}; ids are whole numbers") from None
    if number < 1:
        raise ClientError(f"{value!r} is not a {what}; ids start at 1")
    return number


def _iso(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ClientError(f"{value.isoformat()} has no time zone; give an aware datetime")
        return value.isoformat()
    raise ClientError(f"{value!r} is not a time; give an aware datetime or an ISO 8601 string")
