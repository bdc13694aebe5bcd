"""A full disk under `orchestrator up`: the file system holding ORCHESTRATOR_HOME
(a small tmpfs) fills while runs are running and being created, then space
returns. While it is full the CLI and the API say so (where, and how many
bytes are free) instead of a traceback, and `up` says so once a minute; once
space returns no run is left unfinished, a run whose tasks finished while the
disk was full ends Success, the database is intact and `up` carries on.

The scenario runs once for the module (`full_disk`); each test checks one of
those promises against what it saw."""

import datetime as _dt
import errno
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from types import SimpleNamespace

import pytest

from helpers import ROOT, ServiceProcess, is_run_process, register_flows, service_env
from orchestrator.store import TERMINAL_STATES, Store

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="filling a file system needs a small tmpfs, and mounting "
                              "one needs root")

FLOWS = '''
import os, time
from orchestrator import Flow, Parameter, task, context
from orchestrator.storage import Script

@task
def wait_for_marker(marker, out):
    with open(out, "a") as fh:
        fh.write(f"started {context.flow_run_id}\\n")
    while not os.path.exists(marker):
        time.sleep(0.05)
    with open(out, "a") as fh:
        fh.write(f"finished {context.flow_run_id}\\n")

with Flow("wait", storage=Script(__file__)) as wait_flow:
    wait_for_marker(Parameter("marker"), Parameter("out"))
'''

FS_BYTES = 4 * 1024 * 1024
FULL_SECONDS = 10        # long enough for the reaper's and the scheduler's 5 s timers
RECOVERY_SECONDS = 60
EXIT_DISK_FULL = 3
FORBIDDEN = ("Traceback", "cannot rollback")
WHILE_FULL = {
    "run": ("run", "p/wait"),  # parameters added below
    "concurrency set": ("concurrency", "set", "x", "1"),
}


def orchestrator(home, *args, timeout=60):
    """An `orchestrator` command over `home`, whatever its exit code."""
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                          env=service_env(home), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def mount_tmpfs(path):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs",
                              str(path)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs to fill (`mount -t tmpfs` exited "
                    f"{mounted.returncode}: {mounted.stderr.strip()})")


