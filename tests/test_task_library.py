"""The Prefect 1 task library (orchestrator.tasks.*) and the notifying state
handlers (orchestrator.notifications), run in flows against real things: shell
commands, SQLite files, a local HTTP server standing in for Slack, a local SMTP
server (plain, STARTTLS and SSL, with a certificate made for the test), and
child flow runs executed from a real store.

Each behaviour was checked against Prefect 1.4.1; where we differ on purpose
the test says so.
"""

import base64
import binascii
import email
import http.server
import json
import os
import shutil
import socketserver
import ssl
import subprocess
import threading
import time
from contextlib import closing

import pytest

from orchestrator import Flow, Parameter, service, task
from orchestrator.service import execution as backend
from orchestrator.core import task as engine_tasks
from orchestrator.exceptions import InputError, TaskDefinitionError
from orchestrator.notifications import gmail_notifier, slack_notifier
from orchestrator.run_configs import LocalRun
from orchestrator.states import Failed, Running, Success, TimedOut
from orchestrator.store import Store
from orchestrator.tasks import defaults_from_attrs
from orchestrator.tasks import core as core_tasks
from orchestrator.tasks.control_flow import FilterTask, case, merge
from orchestrator.tasks.flow_runs import StartFlowRun, create_flow_run, get_task_run_result
from orchestrator.tasks.notifications import EmailTask, NotificationError, SlackTask
from orchestrator.tasks.secrets import EnvVarSecret, PrefectSecret, SecretTask, revealed_values
from orchestrator.tasks.shell import ShellTask
from orchestrator.tasks.sqlite import SQLiteQuery, SQLiteScript


def run_states(flow, **kwargs):
    return flow.run(**kwargs).result


# -- core tasks ----------------------------------------------------------------------
def test_core_tasks_are_the_engines_own_classes():
    assert core_tasks.FunctionTask is engine_tasks.FunctionTask
    assert core_tasks.Constant is engine_tasks.Constant
    assert isinstance(core_tasks.Add(), engine_tasks._OperatorTask)
    assert isinstance(core_tasks.GetItem(), engine_tasks.GetItem)
    assert isinstance(core_tasks.List(), engine_tasks._Collection)
    assert isinstance(core_tasks.Dict(), engine_tasks._Collection)


def test_operator_tasks_give_what_python_gives():
    ops = core_tasks
    cases = [(ops.Add, (7, 2), 9), (ops.Sub, (7, 2), 5), (ops.Mul, (7, 2), 14),
             (ops.Div, (7, 2), 3.5), (ops.FloorDiv, (7, 2), 3), (ops.Pow, (7, 2), 49),
             (ops.Mod, (7, 2), 1), (ops.And, (3, 5), 5), (ops.Or, (0, 5), 5),
             (ops.Equal, (2, 2), True), (ops.NotEqual, (2, 2), False),
             (ops.GreaterThan, (3, 2), True), (ops.GreaterThanOrEqual, (2, 2), True),
             (ops.LessThan, (3, 2), False), (ops.LessThanOrEqual, (2, 3), True)]
    with Flow("operators") as flow:
        made = [(cls(), cls()(*args), expected) for cls, args, expected in cases]
        negated = ops.Not()(0)
        by_name = ops.Add()(x=1, y=2)
    states = run_states(flow)
    for template, made_task, expected in made:
        assert made_task.name == type(template).__name__
        assert states[made_task].result == expected, type(template).__name__
    assert states[negated].result is True
    assert states[by_name].result == 3


def test_collection_and_item_tasks_as_in_prefect_1():
    ops = core_tasks

    @task
    def numbers():
        return {"a": 1}

    with Flow("collections") as flow:
        n = numbers()
        eleven = ops.List()(*range(11))          # arg_10 and arg_11 stay after arg_9
        pair = ops.Tuple()(n, 2)
        unique = ops.Set()(1, 1, 2)
        mapping = ops.Dict()(keys=["x", "y"], values=[n, 2])
        uneven = ops.Dict()(keys=["x"], values=[1, 2])
        item = ops.GetItem()(n, "a")
        fallback = ops.GetItem(default=0)(n, "missing")
        missing = ops.GetItem()(n, "missing")
        attr = ops.GetAttr()(1j, "imag.real")
        attr_fallback = ops.GetAttr(default="none")(1j, "nope")
        doubled = ops.FunctionTask(lambda x: x * 2, name="double")(4)
        constant = ops.Constant([1, 2, 3])
        flow.add_task(constant)
    states = run_states(flow)
    assert states[eleven].result == list(range(11))
    assert states[pair].result == ({"a": 1}, 2)
    assert states[unique].result == {1, 2}
    assert states[mapping].result == {"x": {"a": 1}, "y": 2}
    assert states[uneven].is_failed()
    assert "2 values" in states[uneven].message
    assert states[item].result == 1
    assert states[fallback].result == 0
    assert states[missing].is_failed() and isinstance(states[missing].result, KeyError)
    assert states[attr].result == 1.0
    assert states[attr_fallback].result == "none"
    assert (doubled.name, states[doubled].result) == ("double", 8)
    assert (constant.name, states[constant].result) == ("Constant[list]", [1, 2, 3])


