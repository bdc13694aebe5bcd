"""The agent: claims scheduled runs whose labels it has and executes each in
its own child process (`python -m orchestrator execute RUN_ID`).

A crash, a leak or an `os._exit` in a flow cannot take the agent down, and the
agent notices a child that ended without recording a final state: the run is
marked Failed with the exit code or signal and the last lines of its stderr.

    agent = Agent(store, labels=["gpu"], limit=4)
    agent.run_once()        # one step: reap finished children, claim, start
    agent.run(stop_event)   # loop until the event is set
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..config import home_dir
from ..store import TERMINAL_STATES

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 10
SEEN_EVERY = 5.0  # seconds between the agent's liveness writes


def default_agent_name():
    return f"{socket.gethostname()}-{os.getpid()}"


def describe_exit(returncode):
    """Words for how a child process ended."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        why = ", likely out of memory" if number == signal.SIGKILL else ""
        return f"killed by signal {number} ({name}){why}"
    return f"exited with code {returncode}"


class _Child:
    __slots__ = ("run_id", "process", "stderr_path", "started", "term_sent")

    def __init__(self, run_id, process, stderr_path):
        self.run_id = run_id
        self.process = process
        self.stderr_path = stderr_path
        self.started = time.time()
        self.term_sent = None


class Agent:
    """Claims and executes runs. `labels` are the runs it may take (plus the
    host name unless `hostname_label=False`); `limit` caps concurrent runs."""

    def __init__(self, store, name=None, labels=(), hostname_label=True, limit=None,
                 poll_interval=0.25, python=None, cancel_grace=10.0):
        if isinstance(labels, str):
            labels = [labels]
        labels = set(labels)
        if hostname_label:
            labels.add(socket.gethostname())
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"Agent limit={limit!r} must be a positive whole number")
        self.store = store
        self.name = name or default_agent_name()
        self.labels = sorted(labels)
        self.limit = limit
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace
        self.python = python or sys.executable
        self.children = {}
        self.wake = threading.Event()
        self.env = {}  # set for every run's process (e.g. ORCHESTRATOR_API_URL under up)
        self._registered = False
        self._last_seen = 0.0

    def __repr__(self):
        return f"<Agent {self.name} labels={self.labels} limit={self.limit}>"

    def run_once(self, now=None):
        """Reap finished children, then claim and start what fits. Returns the
        ids of the runs started."""
        if not self._registered:
            started = time.time()
            self.store.register_agent(self.name, self.labels, socket.gethostname(),
                                      os.getpid(), self.limit)
            for run_id in self.store.requeue_stale_claims(self.name, before=started):
                logger.warning("Agent %s: run %s was claimed by an earlier process of "
                               "this agent and never started; scheduled it again",
                               self.name, run_id)
            self._registered = True
        self.reap()
        self.stop_cancelled()
        free = (self.limit - len(self.children)) if self.limit else 50
        started = []
        if free > 0:
            for run_id in self.store.claim_runs(self.name, self.labels, free, now=now):
                self._start(run_id)
                started.append(run_id)
        if time.monotonic() - self._last_seen > SEEN_EVERY:
            self.store.agent_seen(self.name)  # a write: not on every short poll
            self._last_seen = time.monotonic()
        return started

    def run(self, stop):
        """Loop until `stop` (a threading.Event) is set; `wake` cuts a wait short."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # the loop must outlive a bad tick; say what happened
                logger.exception("Agent %s: a step failed; trying again", self.name)
            self.wake.wait(self.poll_interval)
            self.wake.clear()

    def _start(self, run_id):
        run = self.store.get_flow_run(run_id)
        flow = self.store.get_flow(run["flow_id"])
        config = flow.get("run_config") or {}
        env = dict(os.environ, **self.env)
        env.update(config.get("env") or {})
        cwd = config.get("working_dir") or None
        logs = home_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stderr_path = logs / f"run-{run_id}.stderr"
        try:
            with open(stderr_path, "wb") as stderr:
                process = subprocess.Popen(
                    [self.python, "-m", "orchestrator", "execute", str(run_id),
                     "--agent", self.name],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    env=env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            self.store.set_flow_run_state(
                run_id, "Failed", f"Agent {self.name} could not start the run: {exc}",
                end=True)
            return
        self.children[run_id] = _Child(run_id, process, stderr_path)
        logger.info("Agent %s: started flow run %s (pid %s)", self.name, run_id, process.pid)

    def stop_cancelled(self):
        """SIGTERM the process group of each run asked to cancel; SIGKILL it
        after the grace period. `reap` then records it Cancelled."""
        for run_id, child in list(self.children.items()):
            if child.process.poll() is not None:
                continue
            if child.term_sent is None:
                if self.store.get_flow_run(run_id)["state"] != "Cancelling":
                    continue
                child.term_sent = time.monotonic()
                _signal_group(child.process, signal.SIGTERM)
                logger.info("Agent %s: cancelling flow run %s", self.name, run_id)
            elif time.monotonic() - child.term_sent > self.cancel_grace:
                _signal_group(child.process, signal.SIGKILL)

    def reap(self):
        """Collect children that ended; fail runs they left unfinished."""
        for run_id, child in list(self.children.items()):
            returncode = child.process.poll()
            if returncode is None:
                continue
            del self.children[run_id]
            state = self.store.get_flow_run(run_id)["state"]
            if state in TERMINAL_STATES or state in ("Scheduled", "Paused"):
                continue
            if state == "Cancelling" or child.term_sent is not None:
                self.store.set_flow_run_state(
                    run_id, "Cancelled", f"Cancelled on request; its process "
                    f"{describe_exit(returncode)}.", end=True)
                continue
            message = (f"Flow run process {describe_exit(returncode)} before recording "
                       f"a final state.{_tail(child.stderr_path)}")
            self.store.set_flow_run_state(run_id, "Failed", message, end=True)
            logger.warning("Agent %s: flow run %s %s", self.name, run_id,
                           describe_exit(returncode))

    def stop(self, grace=30.0):
        """Wait up to `grace` seconds for running children, then reap them."""
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.1)
        self.reap()
        return list(self.children)


def _signal_group(process, signum):
    """Signal the run's whole process group: the run and any child it started."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _tail(path, lines=STDERR_TAIL_LINES):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return ("\nLast lines of its stderr:\n" + "\n".join(tail)) if tail else ""
