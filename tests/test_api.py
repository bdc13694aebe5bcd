"""The REST API as clients meet it. Most tests speak to the app itself, in this
process, through falcon's test client (`api`): the app `orchestrator server`
serves, built by create_app as ApiServer builds it, over the module's home and
its database, with the token in `$ORCHESTRATOR_HOME/api-token`.

A few speak HTTP (http.client) to a real `orchestrator server` subprocess on a
free port (`served_api`): those about the server itself (the token file, the
address it publishes, body limits and chunked bodies as waitress reads them,
request paths as they arrive on the wire, a flow file that exits) and one end to
end (a run created over HTTP, executed by `orchestrator execute`, read back).

One home serves the whole module, the app's and the server's alike, so the
CLI in a subprocess sees what the API wrote (each test uses flows, labels and
names of its own). Tests that need a home of their own (the token's first
creation, rotation, the address file) start a server of their own with
`fresh_server`; the agents list and a poisoned listing get an app of their own
with `fresh_api`.
"""

import concurrent.futures
import datetime as dt
import http.client
import json
import os
import re
import uuid
from pathlib import Path

import falcon.testing
import pytest
from helpers import ServiceProcess, cli, end_run

from orchestrator.api import create_app
from orchestrator.api.render import MAX_BODY_BYTES
from orchestrator.cli.up import safe_database_url
from orchestrator.config import api_token
from orchestrator.store import Store

# The module's flows, registered with the CLI. Script storage, so that
# `orchestrator execute` in another process loads them from this file.
FLOWS = '''
from datetime import timedelta

from orchestrator import Flow, Parameter, get_logger, task
from orchestrator.schedules import IntervalSchedule
from orchestrator.storage import Script


@task
def speak(word):
    logger = get_logger()
    logger.info("saying %s", word)
    logger.warning("careful with %s", word)
    return word


with Flow("talk", storage=Script(__file__)) as talk:
    speak(Parameter("word", default="hi"))

with Flow("echo", storage=Script(__file__)) as echo:
    speak(Parameter("word", default="echo"))

with Flow("ticker", storage=Script(__file__),
          schedule=IntervalSchedule(timedelta(hours=1))) as ticker:
    speak("tick")
'''

ONE_FLOW = '''
from orchestrator import Flow, Parameter, task


@task
def double(x):
    return 2 * x


with Flow("{name}") as flow:
    double(Parameter("x", default={default}))
'''


# -- HTTP -------------------------------------------------------------------------
def strict_json(data):
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""
    def reject(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=reject)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return strict_json(self.body)

    @property
    def content_type(self):
        return self.headers.get("Content-Type") or ""

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:400]!r}>"


_TOKEN = object()


class ApiRequests:
    """Requests to the REST API with `token`; every response body is kept in
    `bodies`. Subclasses say how a request reaches the app (`send`)."""

    def __init__(self, token):
        self.token = token
        self.bodies = []

    def request(self, method, path, body=None, raw=None, authorization=_TOKEN,
                headers=None, chunked=False):
        send = dict(headers or {})
        if authorization is _TOKEN:
            send["Authorization"] = f"Bearer {self.token}"
        elif authorization is not None:
            send["Authorization"] = authorization
        data = raw if raw is not None else (
            None if body is None else json.dumps(body).encode())
        if data is not None:
            send.setdefault("Content-Type", "application/json")
        result = self.send(method, path, data, send, chunked)
        self.bodies.append(result.body)
        return result

    def send(self, method, path, data, headers, chunked):
        raise NotImplementedError

    def call(self, method, path, body=None, expect=200):
        """A request that must succeed with `expect`; its JSON document (or None)."""
        resp = self.request(method, path, body)
        assert resp.status == expect, f"{method} {path}: {resp}"
        if not resp.body:
            return None
        assert resp.content_type.startswith("application/json"), resp.content_type
        return resp.json

    def get(self, path):
        return self.call("GET", path)

    def create_run(self, flow, expect=201, **fields):
        return self.call("POST", "/api/flow_runs", dict(fields, flow=flow), expect=expect)

    def all_runs(self, query=""):
        """Every run the listing gives, walking the pages. Parsed leniently (NaN
        allowed): it counts runs, and one test stores a NaN when the API lets it."""
        runs, cursor = [], None
        while True:
            path = ("/api/flow_runs?limit=500" + query
                    + (f"&cursor={cursor}" if cursor else ""))
            resp = self.request("GET", path)
            assert resp.status == 200, f"GET {path}: {resp}"
            page = json.loads(resp.body)
            runs += page["flow_runs"]
            cursor = page["next_cursor"]
            if cursor is None:
                return runs

    def flow_id(self, full_name):
        return next(f["id"] for f in self.get("/api/flows")["flows"]
                    if f["full_name"] == full_name)


class Api(ApiRequests):
    """Requests over HTTP to one server (a ServiceProcess) with `token` (default:
    the server's)."""

    def __init__(self, server, token=None):
        super().__init__(server.token if token is None else token)
        self.port = server.port

    def send(self, method, path, data, headers, chunked):
        if data is not None and chunked:
            data = iter([data])  # no Content-Length: http.client sends it chunked
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()


class InProcessApi(ApiRequests):
    """Requests answered in this process by the app `orchestrator server` serves
    over `home` (wired as ApiServer wires it: its token file, a status without an
    agent), through falcon's test client. Runs it creates are kept in
    `created_runs`, where `orchestrator up` would wake its agent. `close()` at
    the end."""

    def __init__(self, home):
        super().__init__(api_token(home, create=True))
        # A Store for each app: the Stores of a process share one database per URL
        # and the models follow the last one opened, which may be another home's.
        self.store = Store.open(home=home)
        self.created_runs = []
        started = dt.datetime.now(dt.timezone.utc).isoformat()

        def status():
            return {"status": "ok", "database": safe_database_url(self.store.url),
                    "started": started,
                    "agent": {"alive": False, "reason": "not in this process"}}

        self.client = falcon.testing.TestClient(create_app(
            self.store, self.token, status=status, on_run_created=self.created_runs.append))
        # The app answers on a thread of its own, as on one of waitress's: a request
        # meets the stack depth a server gives it (how deeply nested a JSON body can
        # be parsed depends on it), and the thread's database connection is the app's.
        self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="api")

    def send(self, method, path, data, headers, chunked):
        if chunked:
            raise ValueError("A chunked body is the server's to read; send it with served_api")
        result = self.worker.submit(self.client.simulate_request, method, path, body=data,
                                    headers=headers).result()
        return Response(result.status_code, result.headers, result.content)

    def close(self):
        """Close the app's database connections, each on the thread that opened it."""
        self.worker.submit(self.store.close).result()
        self.worker.shutdown()
        self.store.close()