def test_core_tasks_take_task_settings():
    plus = core_tasks.Add(name="plus", tags=["math"], max_retries=1, retry_delay=1)
    assert (plus.name, plus.tags, plus.max_retries) == ("plus", {"math"}, 1)
    assert core_tasks.GetItem(0, "first").name == "first"   # default, then Task's name
    with pytest.raises(TypeError, match="both by position and by name"):
        with Flow("clash"):
            core_tasks.List()(1, arg_1=2)


def test_defaults_from_attrs_fills_only_what_is_not_given():
    class Template(engine_tasks.Task):
        def __init__(self, a=None, b=None, **kwargs):
            self.a, self.b = a, b
            super().__init__(**kwargs)

        @defaults_from_attrs("a", "b")
        def run(self, a=None, b=None):
            return a, b

    t = Template(a=1, b=2)
    assert t.run() == (1, 2)
    assert t.run(a=9) == (9, 2)
    assert t.run(a=None, b=None) == (None, None)   # as in Prefect 1: given is given
    assert t.run(5) == (5, 2)                        # Prefect 1: "multiple values" TypeError
    with Flow("template") as flow:
        called = t(b=3)
    assert run_states(flow)[called].result == (1, 3)


# -- control flow --------------------------------------------------------------------
@task
def reciprocal(x):
    return 1 / x


def test_filter_task_drops_failed_and_skipped_results_and_runs_after_failures(log_records):
    @task
    def only_odd(x):
        if x % 2 == 0:
            from orchestrator.signals import SKIP

            raise SKIP("even")
        return x

    keep_big = FilterTask(filter_func=lambda x: x > 0.4,
                          log_func=lambda kept: f"kept {kept}")
    with Flow("filtering") as flow:
        divided = reciprocal.map([1, 0, 2, 4])
        clean = FilterTask()(divided)
        big = keep_big(clean)
        odd = FilterTask()(only_odd.map([1, 2, 3]))
    states = run_states(flow)
    assert states[divided].map_states[1].is_failed()
    assert states[clean].result == [1.0, 0.5, 0.25]
    assert states[big].result == [1.0, 0.5]
    assert "kept [1.0, 0.5]" in log_records.messages("orchestrator.task")
    assert states[odd].result == [1, 3]


def test_filter_task_checks_its_functions_and_the_branches_have_a_home_here():
    with pytest.raises(TypeError, match="filter_func=3 is not callable"):
        FilterTask(filter_func=3)
    from orchestrator import case as exported_case, merge as exported_merge

    assert (case, merge) == (exported_case, exported_merge)


# -- shell -------------------------------------------------------------------------
def test_shell_task_returns_the_last_line_or_all_lines_or_none():
    with Flow("shell") as flow:
        last = ShellTask()(command="echo one; echo two")
        both = ShellTask(return_all=True)(command="echo one; echo two >&2")  # stderr too
        silent = ShellTask()(command="true")
        silent_all = ShellTask(return_all=True)(command="true")
        helped = ShellTask(helper_script="GREETING=hello", shell="sh")(
            command='echo "$GREETING $WHO"', env={"WHO": "world"})
    states = run_states(flow)
    assert states[last].result == "two"
    assert states[both].result == ["one", "two"]
    assert states[silent].result is None
    assert states[silent_all].result == []
    assert states[helped].result == "hello world"


def test_shell_task_fails_on_a_non_zero_exit_as_prefect_1_does(log_records):
    with Flow("shell-fails") as flow:
        quiet = ShellTask()(command="echo partial; exit 3")
        loud = ShellTask(log_stderr=True, return_all=True)(command="echo a; echo b >&2; exit 4")
    states = run_states(flow)
    assert isinstance(states[quiet], Failed)
    assert states[quiet].message == "Command failed with exit code 3"
    assert states[quiet].result == "partial"
    assert states[loud].result == ["a", "b"]
    errors = [r.getMessage() for r in log_records.records if r.levelname == "ERROR"]
    assert "Command failed with exit code 4" in errors
    assert "a\nb" in errors
    assert "partial" not in errors  # log_stderr off: the output is not logged


