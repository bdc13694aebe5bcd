"""Helpers the tests share, imported by name (`from helpers import cli, claim`):
the repository root, `orchestrator` subprocesses (`cli`, `ServiceProcess`), a
private PostgreSQL server, runs moved between states as agents and run
processes move them, and a `Clock` for `run_once(now=...)`. The fixtures built
on them are in conftest.py. tests/ is on sys.path (setup.cfg: `pythonpath`) in
the pytest process and in the worker processes multiprocessing starts from it; a
script run with `subprocess` imports this module only with tests/ on PYTHONPATH."""

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class RecordList(logging.Handler):
    """The log records a handler saw (the `log_records` fixture attaches one)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, logger_prefix=""):
        return [r.getMessage() for r in self.records if r.name.startswith(logger_prefix)]


# -- orchestrator processes --------------------------------------------------------
API_LINE = re.compile(r"API:\s+(http://127\.0\.0\.1:(\d+))/api/health")


def service_env(home):
    """The environment for an `orchestrator` subprocess over `home`: no
    ORCHESTRATOR__* overrides, and no API address or token of another server."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORCHESTRATOR__")
           and k not in ("ORCHESTRATOR_API_URL", "ORCHESTRATOR_API_TOKEN")}
    env["ORCHESTRATOR_HOME"] = str(home)
    return env


def assert_bad_input(result, *fragments):
    """A finished CLI command (subprocess or CliRunner result with returncode,
    stdout, stderr) refused bad input: exit 2, one 'Error: ...' line on stderr
    holding every fragment, nothing on stdout, no traceback. Returns the line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def is_run_process(pid, run_id):
    """Is `pid` still an `orchestrator execute RUN_ID` process?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"execute" in cmdline and str(run_id).encode() in cmdline