def assert_error(resp, status, code, field=...):
    """A JSON error document with `status`, `code` and (if given) `field`."""
    assert resp.status == status, resp
    assert resp.content_type.startswith("application/json"), (resp.content_type, resp)
    error = resp.json["error"]
    assert error["code"] == code, resp
    assert isinstance(error["message"], str) and error["message"], resp
    if field is not ...:
        assert error["field"] == field, resp
    return error


def assert_utc_iso(value):
    assert isinstance(value, str) and value.endswith("+00:00"), value
    assert dt.datetime.fromisoformat(value).utcoffset() == dt.timedelta(0), value


# -- fixtures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_home(tmp_path_factory):
    return tmp_path_factory.mktemp("api-home")


@pytest.fixture(autouse=True)
def home(api_home, monkeypatch):
    """Replaces conftest's `home`: the tests of this module share one home, the
    in-process app's and the module's server's, so `registered_store` registers
    into the database both serve."""
    from orchestrator.engine import run_logging

    monkeypatch.setenv("ORCHESTRATOR_HOME", str(api_home))
    monkeypatch.delenv("ORCHESTRATOR_API_URL", raising=False)
    for name in list(os.environ):
        if name.startswith("ORCHESTRATOR__"):
            monkeypatch.delenv(name)
    run_logging.configure_logging()
    yield api_home
    run_logging.configure_logging()


@pytest.fixture(scope="module")
def server(api_home, tmp_path_factory):
    with ServiceProcess("server", home=api_home,
                        log_dir=tmp_path_factory.mktemp("api-server-output")) as process:
        yield process.wait_for_banner()


@pytest.fixture
def served_api(server):
    """Requests over HTTP to the module's server."""
    return Api(server)


@pytest.fixture
def api(home):
    """Requests to the app in this process, over the module's home and database."""
    api = InProcessApi(home)
    yield api
    api.close()


@pytest.fixture
def fresh_api(monkeypatch):
    """`fresh_api(home)`: the app in this process over `home` (made if missing), the
    test's ORCHESTRATOR_HOME from then on."""
    apis = []

    def make(home):
        Path(home).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("ORCHESTRATOR_HOME", str(home))
        apis.append(InProcessApi(home))
        return apis[-1]

    yield make
    for api in apis:
        api.close()


@pytest.fixture(scope="module")
def flow_file(api_home, tmp_path_factory):
    """p/talk, p/echo (parameter `word`, default "hi"/"echo") and p/ticker (hourly)."""
    path = tmp_path_factory.mktemp("api-flows") / "api_flows.py"
    path.write_text(FLOWS)
    cli(api_home, "project", "create", "p")
    cli(api_home, "register", "-p", "p", path)
    return path


@pytest.fixture(scope="module")
def executed_run(server, flow_file, api_home):
    """A run of p/talk created over HTTP on the module's server and executed to the
    end by `orchestrator execute` in a subprocess."""
    api = Api(server)
    run = api.create_run("p/talk", parameters={"word": "bird"})
    out = cli(api_home, "execute", run["id"])
    assert "Success" in out, out
    return run["id"]


@pytest.fixture
def fresh_server(start_service):
    """`fresh_server(home)`: a server of its own on `home`; killed at the end."""
    def start(home):
        Path(home).mkdir(parents=True, exist_ok=True)
        return start_service("server", home=home).wait_for_banner()

    return start


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# -- 1. security ------------------------------------------------------------------
EXAMPLE_BODIES = {
    "CreateFlowRun": {"flow": "p/talk"},
    "RenameFlowRun": {"name": "x"},
    "RegisterFlow": {"project": "p", "storage": {"type": "Script", "path": "/tmp/x.py"}},
    "SetConcurrencyLimit": {"limit": 1},
    "SetSecret": {"value": "x"},
}


def documented_requests(document):
    """(method, path with its parameters filled in, JSON body or None) per operation."""
    requests = []
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            params = {p["name"]: p["schema"] for p in operation.get("parameters", ())
                      if p["in"] == "path"}

            def fill(match, params=params):
                schema = params[match.group(1)]
                if schema.get("type") == "integer":
                    return "1"
                if "enum" in schema:
                    return "label"
                return "x"

            body = None
            if "requestBody" in operation:
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                body = EXAMPLE_BODIES.get(ref.rsplit("/", 1)[-1], {"x": 1})
            requests.append((method.upper(), re.sub(r"\{(\w+)\}", fill, template), body))
    return requests


def test_health_answers_without_a_token(api):
    resp = api.request("GET", "/api/health", authorization=None)
    assert resp.status == 200, resp
    assert resp.json["status"] == "ok"
    assert resp.json["version"]


@pytest.mark.parametrize("authorization", [
    None, "Bearer not-the-token", "Bearer ", "Bearer", "Basic {token}", "Token {token}",
    "{token}", "Bearer {token}x",
], ids=["no-header", "wrong-token", "empty-token", "bare-bearer", "basic-scheme",
        "token-scheme", "no-scheme", "token-with-suffix"])
def test_no_valid_token_gets_401_on_every_operation(api, authorization):
    document = api.get("/api/openapi.json")
    requests = documented_requests(document)
    assert len(requests) >= 20
    header = None if authorization is None else authorization.format(token=api.token)
    wrong = []
    for method, path, body in requests:
        resp = api.request(method, path, body, authorization=header)
        if path == "/api/health":
            if resp.status != 200:
                wrong.append((method, path, resp))
            continue
        if (resp.status != 401 or not resp.content_type.startswith("application/json")
                or resp.json["error"]["code"] != "unauthorized"
                or not (resp.headers.get("WWW-Authenticate") or "").startswith("Bearer")):
            wrong.append((method, path, resp))
    assert wrong == []


def test_the_401_does_not_say_whether_the_token_was_missing_or_wrong(api):
    answers = [api.request("GET", "/api/flow_runs", authorization=header)
               for header in (None, "Bearer wrong", f"Basic {api.token}")]
    for resp in answers:
        assert_error(resp, 401, "unauthorized", None)
        assert resp.headers.get("WWW-Authenticate") == "Bearer"
    assert answers[0].body == answers[1].body == answers[2].body
    assert api.token.encode() not in answers[2].body


def test_the_right_token_is_accepted(api):
    assert api.request("GET", "/api/flows").status == 200
    assert api.request("GET", "/api/flows",
                       authorization=f"bearer  {api.token} ").status == 200