def test_shell_task_streams_lines_at_the_level_asked(log_records):
    shell = ShellTask(stream_output="WARNING")
    assert shell.stream_output == 30
    with Flow("stream") as flow:
        shell(command="echo first; echo second")
    flow.run()
    warned = [r.getMessage() for r in log_records.records if r.levelname == "WARNING"]
    assert warned[:2] == ["first", "second"]
    with pytest.raises(TypeError, match="'LOUD' is not a log level"):
        ShellTask(stream_output="LOUD")


def test_shell_task_without_a_command_or_with_a_missing_shell_says_what_to_pass():
    with Flow("shell-misuse") as flow:
        bare = ShellTask()()
        no_shell = ShellTask(shell="no-such-shell-here")(command="true")
    states = run_states(flow)
    assert "has no command: pass command=" in states[bare].message
    assert "cannot start the shell 'no-such-shell-here'" in states[no_shell].message


def test_a_shell_task_that_times_out_kills_its_command(tmp_path):
    pid_file = tmp_path / "pid"
    with Flow("shell-timeout") as flow:
        slow = ShellTask(timeout=1)(command=f"echo $$ > {pid_file}; exec sleep 60")
    states = run_states(flow)
    assert isinstance(states[slow], TimedOut)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), f"the command (pid {pid}) is still running"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- sqlite ------------------------------------------------------------------------
def test_sqlite_tasks_run_a_script_and_queries(tmp_path):
    db = str(tmp_path / "app.db")
    query = SQLiteQuery(db=db)
    with Flow("sqlite") as flow:
        made = SQLiteScript(db=db, script="CREATE TABLE t (x INTEGER); "
                                          "INSERT INTO t VALUES (1); INSERT INTO t VALUES (5);")()
        added = query(query="INSERT INTO t VALUES (?)", data=(7,), upstream_tasks=[made])
        rows = query(query="SELECT x FROM t WHERE x > ? ORDER BY x", data=(2,),
                     upstream_tasks=[added])
    states = run_states(flow)
    assert states[made].result is None
    assert states[added].result == []
    # Prefect 1 loses the INSERT (it never commits); here it is kept.
    assert states[rows].result == [(5,), (7,)]


def test_sqlite_tasks_say_what_is_missing(tmp_path):
    db = str(tmp_path / "app.db")
    with Flow("sqlite-misuse") as flow:
        no_db = SQLiteQuery(query="SELECT 1")()
        no_query = SQLiteQuery(db=db)()
        no_data = SQLiteQuery(db=db, query="SELECT ?")()
        no_script = SQLiteScript(db=db)()
        bad_sql = SQLiteQuery(db=db, query="SELEC 1")()
    states = run_states(flow)
    assert "the db must be specified" in states[no_db].message
    assert "the query string must be specified" in states[no_query].message
    assert "data inputs must be specified as a tuple" in states[no_data].message
    assert "query script string must be specified" in states[no_script].message
    assert "syntax error" in states[bad_sql].message
    assert isinstance(states[no_db].result, ValueError)


# -- secrets -----------------------------------------------------------------------
def test_env_var_secret_casts_and_says_when_it_is_missing(monkeypatch):
    monkeypatch.setenv("TASK_LIBRARY_WORKERS", "4")
    monkeypatch.delenv("TASK_LIBRARY_UNSET", raising=False)
    with Flow("env-secrets") as flow:
        workers = EnvVarSecret("TASK_LIBRARY_WORKERS", cast=int)()
        unset = EnvVarSecret("TASK_LIBRARY_UNSET")()
        required = EnvVarSecret("TASK_LIBRARY_UNSET", raise_if_missing=True)()
    states = run_states(flow)
    assert states[workers].result == 4
    assert states[unset].result is None
    assert "Environment variable not set: TASK_LIBRARY_UNSET" in states[required].message
    assert "4" in revealed_values()
    assert workers.checkpoint is False and workers.name == "TASK_LIBRARY_WORKERS"
    with pytest.raises(TaskDefinitionError, match="cast='int' is not callable"):
        EnvVarSecret("X", cast="int")