def cli(home, *args, timeout=60):
    """Run an `orchestrator` command against `home`; fails the test if it fails."""
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          env=service_env(home), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, (f"orchestrator {' '.join(map(str, args))} exited "
                                  f"{proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


class ServiceProcess:
    """`orchestrator up|server --port 0 *args` over `home` (default: the current
    ORCHESTRATOR_HOME), its output in files in `log_dir` that we poll. After
    `wait_for_banner()`, `url` is its address (http://127.0.0.1:PORT) and `port`
    its port. As a context manager, it is killed on leaving."""

    def __init__(self, command, *args, log_dir, home=None, name=None):
        self.command = command
        self.home = Path(home if home is not None else os.environ["ORCHESTRATOR_HOME"])
        name = name or command
        self.out_path = Path(log_dir) / f"{name}.stdout"
        self.err_path = Path(log_dir) / f"{name}.stderr"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", command, "--port", "0",
                 *map(str, args)],
                env=service_env(self.home), cwd=ROOT, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err)
        self.url = None
        self.port = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.kill()

    @property
    def stdout(self):
        return self.out_path.read_text()

    @property
    def stderr(self):
        return self.err_path.read_text()

    @property
    def token(self):
        """The API token, as `$ORCHESTRATOR_HOME/api-token` holds it now."""
        return (self.home / "api-token").read_text().strip()

    def wait_for_banner(self, timeout=30):
        """Waits for the `API: http://127.0.0.1:PORT/api/health` line; the process
        is killed (and the test fails) if it exits or prints none in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = API_LINE.search(self.stdout)
            if found:
                self.url, self.port = found.group(1), int(found.group(2))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"orchestrator {self.command} printed no API line (exit "
                             f"code {self.proc.poll()}):\n{self.stdout}\n{self.stderr}")

    def health(self, token=True):
        """GET /api/health (with the token unless `token` is false, so the details
        show): (status, Content-Type, document)."""
        request = urllib.request.Request(self.url + "/api/health")
        if token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type"), json.loads(resp.read())

    def api(self, method, path, body=None, token=None):
        """A JSON request with the bearer token (default: the server's):
        (status, the JSON document or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token if token is None else token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        return status, (json.loads(text) if text else None)

    def stop(self, signum=signal.SIGTERM, timeout=20):
        """Sends `signum` and waits for the exit code."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# -- PostgreSQL ---------------------------------------------------------------
def _postgres_bin():
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def private_postgres(*settings, prefix="orchestrator-test-postgres-"):
    """A PostgreSQL server of the test's own on 127.0.0.1 (durability off: tests
    need no crash safety), its URL without a database; `settings` are extra
    `-c` options (e.g. "max_connections=12"). Skips the test where PostgreSQL
    is not installed."""
    import pwd
    import shutil
    import socket
    import tempfile

    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed here and cannot be installed without "
                    "root; set ORCHESTRATOR_TEST_POSTGRES_URL to a server to run these")
    # Its own directory: pytest's temp directories are private to this user,
    # and the server runs as the postgres user.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    data = base / "data"
    run_as = []
    os.chmod(base, 0o755)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        data.mkdir()
        shutil.chown(data, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = " ".join([f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                        "-c fsync=off -c synchronous_commit=off",
                        *(f"-c {setting}" for setting in settings)])
    subprocess.run(run_as + [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                             "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l",
                             str(data / "server.log"), "-o", options, "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                                 "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def new_database(server_url):
    """The URL of a new, empty database on the server at `server_url`."""
    import uuid

    import psycopg2

    name = f"test_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(f"{server_url}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{server_url}/{name}"


# -- flows in a store ---------------------------------------------------------
def execute(store, flow, **parameters):
    """Register `flow` in project 'etl', create a run with `parameters` and execute
    it in this process, as `orchestrator execute` does: the run, after."""
    from orchestrator import service
    from orchestrator.service import execution as backend

    service.register_flow(store, flow, "etl")
    run = service.create_flow_run(store, flow.name, parameters=parameters)
    backend.execute_flow_run(store, run["id"], service.load_flow)
    return store.get_flow_run(run["id"])


def register_flows(store, path, project="p"):
    """Creates `project` in `store` and registers into it every flow the flow
    file `path` defines."""
    from orchestrator import service
    from orchestrator.flows.loading import load_flows_from_file

    store.create_project(project)
    for flow in load_flows_from_file(path).values():
        service.register_flow(store, flow, project)


# -- what tasks wrote ------------------------------------------------------------
def overlap(path):
    """Of a file of "start <time>" / "end <time>" lines that tasks wrote: (the
    number of lines, the most tasks that were running at once)."""
    events = sorted((float(t), kind) for kind, t in
                    (line.split() for line in Path(path).read_text().splitlines()))
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return len(events), peak


# -- moving runs between states, as agents and run processes do ----------------
def claim(store, agent, labels=(), limit=50, **options):
    """The ids of the runs `agent` claims (`Store.claim_runs` gives (id, attempt))."""
    return [run_id for run_id, _ in store.claim_runs(agent, list(labels), limit, **options)]


def start_run(store, run_id, pid=None, agent=None, labels=()):
    """Run `run_id` Running in process `pid` (default: this one); returns its attempt.
    With `agent`, that agent claims it first (it must be the one due run it takes),
    as under an agent; without, it starts by hand."""
    pid = os.getpid() if pid is None else pid
    if agent is None:
        return store.start_flow_run(run_id, pid)
    claims = dict(store.claim_runs(agent, list(labels), 50))
    assert run_id in claims, f"agent {agent} did not claim run {run_id}: {claims}"
    return store.start_flow_run(run_id, pid, attempt=claims[run_id])


def end_run(store, run_id, state="Success", message=None):
    """Run `run_id` ends in `state` as its process records it (started first, by
    hand or on its claim, when it has not started)."""
    run = store.get_flow_run(run_id)
    attempt = run["attempt"]
    if run["state"] in ("Scheduled", "Submitted"):
        attempt = store.start_flow_run(run_id, os.getpid(),
                                       attempt=attempt if run["state"] == "Submitted" else None)
    store.finish_flow_run(run_id, attempt, state, message)


# -- time ---------------------------------------------------------------------------
class Clock:
    """Time that moves only when the test moves it, for the components'
    `run_once(now=clock.now)` (scheduler, reaper, agent): `now` is epoch seconds,
    START (2024-05-01 06:00 UTC) at first, and `advance(seconds)` moves it on and
    returns the new `now`. Where a component compares with a time the store
    stamps from the real clock (a heartbeat), set `now = time.time()` first."""

    START = datetime(2024, 5, 1, 6, 0, tzinfo=timezone.utc).timestamp()

    def __init__(self, start=START):
        self.now = start

    def advance(self, seconds):
        self.now += seconds
        return self.now

    def __repr__(self):
        return f"Clock(now={self.now!r})"