def test_servers_starting_at_once_agree_on_one_whole_token(tmp_path):
    import threading

    from orchestrator.config import api_token

    tokens, errors = [], []

    def start():
        try:
            tokens.append(api_token(tmp_path, create=True))
        except Exception as exc:  # collected: the assertion below shows them
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [] and len(tokens) == 30 and len(set(tokens)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api-token"]
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600


def test_the_token_file_is_made_at_first_start_with_mode_0600_and_used(tmp_path,
                                                                        fresh_server):
    home = tmp_path / "fresh-home"
    home.mkdir()
    assert not (home / "api-token").exists()
    server = fresh_server(home)
    path = home / "api-token"
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert Api(server, token).request("GET", "/api/flows").status == 200
    assert Api(server, "x" + token).request("GET", "/api/flows").status == 401


def test_orchestrator_token_prints_the_token_and_rotate_replaces_it(tmp_path, fresh_server):
    home = tmp_path / "fresh-home"
    first = fresh_server(home)
    old = first.token
    assert cli(home, "token").strip() == old

    new = cli(home, "token", "--rotate").strip()
    assert new and new != old
    assert (home / "api-token").read_text().strip() == new
    assert (home / "api-token").stat().st_mode & 0o777 == 0o600
    assert cli(home, "token").strip() == new

    assert first.stop() == 0
    second = fresh_server(home)
    assert Api(second, new).request("GET", "/api/flows").status == 200
    assert Api(second, old).request("GET", "/api/flows").status == 401


def test_the_server_tells_clients_its_url_and_forgets_it_when_stopped(tmp_path,
                                                                      fresh_server,
                                                                      monkeypatch):
    from orchestrator.config import api_url

    home = tmp_path / "fresh-home"
    server = fresh_server(home)
    assert (home / "api-url").read_text().strip() == server.url
    assert api_url(home) == server.url
    monkeypatch.setenv("ORCHESTRATOR_API_URL", "http://elsewhere:1234/")
    assert api_url(home) == "http://elsewhere:1234"

    assert server.stop() == 0
    assert "stopped" in server.stdout
    assert not (home / "api-url").exists()


# -- 2. errors --------------------------------------------------------------------
DEEP = b"[" * 5000 + b"]" * 5000

BAD_RUN_BODIES = [
    ("invalid-json", b'{"flow": "p/talk",', None),
    ("empty-body", b"", None),
    ("body-is-a-list", b'["p/talk"]', None),
    ("body-is-a-string", b'"p/talk"', None),
    ("not-utf8", b'{"flow": "p/talk\xff"}', None),
    ("unknown-field", b'{"flow": "p/talk", "colour": "red"}', "colour"),
    ("unknown-parameter", b'{"flow": "p/talk", "parameters": {"nope": 1}}', "parameters"),
    ("parameters-not-an-object", b'{"flow": "p/talk", "parameters": [1]}', "parameters"),
    ("flow-is-a-bool", b'{"flow": true}', "flow"),
    ("flow-id-too-big", b'{"flow": 9223372036854775808}', "flow"),
    ("time-without-offset",
     b'{"flow": "p/talk", "scheduled_start_time": "2024-05-01T06:00:00"}',
     "scheduled_start_time"),
    ("time-not-a-time", b'{"flow": "p/talk", "scheduled_start_time": "soon"}',
     "scheduled_start_time"),
    ("nul-in-flow", b'{"flow": "p/talk\\u0000"}', "flow"),
    ("nul-in-parameter", b'{"flow": "p/talk", "parameters": {"word": "a\\u0000b"}}',
     "parameters.word"),
    ("lone-surrogate-in-flow", b'{"flow": "\\ud800"}', "flow"),
    ("lone-surrogate-in-name", b'{"flow": "p/talk", "name": "x\\udfff"}', "name"),
    ("nan-is-not-json", b'{"flow": "p/talk", "parameters": {"word": NaN}}', ...),
    ("deep-nesting", b'{"flow": "p/talk", "parameters": {"word": ' + DEEP + b"}}", ...),
    # Deep enough to store but not to read back (the listing broke for everyone).
    ("nesting-past-the-limit", b'{"flow": "p/talk", "parameters": {"word": '
     + b"[" * 980 + b"]" * 980 + b"}}", "parameters.word"),
]


@pytest.mark.parametrize("raw, field", [case[1:] for case in BAD_RUN_BODIES],
                         ids=[case[0] for case in BAD_RUN_BODIES])
def test_a_bad_run_request_is_400_and_stores_nothing(api, flow_file, raw, field):
    before = len(api.all_runs())
    resp = api.request("POST", "/api/flow_runs", raw=raw)
    assert_error(resp, 400, "bad_request", field)
    assert len(api.all_runs()) == before


@pytest.mark.parametrize("request_line", [
    ("POST", "/api/flow_runs", {"flow": "\u00b2"}),
    ("POST", "/api/flow_runs", {"flow": "99999999999999999999"}),
    ("GET", "/api/flow_runs?flow=%C2%B2", None),
    ("GET", "/api/flow_runs?flow=99999999999999999999", None),
], ids=["superscript-digit", "id-too-big", "query-superscript-digit", "query-id-too-big"])
def test_a_flow_reference_that_only_looks_like_an_id_is_404(api, request_line):
    method, path, body = request_line
    assert_error(api.request(method, path, body), 404, "not_found")


def test_a_nul_in_a_query_parameter_is_400(api):
    assert_error(api.request("GET", "/api/flows?project=%00"), 400, "bad_request", "project")


def test_an_idempotency_key_reused_with_other_parameters_is_409(api, flow_file):
    first = api.call("POST", "/api/flow_runs", {"flow": "p/talk", "parameters": {
        "word": "one"}, "idempotency_key": "k-params"}, expect=201)
    resp = api.request("POST", "/api/flow_runs", {"flow": "p/talk", "parameters": {
        "word": "two"}, "idempotency_key": "k-params"})
    error = assert_error(resp, 409, "conflict")
    assert f"run {first['id']}" in error["message"] and "other parameters" in error["message"]


def _run_body_of_size(size):
    """A valid run request for p/talk exactly `size` bytes long."""
    empty = json.dumps({"flow": "p/talk", "parameters": {"word": ""}}).encode()
    body = json.dumps({"flow": "p/talk",
                       "parameters": {"word": "x" * (size - len(empty))}}).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("size, chunked", [
    (MAX_BODY_BYTES + 1, False), (MAX_BODY_BYTES + MAX_BODY_BYTES // 2, True),
    (3 * MAX_BODY_BYTES, False),
], ids=["just-over-the-limit", "chunked-over-the-limit", "three-times-the-limit"])
def test_an_oversize_body_is_413_json_and_stores_nothing(served_api, flow_file, size, chunked):
    before = len(served_api.all_runs())
    resp = served_api.request("POST", "/api/flow_runs", raw=_run_body_of_size(size),
                              chunked=chunked)
    error = assert_error(resp, 413, "payload_too_large")
    assert str(MAX_BODY_BYTES) in error["message"]
    assert len(served_api.all_runs()) == before


def test_a_body_of_exactly_the_limit_is_accepted(served_api, flow_file):
    resp = served_api.request("POST", "/api/flow_runs", raw=_run_body_of_size(MAX_BODY_BYTES))
    assert resp.status == 201, resp
    assert len(resp.json["parameters"]["word"]) > MAX_BODY_BYTES - 100


def test_an_unknown_path_is_404_json(api):
    assert_error(api.request("GET", "/api/no_such_thing"), 404, "not_found")
    assert_error(api.request("GET", "/api/flow_runs/1/nothing"), 404, "not_found")
    assert_error(api.request("GET", "/elsewhere"), 404, "not_found")


def test_every_path_but_health_and_the_page_needs_the_token(served_api):
    # Deny by default: falcon routes //api/flows like /api/flows, so a prefix test
    # on the path alone would let a doubled slash read flows and secrets.
    for path in ("//api/flows", "//api/secrets", "/./api/flows", "/static/../api/flows",
                 "/elsewhere", "/api", "/API/flows"):
        assert_error(served_api.request("GET", path, authorization=None), 401, "unauthorized")
    for path in ("/", "/static/app.js", "/api/health"):
        assert served_api.request("GET", path, authorization=None).status == 200, path


def test_a_wrong_method_is_405_json_naming_the_allowed_ones(api):
    resp = api.request("DELETE", "/api/flows")
    error = assert_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"] and "POST" in resp.headers["Allow"]
    assert "GET" in error["message"]
    assert_error(api.request("PUT", "/api/flow_runs/1", {"name": "x"}), 405,
                 "method_not_allowed")


@pytest.mark.parametrize("path", [
    "/api/flow_runs/99999999999999999999999",
    "/api/flow_runs/9223372036854775808/logs",
    "/api/flow_runs/9223372036854775807",
    "/api/flows/99999999999999999999999",
    "/api/flow_runs/0",
    "/api/flow_runs/-1",
    "/api/flow_runs/1e3",
])
def test_an_id_out_of_range_is_404_not_500(api, path):
    assert_error(api.request("GET", path), 404, "not_found")


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/flow_runs/..%2F..%2Fetc%2Fpasswd"),
    ("GET", "/api/../etc/passwd"),
    ("GET", "/api/../../../../../../etc/passwd"),
    ("GET", "/api/%2e%2e/%2e%2e/etc/passwd"),
    ("GET", "/api/flows/..%2f..%2fapi-token"),
    ("GET", "/../../../etc/passwd"),
    ("PUT", "/api/secrets/..%2F..%2Fx"),
    ("PUT", "/api/secrets/../../x"),
    ("DELETE", "/api/secrets/..%2F..%2Fapi-token"),
    ("PUT", "/api/concurrency_limits/label/..%2F..%2Fx"),
    ("GET", "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
    ("GET", "/static/../../../../etc/passwd"),
    ("GET", "/static/..%2Fapi%2F__init__.py"),
    ("GET", "/static/%2Fetc%2Fpasswd"),
])
def test_path_traversal_never_fails_and_never_serves_a_file(served_api, server, method, path):
    body = {"value": "v"} if "secrets" in path else {"limit": 1} if "limits" in path else None
    resp = served_api.request(method, path, body)
    assert 400 <= resp.status < 500, resp
    assert resp.content_type.startswith("application/json"), resp
    assert resp.json["error"]["code"], resp
    assert b"root:" not in resp.body
    assert served_api.token.encode() not in resp.body
    assert server.token == served_api.token  # the token file is still there, unchanged
    for secret in served_api.get("/api/secrets")["secrets"]:
        assert ".." not in secret["name"] and "/" not in secret["name"], secret
    assert all("/" not in entry["label"]
               for entry in served_api.get("/api/concurrency_limits")["concurrency_limits"])


@pytest.mark.parametrize("storage, field", [
    ({"type": "Script", "path": "{dir}/../{dirname}/api_flows.py"}, "storage.path"),
    ({"type": "Script", "path": "api_flows.py"}, "storage.path"),
    ({"type": "Script", "path": "{dir}/api_flows.txt"}, "storage.path"),
    ({"type": "Script", "path": "/etc/passwd"}, "storage.path"),
    ({"type": "Script", "path": 5}, "storage.path"),
    ({"type": "Script", "path": "{dir}/api_flows.py", "directory": "/"}, "storage.directory"),
    ({"type": "Local"}, "storage"),
    ({"type": "Local", "directory": "{dir}"}, "storage"),
    ("{dir}/api_flows.py", "storage"),
    ({"type": "Git", "repo": "https://example.invalid/r.git", "path": "../x.py"},
     "storage.path"),
    ({"type": "Git", "repo": "https://example.invalid/r.git", "path": "/etc/x.py"},
     "storage.path"),
], ids=["dotdot", "relative", "not-py", "system-file", "path-not-a-string", "unknown-key",
        "local", "local-with-directory", "not-an-object", "git-dotdot", "git-absolute"])
def test_registering_unsafe_storage_is_400_naming_the_storage_field(api, flow_file, storage,
                                                                   field):
    folder = flow_file.parent
    (folder / "api_flows.txt").write_text(flow_file.read_text())

    def fill(value):
        if isinstance(value, str):
            return value.format(dir=folder, dirname=folder.name)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    before = api.get("/api/flows?archived=true")["flows"]
    resp = api.request("POST", "/api/flows", {"project": "p", "storage": fill(storage),
                                              "flow_name": "talk"})
    assert_error(resp, 400, "bad_request", field)
    assert api.get("/api/flows?archived=true")["flows"] == before


def test_registering_into_an_unknown_project_is_404(api, flow_file):
    resp = api.request("POST", "/api/flows", {
        "project": unique("nope"), "storage": {"type": "Script", "path": str(flow_file)},
        "flow_name": "talk"})
    assert_error(resp, 404, "not_found")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_start_time_outside_years_1_to_9999_in_utc_is_400_and_the_listing_still_works(
        tmp_path, fresh_api, flow_file, when):
    home = tmp_path / "fresh-home"
    home.mkdir()
    cli(home, "project", "create", "p")
    cli(home, "register", "-p", "p", flow_file)
    api = fresh_api(home)
    resp = api.request("POST", "/api/flow_runs",
                       {"flow": "p/talk", "scheduled_start_time": when})
    assert_error(resp, 400, "bad_request", "scheduled_start_time")
    assert api.request("GET", "/api/flow_runs").status == 200


# -- 3. flow runs -----------------------------------------------------------------
def test_creating_a_run_by_name_gives_201_and_the_run_with_utc_times(api, flow_file):
    run = api.create_run("p/talk", parameters={"word": "hello"}, name="by-name",
                         labels=["blue"], scheduled_start_time="2031-02-03T04:05:06+02:00")
    assert run["flow"] == "p/talk" and run["flow_name"] == "talk" and run["project"] == "p"
    assert run["state"] == "Scheduled"
    assert run["parameters"] == {"word": "hello"}
    assert run["name"] == "by-name" and run["labels"] == ["blue"]
    assert run["scheduled_start_time"] == "2031-02-03T02:05:06+00:00"
    for key in ("scheduled_start_time", "created", "updated"):
        assert_utc_iso(run[key])
    assert run["start_time"] is None and run["end_time"] is None
    assert api.get(f"/api/flow_runs/{run['id']}") == run


def test_creating_a_run_by_flow_id(api, flow_file):
    flow_id = api.flow_id("p/echo")
    run = api.create_run(flow_id)
    assert run["flow_id"] == flow_id and run["flow"] == "p/echo"
    assert run["parameters"] == {}


def test_the_same_idempotency_key_twice_gives_one_run(api, flow_file):
    key = unique("key")
    first = api.request("POST", "/api/flow_runs", {"flow": "p/talk", "idempotency_key": key})
    second = api.request("POST", "/api/flow_runs", {"flow": "p/talk", "idempotency_key": key})
    assert first.status == 201, first
    assert second.status == 200, second
    assert second.json["id"] == first.json["id"]
    assert [r for r in api.all_runs("&flow=p/talk") if r["idempotency_key"] == key] \
        == [api.get(f"/api/flow_runs/{first.json['id']}")]


def test_an_idempotency_key_used_for_another_flow_is_409(api, flow_file):
    key = unique("key")
    api.create_run("p/talk", idempotency_key=key)
    before = len(api.all_runs())
    resp = api.request("POST", "/api/flow_runs", {"flow": "p/echo", "idempotency_key": key})
    assert_error(resp, 409, "conflict")
    assert len(api.all_runs()) == before


def test_an_idempotency_key_finds_its_run_after_the_flow_is_registered_again(
        api, registered_store):
    name = unique("idem")
    registered_store(ONE_FLOW.format(name=name, default=1), f"{name}.py")
    key = unique("key")
    first = api.create_run(f"p/{name}", idempotency_key=key)
    registered_store(ONE_FLOW.format(name=name, default=2), f"{name}.py")  # version 2
    assert api.get(f"/api/flows/{api.flow_id('p/' + name)}")["version"] == 2
    retry = api.request("POST", "/api/flow_runs", {"flow": f"p/{name}", "idempotency_key": key})
    assert retry.status == 200, retry
    assert retry.json["id"] == first["id"]


def test_runs_are_listed_by_flow_and_by_state(api, registered_store):
    name = unique("states")
    store = registered_store(ONE_FLOW.format(name=name, default=1), f"{name}.py")
    scheduled = api.create_run(f"p/{name}")["id"]
    cancelled = api.create_run(f"p/{name}")["id"]
    failed = api.create_run(f"p/{name}")["id"]
    other = api.create_run("p/talk")["id"]
    api.call("POST", f"/api/flow_runs/{cancelled}/cancel")
    end_run(store, failed, "Failed", "it broke")

    def ids(query):
        return {r["id"] for r in api.get(f"/api/flow_runs?flow=p/{name}{query}")["flow_runs"]}

    assert ids("") == {scheduled, cancelled, failed}
    assert {r["id"] for r in api.get(
        f"/api/flow_runs?flow={api.flow_id('p/' + name)}")["flow_runs"]} == ids("")
    assert ids("&state=Scheduled") == {scheduled}
    assert ids("&state=Scheduled&state=Cancelled") == {scheduled, cancelled}
    assert ids("&state=Scheduled,Failed") == {scheduled, failed}
    assert ids("&state=Cancelled,Failed&state=Scheduled") == {scheduled, cancelled, failed}
    assert ids("&state=Success") == set()
    every = {r["id"] for r in api.all_runs("&state=Failed")}
    assert failed in every and scheduled not in every
    assert other not in ids("&state=Scheduled") and other in {
        r["id"] for r in api.all_runs("&state=Scheduled")}


def test_runs_are_listed_by_scheduled_time_since_inclusive_until_exclusive(
        api, registered_store):
    name = unique("times")
    registered_store(ONE_FLOW.format(name=name, default=1), f"{name}.py")
    day = {d: api.create_run(f"p/{name}", scheduled_start_time=f"2030-01-0{d}T00:00:00Z")["id"]
           for d in (1, 2, 3)}

    def ids(query):
        return [r["id"] for r in api.get(f"/api/flow_runs?flow=p/{name}{query}")["flow_runs"]]

    assert ids("&since=2030-01-02T00:00:00%2B00:00") == [day[3], day[2]]
    assert ids("&until=2030-01-02T00:00:00Z") == [day[1]]
    assert ids("&since=2030-01-02T00:00:00Z&until=2030-01-03T00:00:00Z") == [day[2]]
    assert ids("&since=2030-01-02T01:00:00%2B01:00&until=2030-01-02T00:00:01Z") == [day[2]]


def test_cursor_pagination_walks_every_run_once_newest_first(api, registered_store):
    name = unique("pages")
    registered_store(ONE_FLOW.format(name=name, default=1), f"{name}.py")
    created = [api.create_run(f"p/{name}")["id"] for _ in range(7)]
    seen, sizes, cursor = [], [], None
    while True:
        page = api.get(f"/api/flow_runs?flow=p/{name}&limit=3"
                       + (f"&cursor={cursor}" if cursor else ""))
        seen += [r["id"] for r in page["flow_runs"]]
        sizes.append(len(page["flow_runs"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor.isdigit()
    assert sizes == [3, 3, 1]
    assert seen == sorted(created, reverse=True)


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"),
    ("cursor=abc", "cursor"), ("cursor=-5", "cursor"), ("state=Bogus", "state"),
    ("state=Scheduled,bogus", "state"), ("since=2024-01-01T00:00:00", "since"),
    ("until=yesterday", "until"),
])
def test_bad_listing_queries_are_400_naming_the_parameter(api, query, field):
    assert_error(api.request("GET", f"/api/flow_runs?{query}"), 400, "bad_request", field)


def test_listing_runs_of_an_unknown_flow_is_404(api, flow_file):
    assert_error(api.request("GET", f"/api/flow_runs?flow=p/{unique('nope')}"), 404,
                 "not_found")


def test_renaming_a_run(api, flow_file):
    run = api.create_run("p/talk")
    renamed = api.call("PATCH", f"/api/flow_runs/{run['id']}", {"name": "new name"})
    assert renamed["name"] == "new name" and renamed["id"] == run["id"]
    assert api.get(f"/api/flow_runs/{run['id']}")["name"] == "new name"
    for body, field in (({"name": ""}, "name"), ({}, "name"),
                        ({"name": "x", "state": "Success"}, "state")):
        assert_error(api.request("PATCH", f"/api/flow_runs/{run['id']}", body), 400,
                     "bad_request", field)
    assert_error(api.request("PATCH", "/api/flow_runs/9223372036854775807",
                             {"name": "x"}), 404, "not_found")
    assert api.get(f"/api/flow_runs/{run['id']}")["name"] == "new name"


def test_cancelling_a_scheduled_run_cancels_it(api, flow_file):
    run = api.create_run("p/talk")
    cancelled = api.call("POST", f"/api/flow_runs/{run['id']}/cancel")
    assert cancelled["state"] == "Cancelled"
    assert_utc_iso(cancelled["end_time"])
    assert api.get(f"/api/flow_runs/{run['id']}")["state"] == "Cancelled"
    states = api.get(f"/api/flow_runs/{run['id']}/states")["states"]
    assert [s["state"] for s in states] == ["Scheduled", "Cancelled"]


def test_cancelling_a_finished_run_is_409(api, executed_run):
    resp = api.request("POST", f"/api/flow_runs/{executed_run}/cancel")
    assert_error(resp, 409, "conflict")
    assert api.get(f"/api/flow_runs/{executed_run}")["state"] == "Success"


def test_explain_says_no_agent_is_running(api, flow_file):
    run = api.create_run("p/talk")
    explained = api.get(f"/api/flow_runs/{run['id']}/explain")
    assert explained["id"] == run["id"] and explained["state"] == "Scheduled"
    assert any("No agent is running" in reason for reason in explained["reasons"]), explained


def test_an_executed_run_has_its_task_runs_states_and_logs(served_api, executed_run):
    run = served_api.get(f"/api/flow_runs/{executed_run}")
    assert run["state"] == "Success"
    assert_utc_iso(run["start_time"])
    assert_utc_iso(run["end_time"])

    task_runs = served_api.get(f"/api/flow_runs/{executed_run}/task_runs")["task_runs"]
    assert {t["task_name"]: t["state"] for t in task_runs}["speak"] == "Success"
    for task_run in task_runs:
        assert_utc_iso(task_run["start_time"])

    states = [s["state"]
              for s in served_api.get(f"/api/flow_runs/{executed_run}/states")["states"]]
    assert states == ["Scheduled", "Running", "Success"]

    logs = served_api.get(f"/api/flow_runs/{executed_run}/logs")
    assert logs["run_state"] == "Success"
    messages = [line["message"] for line in logs["logs"]]
    assert "saying bird" in messages and "careful with bird" in messages
    ids = [line["id"] for line in logs["logs"]]
    assert ids == sorted(ids) and logs["next_cursor"] == str(ids[-1])
    for line in logs["logs"]:
        assert_utc_iso(line["time"])


def test_the_logs_cursor_gives_only_newer_lines(api, executed_run):
    every = api.get(f"/api/flow_runs/{executed_run}/logs")["logs"]
    assert len(every) > 3
    first = api.get(f"/api/flow_runs/{executed_run}/logs?limit=3")
    assert first["logs"] == every[:3]
    assert first["next_cursor"] == str(every[2]["id"])
    rest = api.get(f"/api/flow_runs/{executed_run}/logs?cursor={first['next_cursor']}")
    assert rest["logs"] == every[3:]
    assert rest["next_cursor"] == str(every[-1]["id"])
    tail = api.get(f"/api/flow_runs/{executed_run}/logs?cursor={rest['next_cursor']}")
    assert tail["logs"] == [] and tail["next_cursor"] == rest["next_cursor"]


def test_the_logs_level_filter_keeps_that_level_and_above(api, executed_run):
    warnings = api.get(f"/api/flow_runs/{executed_run}/logs?level=WARNING")["logs"]
    assert [line["message"] for line in warnings] == ["careful with bird"]
    assert warnings[0]["level"] == 30 and warnings[0]["level_name"] == "WARNING"
    assert api.get(f"/api/flow_runs/{executed_run}/logs?level=ERROR")["logs"] == []
    assert_error(api.request("GET", f"/api/flow_runs/{executed_run}/logs?level=LOUD"), 400,
                 "bad_request", "level")


def test_the_logs_task_filter_keeps_that_tasks_lines(api, executed_run):
    lines = api.get(f"/api/flow_runs/{executed_run}/logs?task=speak-1")["logs"]
    assert {line["task_slug"] for line in lines} == {"speak-1"}
    messages = [line["message"] for line in lines]
    assert "saying bird" in messages and "careful with bird" in messages
    assert "Task 'speak': Starting task run..." in messages  # the runner's line is the task's
    assert not any("Flow run" in m for m in messages)
    assert api.get(f"/api/flow_runs/{executed_run}/logs?task=nothing-1")["logs"] == []


def test_the_parts_of_an_unknown_run_are_404(api):
    for part in ("", "/explain", "/task_runs", "/states", "/logs"):
        assert_error(api.request("GET", f"/api/flow_runs/9223372036854775807{part}"), 404,
                     "not_found")
    assert_error(api.request("POST", "/api/flow_runs/9223372036854775807/cancel"), 404,
                 "not_found")


# -- 4. flows ---------------------------------------------------------------------
def test_flows_are_listed_and_one_is_shown_with_its_parameter_defaults(api, flow_file):
    flows = {f["full_name"]: f for f in api.get("/api/flows")["flows"]}
    assert {"p/talk", "p/echo", "p/ticker"} <= set(flows)
    talk = api.get(f"/api/flows/{flows['p/talk']['id']}")
    assert talk == flows["p/talk"]
    assert talk["parameters"] == [{"name": "word", "required": False,
                                   "callable_default": False, "default": "hi"}]
    assert talk["storage"]["type"] == "Script"
    assert talk["schedule"] is None
    assert_utc_iso(talk["created"])
    assert flows["p/ticker"]["schedule"] is not None
    assert [f["full_name"] for f in api.get("/api/flows?project=nobody")["flows"]] == []


def test_registering_a_script_over_rest_is_201_then_200_unchanged(api, flow_file, tmp_path):
    name = unique("rest")
    path = tmp_path / f"{name}.py"
    path.write_text(ONE_FLOW.format(name=name, default=21))
    body = {"project": "p", "storage": {"type": "Script", "path": str(path)},
            "labels": ["rest"]}
    first = api.call("POST", "/api/flows", body, expect=201)
    assert first["full_name"] == f"p/{name}" and first["version"] == 1
    assert first["parameters"] == [{"name": "x", "required": False,
                                    "callable_default": False, "default": 21}]
    assert first["storage"]["type"] == "Script" and first["storage"]["path"] == str(path)
    assert "rest" in first["labels"]
    again = api.call("POST", "/api/flows", body, expect=200)
    assert (again["id"], again["version"]) == (first["id"], first["version"])
    assert api.get(f"/api/flows/{first['id']}")["full_name"] == f"p/{name}"
    run = api.create_run(f"p/{name}", parameters={"x": 4})
    assert run["flow_id"] == first["id"]


def test_a_flow_file_that_exits_while_loading_cannot_stop_the_server(served_api, flow_file,
                                                                            tmp_path):
    # Registration runs the flow's code; it runs in a child process, not the server.
    path = tmp_path / "exits.py"
    path.write_text("import os, sys\nprint('about to leave', file=sys.stderr)\nos._exit(3)\n")
    resp = served_api.request("POST", "/api/flows", {
        "project": "p", "storage": {"type": "Script", "path": str(path)}})
    error = assert_error(resp, 400, "bad_request", "storage")
    assert "exited with code 3" in error["message"]
    assert "about to leave" in error["message"]
    assert served_api.request("GET", "/api/health").status == 200


def test_what_a_flow_file_prints_while_loading_does_not_spoil_its_registration(api, flow_file,
                                                                                tmp_path):
    name = unique("chatty-import")
    path = tmp_path / f"{name}.py"
    path.write_text('print("hello from the import")\n' + ONE_FLOW.format(name=name, default=1))
    flow = api.call("POST", "/api/flows", {
        "project": "p", "storage": {"type": "Script", "path": str(path)}}, expect=201)
    assert flow["full_name"] == f"p/{name}"


def test_registering_one_flow_of_a_file_named_in_the_body(api, flow_file):
    resp = api.request("POST", "/api/flows", {
        "project": "p", "storage": {"type": "Script", "path": str(flow_file)},
        "flow_name": "echo"})
    assert resp.status in (200, 201), resp
    assert resp.json["full_name"] == "p/echo"


def test_registering_one_flow_of_a_file_named_in_the_storage_reference(api, flow_file):
    resp = api.request("POST", "/api/flows", {
        "project": "p",
        "storage": {"type": "Script", "path": str(flow_file), "flow_name": "echo"}})
    assert resp.status in (200, 201), resp
    assert resp.json["full_name"] == "p/echo"


def test_a_flow_schedule_is_paused_and_resumed(api, flow_file):
    ticker = api.flow_id("p/ticker")
    paused = api.call("POST", f"/api/flows/{ticker}/schedule/pause")
    assert paused["id"] == ticker and paused["schedule_active"] is False
    assert isinstance(paused["deleted_runs"], int) and paused["deleted_runs"] >= 0
    assert api.get(f"/api/flows/{ticker}")["schedule_active"] is False
    resumed = api.call("POST", f"/api/flows/{ticker}/schedule/resume")
    assert resumed["schedule_active"] is True
    assert api.get(f"/api/flows/{ticker}")["schedule_active"] is True


def test_pausing_a_flow_without_a_schedule_is_409(api, flow_file):
    talk = api.flow_id("p/talk")
    for action in ("pause", "resume"):
        assert_error(api.request("POST", f"/api/flows/{talk}/schedule/{action}"), 409,
                     "conflict")
    assert_error(api.request("POST", "/api/flows/9223372036854775807/schedule/pause"), 404,
                 "not_found")


# -- 5. agents, limits, secrets ---------------------------------------------------
def test_agents_are_listed_with_their_labels(tmp_path, fresh_api):
    from orchestrator.store import Store

    home = tmp_path / "fresh-home"
    api = fresh_api(home)
    assert api.get("/api/agents") == {"agents": []}
    store = Store.open(home=home)
    try:
        store.register_agent("agent-1", ["gpu", "etl"], "host-a", 4242, limit=3)
    finally:
        store.close()
    [agent] = api.get("/api/agents")["agents"]
    assert agent["name"] == "agent-1" and agent["labels"] == ["etl", "gpu"]
    assert agent["host"] == "host-a" and agent["pid"] == 4242 and agent["limit"] == 3
    assert agent["alive"] is True and agent["running"] == []
    assert_utc_iso(agent["started"])
    assert_utc_iso(agent["last_seen"])


@pytest.mark.parametrize("kind", ["label", "tag"])
def test_concurrency_limits_are_set_listed_and_deleted(api, kind):
    label = unique(kind)
    path = f"/api/concurrency_limits/{kind}/{label}"
    assert api.call("PUT", path, {"limit": 2}) == {"kind": kind, "label": label, "limit": 2,
                                                   "holders": []}
    assert api.call("PUT", path, {"limit": 0})["limit"] == 0

    def listed():
        return [entry for entry in api.get("/api/concurrency_limits")["concurrency_limits"]
                if entry["label"] == label]

    assert listed() == [{"kind": kind, "label": label, "limit": 0, "holders": []}]
    assert api.call("DELETE", path, expect=204) is None
    assert listed() == []
    assert_error(api.request("DELETE", path), 404, "not_found")


def test_a_limit_kind_other_than_label_or_tag_is_404(api):
    assert_error(api.request("PUT", "/api/concurrency_limits/flow/x", {"limit": 1}), 404,
                 "not_found", "kind")
    assert_error(api.request("DELETE", "/api/concurrency_limits/flow/x"), 404, "not_found",
                 "kind")


@pytest.mark.parametrize("body", [
    {"limit": -1}, {"limit": 100001}, {"limit": 10 ** 30}, {"limit": True}, {"limit": 1.5},
    {"limit": "3"}, {"limit": None}, {},
], ids=["negative", "over-max", "huge", "bool", "float", "string", "null", "missing"])
def test_a_bad_limit_is_400(api, body):
    label = unique("bad")
    resp = api.request("PUT", f"/api/concurrency_limits/label/{label}", body)
    assert_error(resp, 400, "bad_request", "limit")
    assert all(entry["label"] != label
               for entry in api.get("/api/concurrency_limits")["concurrency_limits"])


def test_secret_values_are_written_but_never_read_back(api):
    from orchestrator.store import Store

    name, value = unique("SECRET"), f"s3cr3t-{uuid.uuid4().hex}"
    assert api.call("PUT", f"/api/secrets/{name}", {"value": value}, expect=204) is None
    assert {"name": name} in api.get("/api/secrets")["secrets"]
    store = Store.open()
    try:
        assert store.get_secret(name) == value
    finally:
        store.close()
    # Bad requests that carry the value must not echo it either.
    assert_error(api.request("PUT", f"/api/secrets/{name}", {"value": value, "x": value}),
                 400, "bad_request", "x")
    assert_error(api.request("PUT", f"/api/secrets/{name}", {"value": [value]}), 400,
                 "bad_request", "value")
    api.get("/api/health")
    api.get("/api/openapi.json")
    assert api.call("DELETE", f"/api/secrets/{name}", expect=204) is None
    assert {"name": name} not in api.get("/api/secrets")["secrets"]
    assert_error(api.request("DELETE", f"/api/secrets/{name}"), 404, "not_found")
    assert len(api.bodies) >= 9
    assert [body for body in api.bodies if value.encode() in body] == []


@pytest.mark.parametrize("name", ["%20", "a%00b", "a%0Ab"], ids=["blank", "nul", "newline"])
def test_a_bad_secret_name_is_400(api, name):
    assert_error(api.request("PUT", f"/api/secrets/{name}", {"value": "v"}), 400,
                 "bad_request")


# -- 6. the OpenAPI document ------------------------------------------------------
def test_the_openapi_document_describes_every_served_route(api):
    import falcon.inspect

    from orchestrator.api import create_app
    from orchestrator.store import Store

    document = api.get("/api/openapi.json")
    assert document["openapi"] == "3.1.0"

    store = Store.open()
    try:
        app = create_app(store, token="any")
    finally:
        store.close()
    served = set()
    for route in falcon.inspect.inspect_app(app).routes:
        if not route.path.startswith("/api/"):
            continue  # the web page at / and /static/ is not part of the REST API
        template = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.path)
        served |= {(template, m.method) for m in route.methods if not m.internal}
    documented = {(path, method.upper()) for path, operations in document["paths"].items()
                  for method in operations}
    assert len(served) >= 20
    assert served == documented

    operation_ids = [operation.get("operationId") for operations in document["paths"].values()
                     for operation in operations.values()]
    assert all(operation_ids), operation_ids
    assert len(set(operation_ids)) == len(operation_ids)


# -- one door: the CLI and the API answer a use case alike -------------------------------
def _cli_fails(home, *args):
    import subprocess
    import sys

    from helpers import ROOT, service_env

    proc = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          env=service_env(home), cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().removeprefix("Error: ")


def test_cancelling_a_finished_run_is_refused_alike_by_the_api_and_the_cli(
        api, executed_run, api_home):
    error = assert_error(api.request("POST", f"/api/flow_runs/{executed_run}/cancel"),
                         409, "conflict")

    said = _cli_fails(api_home, "cancel", executed_run)

    assert error["message"] == said
    assert f"Flow run {executed_run} already finished: Success; nothing to cancel" in said


def test_pausing_a_flow_without_a_schedule_is_refused_alike_by_the_api_and_the_cli(
        api, flow_file, api_home):
    path = f"/api/flows/{api.flow_id('p/talk')}/schedule/pause"
    error = assert_error(api.request("POST", path), 409, "conflict")

    said = _cli_fails(api_home, "schedule", "pause", "p/talk")

    assert error["message"] == said
    assert "Flow p/talk has no schedule to pause" in said


def test_the_cli_lists_the_same_limits_as_the_api_task_tags_included(api, api_home):
    label, tag = unique("one-door-label"), unique("one-door-tag")
    assert api.request("PUT", f"/api/concurrency_limits/label/{label}",
                       {"limit": 2}).status == 200
    assert api.request("PUT", f"/api/concurrency_limits/tag/{tag}",
                       {"limit": 1}).status == 200

    listed = json.loads(cli(api_home, "concurrency", "list", "--json"))

    from_api = api.get("/api/concurrency_limits")["concurrency_limits"]
    assert [{k: row[k] for k in ("kind", "label", "limit", "holders")} for row in listed] \
        == from_api
    assert {(row["kind"], row["label"]) for row in listed} >= {("label", label), ("tag", tag)}


def test_an_empty_secret_is_refused_by_the_api_as_by_the_cli(api, api_home):
    name = unique("EMPTY")
    error = assert_error(api.request("PUT", f"/api/secrets/{name}", {"value": ""}), 400,
                         "bad_request", "value")
    assert f"Secret {name!r} would be empty" in error["message"]
    assert {"name": name} not in api.get("/api/secrets")["secrets"]


def test_the_cli_json_and_the_api_give_a_run_the_same_document(api, executed_run, api_home):
    from_api = api.get(f"/api/flow_runs/{executed_run}")

    shown = json.loads(cli(api_home, "show", executed_run, "--json"))
    listed = json.loads(cli(api_home, "runs", "--flow", "p/talk", "--limit", "100000",
                            "--json"))

    assert {k: v for k, v in shown.items() if k not in ("task_runs", "artifacts")} == from_api
    assert next(row for row in listed if row["id"] == executed_run) == from_api
    assert from_api["agent"] is None and from_api["state"] == "Success"


def test_the_cli_and_the_api_show_task_runs_artifacts_and_log_lines_as_the_same_documents(
        api, executed_run, api_home):
    shown = json.loads(cli(api_home, "show", executed_run, "--json"))
    logged = [json.loads(line) for line in cli(api_home, "logs", executed_run, "--json")
              .splitlines()]

    task_runs = api.get(f"/api/flow_runs/{executed_run}/task_runs")["task_runs"]
    assert [{k: v for k, v in t.items() if k != "task"} for t in shown["task_runs"]] \
        == task_runs
    assert shown["artifacts"] == api.get(f"/api/flow_runs/{executed_run}/artifacts")["artifacts"]
    lines = api.get(f"/api/flow_runs/{executed_run}/logs")["logs"]
    # The CLI keeps the level's name under `level` and the task's slug under `task`.
    assert [{k: v for k, v in line.items() if k not in ("level", "task")} for line in logged] \
        == [{k: v for k, v in line.items() if k != "level"} for line in lines]
    assert task_runs and lines


def test_what_is_missing_is_said_alike_and_each_edge_adds_its_own_advice(api, api_home):
    error = assert_error(api.request("GET", "/api/flow_runs/999999999"), 404, "not_found")
    said = _cli_fails(api_home, "show", "999999999")

    assert error["message"] == "No flow run with id 999999999; list runs with GET /api/flow_runs"
    assert said == "No flow run with id 999999999; list runs with: orchestrator runs"
    secret = unique("MISSING")
    error = assert_error(api.request("DELETE", f"/api/secrets/{secret}"), 404, "not_found")
    assert error["message"].endswith(f"Set it with PUT /api/secrets/{secret}")
    assert _cli_fails(api_home, "secret", "delete", secret).endswith(
        f"Set it with: orchestrator secret set {secret}")