def test_prefect_secret_reads_the_context_first_then_local_secrets(monkeypatch):
    assert PrefectSecret is SecretTask
    monkeypatch.setenv("ORCHESTRATOR__LOCAL_SECRETS__TASK_LIBRARY_TOKEN", "from-env")
    with Flow("secrets") as flow:
        token = PrefectSecret("TASK_LIBRARY_TOKEN")()
    assert run_states(flow)[token].result == "from-env"
    given = {"secrets": {"TASK_LIBRARY_TOKEN": "from-context"}}
    assert run_states(flow, context=given)[token].result == "from-context"
    with pytest.raises(TaskDefinitionError, match="result= cannot be set on a secret task"):
        PrefectSecret("X", result=object())


# -- Slack -------------------------------------------------------------------------
class WebhookServer(http.server.ThreadingHTTPServer):
    """A stand-in for Slack's webhooks: records each POST's path and JSON body
    and answers with `status` (Slack answers 200 "ok")."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.posts = []
        self.status = 200

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/services/T0/B0/secret"


class _WebhookHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.path, self.headers["Content-Type"], json.loads(body)))
        answer = b"ok" if self.server.status == 200 else b"invalid_payload"
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch):
    server = WebhookServer()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    # As Prefect 1 users set a local secret: in the environment.
    monkeypatch.setenv("ORCHESTRATOR__LOCAL_SECRETS__SLACK_WEBHOOK_URL", server.url)
    yield server
    server.shutdown()
    server.server_close()


def test_slack_task_posts_text_or_a_dict_to_the_webhook_in_the_secret(webhook):
    with Flow("slack") as flow:
        SlackTask(message="loaded 3 rows")()
        SlackTask()(message={"blocks": [{"type": "divider"}]})
        SlackTask(webhook_secret="NO_SUCH_SECRET")(message="direct", webhook_url=webhook.url)
    states = run_states(flow)
    assert all(s.is_successful() for s in states.values())
    bodies = sorted((json.dumps(body) for _, _, body in webhook.posts))
    assert bodies == sorted([json.dumps({"text": "loaded 3 rows"}),
                             json.dumps({"blocks": [{"type": "divider"}]}),
                             json.dumps({"text": "direct"})])
    assert {path for path, _, _ in webhook.posts} == {"/services/T0/B0/secret"}
    assert {kind for _, kind, _ in webhook.posts} == {"application/json"}


def test_slack_task_fails_when_the_webhook_refuses(webhook):
    webhook.status = 400
    with Flow("slack-refused") as flow:
        sent = SlackTask(message="hi")()
    state = run_states(flow)[sent]
    assert state.is_failed()
    assert "The Slack webhook answered 400 Bad Request: invalid_payload" in state.message
    assert webhook.url not in state.message  # the URL is a secret


def test_slack_notifier_bare_and_with_settings(webhook):
    @task(state_handlers=[slack_notifier])
    def fine():
        return 1

    @task(state_handlers=[slack_notifier(only_states=[Failed])])
    def broken():
        raise ValueError("disk on fire")

    with Flow("notified", state_handlers=[slack_notifier(ignore_states=[Running])]) as flow:
        fine()
        broken()
    flow.run()
    texts = [body["attachments"][0]["text"] for _, _, body in webhook.posts]
    assert sorted(texts) == sorted(["fine is now in a Running state",
                                    "fine is now in a Success state",
                                    "broken is now in a Failed state",
                                    "notified is now in a Failed state"])
    failure = next(body["attachments"][0] for _, _, body in webhook.posts
                   if body["attachments"][0]["text"].startswith("broken"))
    assert failure["title"] == "Failed"
    assert failure["color"] == Failed.color
    assert failure["fields"][0]["value"] == "```ValueError('disk on fire')```"


def test_a_state_the_notifier_ignores_needs_no_secret_and_sends_nothing(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR__LOCAL_SECRETS__SLACK_WEBHOOK_URL", raising=False)

    @task(state_handlers=[slack_notifier(only_states=[Failed])])
    def fine():
        return 1

    with Flow("quiet") as flow:
        done = fine()
    assert run_states(flow)[done].is_successful()   # Prefect 1 fails: no secret


def test_notifier_settings_are_checked_when_given():
    with pytest.raises(TypeError, match="slack_notifier\\(\\) has no setting 'only_state'"):
        slack_notifier(only_state=[Failed])
    with pytest.raises(InputError, match="only_states='Failed' is not a list of state classes"):
        slack_notifier(only_states="Failed")
    with pytest.raises(TypeError, match="is a state handler"):
        slack_notifier("a", "b")
    handler = gmail_notifier(only_states=[Failed])(ignore_states=[Running])
    assert handler.settings == {"only_states": [Failed], "ignore_states": [Running]}
    assert handler.__name__ == "gmail_notifier"


@task
def one():
    return 1


def test_slack_notifier_in_a_run_from_the_store_reads_the_stored_secret(webhook, monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR__LOCAL_SECRETS__SLACK_WEBHOOK_URL")
    monkeypatch.setenv("ORCHESTRATOR_API_URL", "http://127.0.0.1:4200")  # as under up
    with Flow("stored-notified", state_handlers=[slack_notifier(only_states=[Success])]) as flow:
        one()
    with closing(Store.open()) as store:
        store.create_project("p")
        store.set_secret("SLACK_WEBHOOK_URL", webhook.url)
        service.register_flow(store, flow, "p")
        run = service.create_flow_run(store, "p/stored-notified")
        assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success"
    (_, _, body), = webhook.posts
    attachment = body["attachments"][0]
    assert attachment["text"] == "stored-notified is now in a Success state"
    assert attachment["title_link"] == f"http://127.0.0.1:4200/#/runs/{run['id']}"


# -- e-mail ------------------------------------------------------------------------
class SMTPRecorder(socketserver.ThreadingTCPServer):
    """A small SMTP server that keeps what it is sent: `messages` holds
    (sender, recipients, the message, the user who logged in).

    `mode` is "INSECURE" (plain), "STARTTLS" (offers it and requires it before
    a login) or "SSL" (TLS from the first byte); `login` is the one user and
    password it accepts (AUTH PLAIN)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode="INSECURE", tls=None, login=None):
        super().__init__(("127.0.0.1", 0), _SMTPSession)
        self.mode, self.tls, self.login = mode, tls, login
        self.messages = []

    @property
    def port(self):
        return self.server_address[1]


