"""Record what Prefect 1.4.1 makes of the flows in data/prefect1_flows.

Those flows are written the way Prefect 1 projects write them (Prefect 1
imports, task library, signals, triggers, mapping, ...). This script runs each
one under a real Prefect 1.4.1 and writes data/prefect1_flows/expected.json:
per flow, its parameters, its final state class, every task's state class
and result (per map index for mapped tasks), and the Slack posts and emails it
sent. tests/test_prefect1_flows.py converts the flows with `orchestrator
migrate`, runs them under orchestrator with the same parameters, servers and
environment, and compares with that file. CI has no Prefect 1, so the file is
committed; run this again after changing a flow:

    /opt/prefect1-venv/bin/python scripts/record_prefect1_outcomes.py

Each flow runs in its own interpreter (Prefect 1 reads its secrets and config
once, at import) in a temporary copy of the folder (flows write under out/),
with a local HTTP server standing in for Slack's webhook and a local SMTP
server for the mail relay.

The test imports this file for the parts both sides must share (the servers,
the environment, how an outcome is described), so nothing here imports a
workflow engine at module level.
"""

import argparse
import email
import json
import os
import re
import runpy
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOWS_DIR = ROOT / "data" / "prefect1_flows"
EXPECTED = FLOWS_DIR / "expected.json"

# Parameters each flow runs with (file stem -> values). Flows not listed run
# with their defaults. Values are chosen so every branch the file is about is
# taken (a failing reconcile, a Sunday, an empty extract, ...).
PARAMETERS = {
    "tutorial_01_etl": {"station": "KPDX"},
    "tutorial_02_mapping": {"pages": 3, "page_size": 2},
    "tutorial_03_retries": {"endpoint": "/v2/quotes"},
    "etl_csv_orders": {"statuses": ["shipped", "pending"]},
    "etl_sqlite_inventory": {"threshold": 10},
    "notify_slack": {"day": "2024-05-02", "billed_mrr": 12000},
    "notify_email": {"week": "2024-W19"},
    "branch_case_merge": {"row_count": 5000},
    "branch_ifelse_switch": {"day_name": "sun", "country": "us"},
    "signals_quality_gate": {"rows": 0, "null_fraction": 0.25},
    "resource_scratch_db": {"metrics": {"cpu": 0.75, "mem": 0.5, "disk": 0.25}},
    "dask_thumbnails": {"max_side": 100},
    "custom_task_defaults": {"amounts": [1000, 234.5]},
    "context_and_logger": {"region": "apac"},
    "caching_rates": {"amount": 50},
}

# Values the flows read from secrets and environment variables.
API_KEY = "rk_test_0000abcd"
# Where the describing side learns the webhook URL (its port changes from run
# to run, so results show it as "$SLACK_WEBHOOK_URL"); no flow reads it.
SLACK_URL_VARIABLE = "PREFECT1_FLOWS_CHECK_SLACK_URL"


def flow_environment(slack_url, smtp_host, smtp_port):
    """The environment variables every flow runs with: secrets under both
    Prefect 1's and orchestrator's local-secret names, and the addresses of
    the local servers."""
    secrets = {"SLACK_WEBHOOK_URL": slack_url, "REPORTING_API_KEY": API_KEY}
    env = {
        # Some flows have a schedule: Prefect 1's flow.run() would follow it
        # for ever; run them once, as orchestrator's flow.run() does.
        "PREFECT__FLOWS__RUN_ON_SCHEDULE": "false",
        SLACK_URL_VARIABLE: slack_url,
        "SMTP_HOST": smtp_host,
        "SMTP_PORT": str(smtp_port),
        "REPORT_BATCH_SIZE": "500",
        "REPORT_REGION": "eu-central-1",
    }
    for name, value in secrets.items():
        env[f"PREFECT__CONTEXT__SECRETS__{name}"] = value
        env[f"ORCHESTRATOR__LOCAL_SECRETS__{name}"] = value
    return env


# -- the local servers -----------------------------------------------------------
class SlackWebhook:
    """A local HTTP server that answers like Slack's incoming webhook and keeps
    every JSON body posted to it. Use as a context manager; `url` is the
    webhook URL."""

    def __init__(self):
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                posts.append(json.loads(body or b"null"))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass  # keep test and script output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/services/T000/B000/XXXX"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