def unmount(path):
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(path):
    """Writes `path` until the file system has no byte left (ENOSPC at 1 byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 12, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def empty_the_wal(db_path):
    """Checkpoints the WAL and truncates it to nothing, so that every write
    while the disk is full needs new space (none is reused from old frames)."""
    with closing(sqlite3.connect(db_path, timeout=10)) as conn:
        for _ in range(50):
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.1)
    raise AssertionError(f"could not checkpoint the WAL of {db_path}")


def lines_of(path, word):
    text = path.read_text() if path.exists() else ""
    return [line.split()[1] for line in text.splitlines() if line.startswith(word)]


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def describe(runs):
    return "\n".join(f"  run {r['id']}: {r['state']} ({r['message']})" for r in runs)


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """Runs the scenario once: `up` over a home on a 4 MB tmpfs, two runs
    Running (waiting for a marker file) and one due in 2 s; then the disk is
    filled, the marker made (the two runs finish their tasks while full), a run
    is asked for through the CLI and the API and a limit set; after
    FULL_SECONDS the filler goes, and we wait for every run to end."""
    base = tmp_path_factory.mktemp("disk-full")
    fs = base / "fs"
    mount_tmpfs(fs)
    seen = SimpleNamespace(fs=fs, home=fs / "home", base=base, cli={}, up=None)
    home = seen.home
    home.mkdir()
    # Heartbeats every second, so runs write while the disk is full.
    (home / "config.toml").write_text("[services]\nheartbeat_interval = 1.0\n")
    seen.db_path = home / "orchestrator.db"
    flows = base / "disk_full_flows.py"  # outside the tmpfs: Script storage reads it
    flows.write_text(FLOWS)
    marker, out = base / "marker", base / "tasks.txt"
    params = {"marker": str(marker), "out": str(out)}
    seen.params = params
    filler = fs / "filler"
    store = up = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ORCHESTRATOR_HOME", str(home))
            with closing(Store.open()) as s:
                register_flows(s, flows)
        up = ServiceProcess("up", "--no-hostname-label", "--poll-interval", "0.1",
                            home=home, log_dir=base)
        seen.up = up.wait_for_banner()
        store = Store.open(home=home)

        seen.running = []
        for _ in range(2):
            status, doc = up.api("POST", "/api/flow_runs", {"flow": "p/wait",
                                                            "parameters": params})
            assert status == 201, (status, doc)
            seen.running.append(doc["id"])
        assert wait_for(lambda: set(map(str, seen.running)) <= set(lines_of(out, "started")),
                        20), f"the runs never started:\n{up.stderr}"
        due = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=2)
        status, doc = up.api("POST", "/api/flow_runs", {
            "flow": "p/wait", "parameters": params, "scheduled_start_time": due.isoformat()})
        assert status == 201, (status, doc)
        seen.due_while_full = doc["id"]

        empty_the_wal(seen.db_path)
        fill(filler)
        full_since = time.monotonic()
        assert os.statvfs(fs).f_bavail == 0, "the filler left space on the tmpfs"
        marker.touch()  # the running runs finish their tasks now, while full
        seen.tasks_finished_while_full = wait_for(
            lambda: set(map(str, seen.running)) <= set(lines_of(out, "finished")), 10)

        seen.cli["run"] = orchestrator(
            home, *WHILE_FULL["run"], *[f"--param={k}={v}" for k, v in params.items()])
        seen.cli["concurrency set"] = orchestrator(home, *WHILE_FULL["concurrency set"])
        seen.api = up.api("POST", "/api/flow_runs", {"flow": "p/wait", "parameters": params})
        time.sleep(max(0.0, full_since + FULL_SECONDS - time.monotonic()))

        filler.unlink()
        seen.full_seconds = time.monotonic() - full_since

        def all_terminal():
            seen.runs = store.list_flow_runs(limit=1000)
            return all(r["state"] in TERMINAL_STATES for r in seen.runs)

        seen.all_terminal = wait_for(all_terminal, RECOVERY_SECONDS, interval=0.2)
        seen.waited = time.monotonic() - full_since - seen.full_seconds
        seen.up_stderr = up.stderr  # the full period and the recovery
        with closing(sqlite3.connect(seen.db_path, timeout=30)) as conn:
            seen.integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        seen.run_stderr = {p.name: p.read_text(errors="replace")
                           for p in sorted((home / "logs").glob("run-*.stderr"))}
        yield seen
    finally:
        if up is not None:
            if up.proc.poll() is None:
                up.proc.send_signal(signal.SIGTERM)
                try:
                    up.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            up.kill()
        if store is not None:
            for run in store.list_flow_runs(limit=1000):
                if run["pid"] and is_run_process(run["pid"], run["id"]):
                    os.kill(run["pid"], signal.SIGKILL)
            store.close()
        if filler.exists():
            filler.unlink()
        unmount(fs)


# -- while the disk is full ------------------------------------------------------
@pytest.mark.parametrize("command", sorted(WHILE_FULL))
def test_a_cli_write_while_the_disk_is_full_is_one_line_and_exit_code_3(full_disk, command):
    proc = full_disk.cli[command]
    said = f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == EXIT_DISK_FULL, said
    assert not any(word in proc.stdout + proc.stderr for word in FORBIDDEN), said
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, said
    line = lines[0].lower()
    assert "disk" in line and "full" in line, said
    assert str(full_disk.home).lower() in line, said  # the home, or the database in it
    assert "bytes free" in line, said


def test_the_api_answers_503_unavailable_while_the_disk_is_full(full_disk):
    status, body = full_disk.api
    said = f"HTTP {status}: {body}"
    assert status == 503, said
    assert isinstance(body, dict) and body.get("error", {}).get("code") == "unavailable", said
    message = body["error"]["message"].lower()
    assert "disk" in message and "full" in message and "bytes free" in message, said


def test_up_logs_the_full_disk_once_a_minute_without_tracebacks(full_disk):
    log = full_disk.up_stderr
    counts = {word: log.count(word) for word in FORBIDDEN}
    assert not any(counts.values()), (
        f"up's log holds {counts} after {full_disk.full_seconds:.0f} s of full disk; "
        f"its last lines:\n{log[-4000:]}")
    full = [line for line in log.splitlines() if "full" in line.lower()]
    allowed = 2 * math.ceil(full_disk.full_seconds / 60)
    assert 1 <= len(full) <= allowed, (
        f"up logged {len(full)} lines about the full disk in {full_disk.full_seconds:.0f} s "
        f"(expected 1 to {allowed}):\n" + "\n".join(full[:20]))


# -- once space returns --------------------------------------------------------------
def test_no_run_is_left_unfinished_once_space_returns(full_disk):
    assert full_disk.tasks_finished_while_full, "the runs did not finish their tasks"
    left = [r for r in full_disk.runs if r["state"] not in TERMINAL_STATES]
    assert not left, (f"{full_disk.waited:.0f} s after space returned these runs are not "
                      f"finished:\n{describe(left)}\nall runs:\n{describe(full_disk.runs)}")


def test_runs_whose_tasks_finished_while_full_end_success(full_disk):
    # Every run's task ends as soon as the marker exists: each run is a Success,
    # the two that finished their tasks while the disk was full included.
    runs = {r["id"]: r for r in full_disk.runs}
    expected = full_disk.running + [full_disk.due_while_full]
    assert set(expected) <= set(runs), describe(full_disk.runs)
    not_success = [r for r in full_disk.runs if r["state"] != "Success"]
    assert not not_success, (
        f"runs that are not Success (of {expected}, the first {full_disk.running} "
        f"finished their tasks while the disk was full):\n{describe(not_success)}\n"
        "their processes' stderr:\n" + "\n".join(
            f"--- {name}\n{text[-1500:]}" for name, text in full_disk.run_stderr.items()))


def test_the_database_is_intact_after_the_disk_was_full(full_disk):
    assert full_disk.integrity == ["ok"], full_disk.integrity


def test_up_still_serves_and_runs_a_new_run_after_the_disk_was_full(full_disk):
    up = full_disk.up
    assert up.proc.poll() is None, f"up exited {up.proc.poll()}:\n{up.stderr[-3000:]}"
    status, _, _ = up.health()
    assert status == 200
    status, doc = up.api("POST", "/api/flow_runs", {"flow": "p/wait",
                                                    "parameters": full_disk.params})
    assert status == 201, (status, doc)
    with closing(Store.open(home=full_disk.home)) as store:
        assert wait_for(lambda: store.get_flow_run(doc["id"])["state"] in TERMINAL_STATES,
                        20)
        run = store.get_flow_run(doc["id"])
    assert run["state"] == "Success", run["message"]