class _SMTPSession(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        if self.server.mode == "SSL":
            sock = self.server.tls.wrap_socket(sock, server_side=True)
        reader = sock.makefile("rb")
        secure = self.server.mode == "SSL"
        user, sender, recipients = None, None, []

        def say(line):
            sock.sendall(line.encode() + b"\r\n")

        say("220 test-smtp ready")
        while True:
            line = reader.readline()
            if not line:
                return
            command, _, argument = line.decode().rstrip("\r\n").partition(" ")
            command = command.upper()
            if command in ("EHLO", "HELO"):
                offers = ["250-test-smtp", "250-AUTH PLAIN"]
                if self.server.mode == "STARTTLS" and not secure:
                    offers.append("250-STARTTLS")
                for offer in offers:
                    say(offer)
                say("250 OK")
            elif command == "STARTTLS":
                say("220 go ahead")
                sock = self.server.tls.wrap_socket(sock, server_side=True)
                reader = sock.makefile("rb")
                secure = True
            elif command == "AUTH":
                if not secure:
                    say("530 must use TLS first")
                    continue
                _, _, blob = argument.partition(" ")
                try:
                    _, name, password = base64.b64decode(blob).decode().split("\0")
                except (binascii.Error, ValueError):
                    say("501 bad AUTH PLAIN")
                    continue
                if (name, password) == self.server.login:
                    user = name
                    say("235 authenticated")
                else:
                    say("535 authentication failed")
            elif command == "MAIL":
                sender, recipients = argument.split(":", 1)[1].strip("<>"), []
                say("250 OK")
            elif command == "RCPT":
                recipients.append(argument.split(":", 1)[1].strip("<>"))
                say("250 OK")
            elif command == "DATA":
                say("354 end with .")
                data = []
                for raw in iter(reader.readline, b""):
                    if raw in (b".\r\n", b".\n"):
                        break
                    data.append(raw[1:] if raw.startswith(b"..") else raw)
                self.server.messages.append(
                    (sender, recipients, email.message_from_bytes(b"".join(data)), user))
                say("250 queued")
            elif command == "QUIT":
                say("221 bye")
                return
            else:
                say("250 OK")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert file, key file)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl program is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def smtp_server(certificate, monkeypatch):
    """`smtp_server(mode)`: a running SMTPRecorder whose certificate this process trusts."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))   # ssl.create_default_context() reads it
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    servers = []

    def start(mode):
        server = SMTPRecorder(mode, tls, login=("robot@example.com", "s3cret"))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def login_secrets(monkeypatch, password="s3cret"):
    monkeypatch.setenv("ORCHESTRATOR__LOCAL_SECRETS__EMAIL_USERNAME", "robot@example.com")
    monkeypatch.setenv("ORCHESTRATOR__LOCAL_SECRETS__EMAIL_PASSWORD", password)


def test_email_task_sends_html_text_copies_and_attachments(smtp_server, tmp_path):
    server = smtp_server("INSECURE")
    report = tmp_path / "report.csv"
    report.write_text("day,rows\n2024-05-01,3\n")
    mail = EmailTask(subject="Daily report", msg="<b>3 rows</b>", msg_plain="3 rows",
                     email_to="ops@example.com", email_from="etl@example.com",
                     email_to_cc="lead@example.com", email_to_bcc="audit@example.com",
                     smtp_server="127.0.0.1", smtp_port=server.port, smtp_type="INSECURE",
                     attachments=[str(report)])
    with Flow("mail") as flow:
        sent = mail()
    assert run_states(flow)[sent].is_successful()
    (sender, recipients, message, user), = server.messages
    assert user is None   # INSECURE: no login, no secrets needed
    assert sender == "etl@example.com"
    assert sorted(recipients) == ["audit@example.com", "lead@example.com", "ops@example.com"]
    assert (message["Subject"], message["To"], message["Cc"]) == (
        "Daily report", "ops@example.com", "lead@example.com")
    assert message["Bcc"] is None
    parts = [(p.get_content_type(), p.get_filename(), p.get_payload(decode=True))
             for p in message.walk() if not p.is_multipart()]
    assert parts == [("text/plain", None, b"3 rows"), ("text/html", None, b"<b>3 rows</b>"),
                     ("application/octet-stream", "report.csv", report.read_bytes())]


@pytest.mark.parametrize("mode, port_default", [("STARTTLS", 587), ("SSL", 465)])
def test_email_task_logs_in_over_tls_with_the_email_secrets(smtp_server, monkeypatch, mode,
                                                            port_default):
    server = smtp_server(mode)
    login_secrets(monkeypatch)
    with Flow("tls-mail") as flow:
        sent = EmailTask(subject="hi", msg="hello", email_to="ops@example.com",
                         smtp_server="127.0.0.1", smtp_port=server.port, smtp_type=mode)()
    assert run_states(flow)[sent].is_successful()
    (sender, recipients, _, user), = server.messages
    assert user == "robot@example.com"
    assert sender == "robot@example.com"   # no email_from: the account that logs in
    assert recipients == ["ops@example.com"]


def test_email_task_says_when_the_login_is_refused_or_the_type_is_unknown(smtp_server,
                                                                           monkeypatch):
    server = smtp_server("SSL")
    login_secrets(monkeypatch, password="wrong")
    with Flow("refused-mail") as flow:
        sent = EmailTask(msg="x", email_to="ops@example.com", smtp_server="127.0.0.1",
                         smtp_port=server.port)()
    state = run_states(flow)[sent]
    assert state.is_failed()
    assert "refused the login of 'robot@example.com' (535)" in state.message
    assert "EMAIL_USERNAME and EMAIL_PASSWORD" in state.message
    assert server.messages == []
    with pytest.raises(InputError, match="'TLS' is an unsupported value for smtp_type"):
        EmailTask(smtp_type="TLS")


def test_gmail_notifier_mails_the_account_about_the_states_it_wants(smtp_server, monkeypatch):
    server = smtp_server("SSL")
    login_secrets(monkeypatch)
    notify = gmail_notifier(only_states=[Failed], smtp_server="127.0.0.1",
                            smtp_port=server.port)

    @task(state_handlers=[notify])
    def broken():
        raise RuntimeError("no more disk")

    with Flow("mailed") as flow:
        broken()
        one()
    flow.run()
    (sender, recipients, message, user), = server.messages
    assert (sender, recipients, user) == ("robot@example.com", ["robot@example.com"],
                                          "robot@example.com")
    assert message["Subject"] == "State change notification for broken"
    text = next(p.get_payload(decode=True).decode() for p in message.walk()
                if p.get_content_type() == "text/plain")
    assert "broken is now in a Failed state" in text
    assert "RuntimeError('no more disk')" in text


def test_notification_errors_are_value_errors_as_in_prefect_1():
    assert issubclass(NotificationError, ValueError)


# -- flow runs: StartFlowRun and get_task_run_result ---------------------------------
@task
def make_rows(n):
    return [{"row": i} for i in range(n)]


@task
def squared(x):
    return x * x


@task
def fail_when(flag):
    if flag:
        raise ValueError("asked to fail")


with Flow("child") as child_flow:
    size = Parameter("n", default=2)
    make_rows(size)
    squared.map([1, 2, 3])
    fail_when(Parameter("fail", default=False))


@pytest.fixture
def child_flow_store(store):
    """The `store`, with flow 'child' registered in its project "etl"."""
    service.register_flow(store, child_flow, "etl")
    return store


class ChildRunner:
    """Executes every Scheduled run of flow 'child' in a thread of this process,
    as an agent would in a process of its own, while `parent()` runs (in
    another thread, so that a parent left waiting fails the test instead of
    hanging it)."""

    def __init__(self):
        self._stop = threading.Event()
        self.executed = []
        self.error = None

    def run_parent(self, parent, limit=120):
        """`parent()`'s return value, with children executed meanwhile."""
        box = {}

        def call():
            try:
                box["value"] = parent()
            except BaseException as exc:
                box["error"] = exc

        children = threading.Thread(target=self._loop, daemon=True)
        children.start()
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        caller.join(limit)
        self._stop.set()
        children.join(limit)
        assert not caller.is_alive(), f"the parent still waits ({self.error or 'no error'})"
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _loop(self):
        try:
            with closing(Store.open()) as store:
                while not self._stop.wait(0.05):
                    for run in store.list_flow_runs(state="Scheduled", limit=50):
                        if run["flow_name"] == "child":
                            backend.execute_flow_run(store, run["id"], service.load_flow)
                            self.executed.append(run["id"])
        except BaseException as exc:  # said by run_parent's assertion
            self.error = exc


