"""Shared helpers of the benchmark scripts (scripts/bench_*.py); not a benchmark itself.

One version of what the benchmarks all need, so that they start, measure and report
in the same way:

- `ServiceProcess`: `orchestrator server` or `orchestrator up` on `--port 0` in a
  given ORCHESTRATOR_HOME, its output to a file; the address from its `API:` banner,
  the wait for /api/health (and, for `up`, a live agent), SIGTERM to stop, and the
  lines of its output that tell of trouble.
- `new_home`: a temporary ORCHESTRATOR_HOME, optionally with a flow file registered
  into a project through the CLI; `cli` runs `python -m orchestrator ...` in a home.
- `open_store`: a home's store opened in this process.
- `percentile`, `proc_rss_mb`: figures.
- `print_rows`, `write_json`: the two-column table and the JSON file of the results.
- `run_together`: worker processes released at once by a barrier, their results
  collected, the benchmark stopped if one failed.
- `PrivatePostgres`: a PostgreSQL server of the benchmark's own in a temporary
  folder (as the test suite starts one), and a new empty database on it per call.

The scripts import it as `benchkit`: `python scripts/bench_x.py` puts scripts/ first
on sys.path, from whatever folder it is run. Nothing here imports `orchestrator` at
module level, so a script can set its environment before the first import of it.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

API_LINE = re.compile(r"API:\s+(http://127\.0\.0\.1:\d+/api/health)")
HEALTH_PATH = "/api/health"
PROBLEM_LINE = re.compile(r"Traceback|ERROR|Error|failed|Exception")


class ServiceProcess:
    """An `orchestrator COMMAND --port 0 ARGS` subprocess in `home` (COMMAND is
    "server" or "up"), its output to a file in the home; `env` adds to its
    environment (e.g. a setting as ORCHESTRATOR__SECTION__KEY)."""

    def __init__(self, home, command="server", *args, env=None):
        self.home = home
        self.command = command
        self.env = dict(os.environ, ORCHESTRATOR_HOME=str(home), **(env or {}))
        self.out = home / f"{command}-{time.monotonic_ns()}.out"
        self.spawned = time.perf_counter()
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", command, "--port", "0",
                 *map(str, args)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.health_url = None

    @property
    def base_url(self):
        return self.health_url[:-len(HEALTH_PATH)]

    @property
    def token(self):
        """The home's API token (there once the process is healthy)."""
        return (self.home / "api-token").read_text().strip()

    def wait_healthy(self, timeout=30, need_agent=False):
        """Seconds from spawn to a 200 from /api/health (with need_agent: one that
        says the agent is alive)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            if self.health_url is None:
                found = API_LINE.search(self.out.read_text())
                if found:
                    self.health_url = found.group(1)
            if self.health_url is not None:
                try:
                    with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                        body = resp.read()
                    if resp.status == 200 and (
                            not need_agent or json.loads(body)["agent"]["alive"]):
                        return time.perf_counter() - self.spawned
                except OSError:
                    pass
            time.sleep(0.005)
        raise SystemExit(f"orchestrator {self.command} did not become healthy:\n"
                         f"{self.out.read_text()}")

    def check_running(self):
        """Stop the benchmark, with the process's output, if the process has exited."""
        if self.proc.poll() is not None:
            raise SystemExit(f"orchestrator {self.command} exited:\n{self.out.read_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_problems(self):
        """Lines of the process's output that tell of a failure."""
        return [line for line in self.out.read_text().splitlines()
                if PROBLEM_LINE.search(line)]


def print_log_problems(problems):
    """The first few of a server's `log_problems()`, if there are any."""
    if problems:
        print(f"\nthe server's output has {len(problems)} line(s) of trouble, e.g.:")
        for line in problems[:5]:
            print(f"  {line[:200]}")


def forget_outside_api():
    """Drop the variables that would point clients at another server or database than
    the one the benchmark starts."""
    for name in ("ORCHESTRATOR_API_URL", "ORCHESTRATOR_API_TOKEN", "ORCHESTRATOR_DATABASE_URL"):
        os.environ.pop(name, None)


def cli(home, *args):
    """`python -m orchestrator ARGS` with ORCHESTRATOR_HOME=home (and the rest of this
    process's environment); the finished process. Exits the benchmark if it fails."""
    env = dict(os.environ, ORCHESTRATOR_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"orchestrator {' '.join(map(str, args))}:\n{proc.stderr[-3000:]}")
    return proc


def new_home(prefix, flows_source=None, project="p"):
    """A fresh temporary ORCHESTRATOR_HOME (its folder name starts with `prefix`).
    With `flows_source`: that text as bench_flows.py in the home, registered into a
    new `project` through the CLI."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    if flows_source is not None:
        flows = home / "bench_flows.py"
        flows.write_text(flows_source)
        cli(home, "project", "create", project)
        cli(home, "register", "-p", project, flows)
    return home


def open_store(home):
    """The store of `home`, opened in this process (the database is per home)."""
    os.environ["ORCHESTRATOR_HOME"] = str(home)
    from orchestrator.store import Store

    return Store.open(home=home)


def percentile(values, pct):
    """Nearest-rank percentile (p99 of 50 samples is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def proc_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def print_rows(rows):
    """(name, value) pairs as two columns, the names padded to the longest."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


class PrivatePostgres:
    """A PostgreSQL server started for the benchmark, stopped by `stop()`.

    Its settings are PostgreSQL's defaults (fsync and synchronous_commit on), so
    figures are those of a durable server; `settings` adds `-c` options.
    """

    def __init__(self, settings=()):
        import glob
        import pwd
        import shutil
        import socket

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql), or "
                             "pass --postgres-url")
        self.bin = Path(found[-1]).parent
        self.base = Path(tempfile.mkdtemp(prefix="orchestrator-bench-postgres-"))
        self.data = self.base / "data"
        self.prefix = []
        os.chmod(self.base, 0o755)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            self.data.mkdir()
            shutil.chown(self.data, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        subprocess.run(self.prefix + [str(self.bin / "initdb"), "-D", str(self.data),
                                      "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        options = " ".join([f"-p {port} -k {self.data} -c listen_addresses=127.0.0.1",
                            *(f"-c {s}" for s in settings)])
        subprocess.run(self.prefix + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
                                      "-l", str(self.data / "server.log"), "-o", options,
                                      "start"], check=True, capture_output=True)
        self.url = f"postgresql://postgres@127.0.0.1:{port}"

    def new_database(self):
        """The URL of a new, empty database on the server."""
        import uuid

        import psycopg2

        name = f"bench_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(f"{self.url}/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return f"{self.url}/{name}"

    def stop(self):
        import shutil

        subprocess.run(self.prefix + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                                      "fast", "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def run_together(ctx, target, arg_lists, what):
    """One process per tuple of `arg_lists`, each running
    `target(*args, barrier, results)`: it connects, waits at the barrier, does its
    work and puts one dict in `results` (or {"failed": why}, after aborting the
    barrier). All start together; returns their dicts. Exits the benchmark,
    naming `what`, if one failed."""
    barrier = ctx.Barrier(len(arg_lists) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in arg_lists]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(120)  # every worker is ready: they start together
    except Exception:  # noqa: BLE001 - a worker failed; its message is in the queue
        pass
    outs = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
    failed = [o["failed"] for o in outs if "failed" in o]
    if failed:
        raise SystemExit(f"a {what} failed: {failed[0]}")
    return outs


def write_json(path, results):
    """`results` as indented JSON at `path` (its folder made if need be); the Path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return out