class SmtpSink:
    """A minimal local SMTP server (enough of RFC 5321 for smtplib without
    TLS or AUTH) that keeps every message it is sent. Use as a context
    manager; `host` and `port` are its address."""

    def __init__(self):
        messages = self.messages = []

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line):
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self):
                self.reply("220 localhost ESMTP sink")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    verb = line.decode("ascii", "replace").strip().split(" ")[0].upper()
                    if verb == "EHLO":
                        self.reply("250-localhost")
                        self.reply("250 8BITMIME")
                    elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 End data with <CR><LF>.<CR><LF>")
                        lines = []
                        while True:
                            data = self.rfile.readline()
                            if data in (b".\r\n", b".\n", b""):
                                break
                            # Undo the sender's dot-stuffing.
                            lines.append(data[1:] if data.startswith(b"..") else data)
                        messages.append(email.message_from_bytes(b"".join(lines)))
                        self.reply("250 OK: queued")
                    elif verb == "QUIT":
                        self.reply("221 Bye")
                        return
                    else:
                        self.reply("502 Command not implemented")

        socketserver.ThreadingTCPServer.daemon_threads = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.host, self.port = self._server.server_address

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def delivered(slack, smtp):
    """What the flow sent, in a form both engines must match: the text of each
    Slack post and the headers and parts of each email, in a stable order.
    Empties both servers' lists for the next flow."""
    posts = []
    for body in slack.posts:
        if isinstance(body, dict) and "text" in body:
            posts.append(body["text"])
        elif isinstance(body, dict) and body.get("attachments"):
            posts.append(body["attachments"][0].get("text"))
        else:
            posts.append(repr(body))
    mails = []
    for msg in smtp.messages:
        parts = [p for p in msg.walk() if not p.is_multipart()]
        mails.append({
            "subject": msg["Subject"],
            "from": msg["From"],
            "to": msg["To"],
            "parts": sorted(p.get_content_type() for p in parts),
            "attachments": sorted(p.get_filename() for p in parts if p.get_filename()),
        })
    slack.posts.clear()
    smtp.messages.clear()
    out = {}
    if posts:
        out["slack"] = sorted(posts, key=str)
    if mails:
        out["emails"] = sorted(mails, key=lambda m: json.dumps(m, sort_keys=True))
    return out


# -- describing an outcome -------------------------------------------------------
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MODULE_PATH = re.compile(r"<(?:[\w.]+\.)?(\w+) object")


def describe_result(value):
    """A task's result as JSON: itself when it is JSON data, an exception as
    its type and message, anything else as its repr (memory addresses and
    module paths removed, since they differ between runs and engines)."""
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        text = _MODULE_PATH.sub(r"<\1 object", repr(value))
        return {"repr": _ADDRESS.sub(" at 0x", text)}


def describe_state(state):
    """A task's final state: its class, and its result or its children's."""
    if state is None:
        return {"state": None}
    out = {"state": type(state).__name__}
    map_states = getattr(state, "map_states", None)
    if type(state).__name__ == "Mapped" and map_states is not None:
        out["map"] = [describe_state(child) for child in map_states]
    else:
        out["result"] = describe_result(state.result)
    return out


def describe_flow_run(flow, state, folder):
    """The flow's final state class and each task's outcome, by task name.
    A name that several tasks share maps to the list of their outcomes,
    sorted (which copy ran first is no part of the outcome). The flow's
    folder, wherever it was copied to, reads as "$FLOWS" in results, and the
    local webhook's URL as "$SLACK_WEBHOOK_URL"."""
    by_name = {}
    results = state.result if isinstance(state.result, dict) else {}
    for task in flow.tasks:
        by_name.setdefault(task.name, []).append(describe_state(results.get(task)))
    tasks = {}
    for name in sorted(by_name):
        outcomes = by_name[name]
        tasks[name] = (outcomes[0] if len(outcomes) == 1
                       else sorted(outcomes, key=lambda o: json.dumps(o, sort_keys=True)))
    text = json.dumps(tasks).replace(json.dumps(str(folder))[1:-1], "$FLOWS")
    if os.environ.get(SLACK_URL_VARIABLE):
        text = text.replace(os.environ[SLACK_URL_VARIABLE], "$SLACK_WEBHOOK_URL")
    return {"state": type(state).__name__, "tasks": json.loads(text)}


# -- running one flow file ---------------------------------------------------------
def load_prefect1_flow(path):
    """The one Prefect 1 Flow a file defines, loaded the way `prefect run -p`
    does (the file runs as a module that is not __main__)."""
    import prefect

    namespace = runpy.run_path(str(path), run_name="prefect1_flow_file")
    flows = [v for v in namespace.values() if isinstance(v, prefect.Flow)]
    if len(flows) != 1:
        raise ValueError(f"{path} defines {len(flows)} flows; each file must define one")
    return flows[0]