def test_start_flow_run_creates_a_run_of_the_registered_flow(child_flow_store):
    start = StartFlowRun(flow_name="child", project_name="etl", parameters={"n": 3})
    assert start.name == "Flow child"
    with Flow("parent") as parent:
        child_id = start()
        other_id = start(parameters={"n": 1}, run_name="small-one",
                         run_config=LocalRun(labels=["nowhere"]))
    states = run_states(parent)
    first = child_flow_store.get_flow_run(states[child_id].result)
    second = child_flow_store.get_flow_run(states[other_id].result)
    assert (first["flow_name"], first["project"], first["state"]) == ("child", "etl",
                                                                      "Scheduled")
    assert first["parameters"] == {"n": 3}
    assert (second["name"], second["parameters"], second["labels"]) == (
        "small-one", {"n": 1}, ["nowhere"])


def test_start_flow_run_refuses_what_a_child_run_cannot_take(child_flow_store):
    with pytest.raises(TypeError, match="hold the task 'make_rows'"):
        StartFlowRun(flow_name="child", parameters={"n": make_rows})
    with Flow("parent") as parent:
        no_name = StartFlowRun()()
        with_context = StartFlowRun(flow_name="child", new_flow_context={"a": 1})()
        with_env = StartFlowRun(flow_name="child", run_config=LocalRun(env={"A": "1"}))()
    states = run_states(parent)
    assert "must provide a flow name" in states[no_name].message
    assert "new_flow_context={'a': 1} cannot be passed to a child run" in \
        states[with_context].message
    assert "a run config for one run can only choose its labels" in states[with_env].message
    assert child_flow_store.list_flow_runs() == []


def test_start_flow_run_with_wait_ends_in_the_childs_final_state(child_flow_store):
    start = StartFlowRun(flow_name="child", project_name="etl", wait=True, poll_interval=0.05)
    with Flow("waiting-parent") as parent:
        good = start(parameters={"n": 1})
        bad = start(parameters={"fail": True})
    runner = ChildRunner()
    states = runner.run_parent(lambda: run_states(parent))
    assert len(runner.executed) == 2
    assert isinstance(states[good], Success)
    good_id = states[good].result
    assert states[good].message == (
        f'{good_id} finished in state <Success: "All reference tasks succeeded.">')
    assert isinstance(states[bad], Failed)
    bad_id = states[bad].result
    assert states[bad].message.startswith(f"{bad_id} finished in state <Failed")
    assert child_flow_store.get_flow_run(bad_id)["state"] == "Failed"


def test_get_task_run_result_reads_what_the_child_checkpointed(child_flow_store):
    run = service.create_flow_run(child_flow_store, "etl/child", parameters={"n": 2})
    assert backend.execute_flow_run(child_flow_store, run["id"], service.load_flow) == "Success"
    with Flow("reader") as reader:
        rows = get_task_run_result(run["id"], "make_rows-1")
        all_squares = get_task_run_result(run["id"], "squared-1")
        one_square = get_task_run_result(run["id"], "squared-1", map_index=2)
        nothing = get_task_run_result(run["id"], "fail_when-1")
        unknown = get_task_run_result(run["id"], "load-1")
    states = run_states(reader)
    assert states[rows].result == [{"row": 0}, {"row": 1}]
    assert states[all_squares].result == [1, 4, 9]
    assert states[one_square].result == 9
    assert states[nothing].result is None
    assert "has no task run 'load-1'" in states[unknown].message
    assert "fail_when-1, make_rows-1" in states[unknown].message