def load_orchestrator_flow(path):
    """The one orchestrator Flow a file defines, through orchestrator's own
    loader (which applies the Prefect 1 import switch when it is on)."""
    from orchestrator.flows.loading import load_flows_from_file

    flows = load_flows_from_file(path)
    if len(flows) != 1:
        raise ValueError(f"{path} defines {len(flows)} flows; each file must define one")
    return next(iter(flows.values()))


def run_flow_file(path, engine, parameters):
    """Run the flow in `path` under `engine` ("prefect1" or "orchestrator")
    with `parameters`; return its described outcome."""
    load = load_prefect1_flow if engine == "prefect1" else load_orchestrator_flow
    flow = load(path)
    state = flow.run(parameters=dict(parameters))
    return describe_flow_run(flow, state, Path(path).resolve().parent)


def _run_in_child(path, engine, parameters, env, cwd):
    """Run one flow file in a fresh interpreter; return its outcome."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--outcome", str(path),
               "--engine", engine, "--params", json.dumps(parameters), "--out", out.name]
        proc = subprocess.run(cmd, env={**os.environ, **env}, cwd=cwd,
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{path.name} did not run under {engine}:\n{proc.stderr}")
        return json.load(out)


def copy_flows(flows_dir, dest):
    """Copy the flow folder (without its outcome file and outputs) to `dest`."""
    shutil.copytree(flows_dir, dest, ignore=shutil.ignore_patterns(
        "expected.json", "out", "__pycache__"))
    return Path(dest)


def run_all_here(folder, engine, parameters_by_file):
    """Run every flow file in `folder` in this interpreter, one after the
    other, with local servers and the flows' environment; return {file name:
    outcome}. A flow that does not load or run gives {"error": ...}: the
    others still run. (The import-switch check uses this through --all.)"""
    outcomes = {}
    with SlackWebhook() as slack, SmtpSink() as smtp:
        os.environ.update(flow_environment(slack.url, smtp.host, smtp.port))
        os.chdir(folder)
        for path in sorted(Path(folder).glob("*.py")):
            try:
                outcome = run_flow_file(path, engine, parameters_by_file.get(path.name, {}))
            except Exception as exc:  # noqa: BLE001 - report it, run the rest
                outcome = {"error": f"{type(exc).__name__}: {exc}"}
            outcome.update(delivered(slack, smtp))
            outcomes[path.name] = outcome
    return outcomes


def record(flows_dir=FLOWS_DIR, expected=EXPECTED):
    """Run every flow file under Prefect 1 and write expected.json."""
    import prefect

    outcomes = {}
    with tempfile.TemporaryDirectory() as tmp, SlackWebhook() as slack, SmtpSink() as smtp:
        copy = copy_flows(flows_dir, Path(tmp) / "flows")
        env = flow_environment(slack.url, smtp.host, smtp.port)
        for path in sorted(copy.glob("*.py")):
            params = PARAMETERS.get(path.stem, {})
            outcome = _run_in_child(path, "prefect1", params, env, cwd=copy)
            outcome.update(delivered(slack, smtp))
            outcomes[path.name] = {"parameters": params, **outcome}
            print(f"{path.name:32} {outcome['state']}")
    document = {
        "recorded_with": f"prefect {prefect.__version__}",
        "how": "scripts/record_prefect1_outcomes.py; checked by tests/test_prefect1_flows.py",
        "flows": outcomes,
    }
    expected.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {expected.relative_to(ROOT)} ({len(outcomes)} flows)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outcome", metavar="FILE",
                        help="run one flow file and write its outcome (used internally)")
    parser.add_argument("--all", metavar="DIR",
                        help="run every flow file in DIR here, with the parameters of "
                             "expected.json, and write their outcomes to --out")
    parser.add_argument("--engine", choices=["prefect1", "orchestrator"], default="prefect1")
    parser.add_argument("--params", default="{}", help="JSON object of parameters")
    parser.add_argument("--out", help="where --outcome and --all write their JSON")
    args = parser.parse_args(argv)
    if args.outcome:
        outcome = run_flow_file(Path(args.outcome), args.engine, json.loads(args.params))
        Path(args.out).write_text(json.dumps(outcome))
        return
    if args.all:
        flows = json.loads(EXPECTED.read_text())["flows"]
        params = {name: flow["parameters"] for name, flow in flows.items()}
        outcomes = run_all_here(Path(args.all).resolve(), args.engine, params)
        Path(args.out).write_text(json.dumps(outcomes))
        return
    try:
        import prefect
    except ImportError:
        raise SystemExit("Prefect 1 is not importable here; run this script with "
                         "/opt/prefect1-venv/bin/python") from None
    if not prefect.__version__.startswith("1."):
        raise SystemExit(f"this records Prefect 1 outcomes; found prefect {prefect.__version__}")
    record()


if __name__ == "__main__":
    main()