def test_get_task_run_result_of_a_failed_task_fails_saying_so(child_flow_store):
    run = service.create_flow_run(child_flow_store, "etl/child", parameters={"fail": True})
    backend.execute_flow_run(child_flow_store, run["id"], service.load_flow)
    with Flow("reader") as reader:
        failed = get_task_run_result(run["id"], "fail_when-1")
        empty = get_task_run_result(run["id"], "")
    states = run_states(reader)
    assert f"Task run fail_when-1 of flow run {run['id']} ended Failed" in \
        states[failed].message
    assert "so it has no result" in states[failed].message
    assert "task_slug is empty" in states[empty].message


with Flow("stored-parent") as stored_parent_flow:
    started = create_flow_run(flow_name="child", project_name="etl", parameters={"n": 4})
    get_task_run_result(started, "make_rows-1", poll_time=0.05)


def test_a_stored_parent_waits_for_its_child_and_gets_its_result(child_flow_store):
    service.register_flow(child_flow_store, stored_parent_flow, "etl")
    parent = service.create_flow_run(child_flow_store, "etl/stored-parent")
    runner = ChildRunner()
    assert runner.run_parent(lambda: backend.execute_flow_run(
        child_flow_store, parent["id"], service.load_flow)) == "Success"
    child_id, = runner.executed
    child = child_flow_store.get_flow_run(child_id)
    assert child["idempotency_key"] == f"flow-run-{parent['id']}-create_flow_run-1"
    assert child["name"] == f"{child_flow_store.get_flow_run(parent['id'])['name']}-child"
    reader_row = next(r for r in child_flow_store.task_runs(parent["id"])
                      if r["task_slug"] == "get_task_run_result-1")
    assert reader_row["state"] == "Success"
    assert backend_result(reader_row["result_location"]) == [{"row": i} for i in range(4)]


def backend_result(location):
    from orchestrator.tasks.flow_runs import _read_result

    return _read_result(location)


UP_FLOWS = '''
from orchestrator import Flow, Parameter, task
from orchestrator.tasks.flow_runs import StartFlowRun, get_task_run_result


@task
def make_rows(n):
    return [{"row": i} for i in range(n)]


with Flow("up-child") as child:
    make_rows(Parameter("n"))


with Flow("up-parent") as parent:
    child_id = StartFlowRun(flow_name="up-child", project_name="p", wait=True,
                            poll_interval=0.2)(parameters={"n": 3})
    get_task_run_result(child_id, "make_rows-1", poll_time=0.2)
'''


def test_under_up_a_parent_starts_a_child_over_rest_and_reads_its_result(tmp_path,
                                                                        monkeypatch):
    from helpers import ServiceProcess, register_flows

    from orchestrator import Client

    path = tmp_path / "up_flows.py"
    path.write_text(UP_FLOWS)
    with closing(Store.open()) as store:
        register_flows(store, path)
    with ServiceProcess("up", "--poll-interval", "0.1", log_dir=tmp_path) as up:
        up.wait_for_banner()
        client = Client(up.url, token=up.token)
        parent = client.create_flow_run("p/up-parent")
        done = client.wait_for_flow_run(parent["id"], timeout=60)
        assert done["state"] == "Success", (done, up.stderr)
        tasks = {t["task_slug"]: t for t in client.get_task_runs(parent["id"])}
        client.close()
    child_id = tasks["Flow up-child-1"]["message"].split()[0]
    assert tasks["Flow up-child-1"]["message"] == (
        f'{child_id} finished in state <Success: "All reference tasks succeeded.">')
    reader = tasks["get_task_run_result-1"]
    assert reader["state"] == "Success"
    assert backend_result(reader["result_location"]) == [{"row": i} for i in range(3)]
