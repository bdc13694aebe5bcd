"""The agent: claims scheduled runs whose labels it has and executes each in
its own child process (`python -m orchestrator execute RUN_ID`, or `python
orchestrator.pyz execute RUN_ID` under the single-file build).

A crash, a leak or an `os._exit` in a flow cannot take the agent down, and the
agent notices a child that ended without recording a final state: the run is
marked Failed with the exit code or signal and the last lines of its stderr.

An agent is one process with a unique id (and each run process it starts
gets one too), registered with its host's identity (see store/identity.py).
Its name is for people, and one live agent holds a name at a time: a second
agent given a name in use (`--name`) is refused; one with the default name
(`host-pid`, which cloned containers share) takes a unique one and says so; an
agent whose predecessor under that name died takes the name over.

    agent = Agent(store, labels=["gpu"], limit=4)
    agent.run_once()        # one step: reap finished children, claim, start
    agent.run(stop_event)   # loop until the event is set
"""

import errno
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

from .. import exit_codes
from ..config import home_dir, load_config, private_dir
from ..core.states import StateName
from ..exceptions import OrchestratorError
from ..flows.run_configs import needs_other_agent
from ..store import TERMINAL_STATES, OutageLog, StoreUnavailable
from ..store.identity import RUN_PROCESS_ID_ENV, host_identity, new_id
from .reaper import process_alive
from .zygote import WarmProcess, WarmStarter, WarmStartUnavailable
from ..service.agents import SEEN_EVERY, silent_after

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 10
DEFAULT_LIMIT = 50  # runs an agent without --limit takes at once (at most, on PostgreSQL)


class AgentNameInUse(OrchestratorError):
    """A live agent (another process) holds the name this agent was given."""


def default_agent_name():
    return f"{socket.gethostname()}-{os.getpid()}"


def orchestrator_command(python=None):
    """The argv that starts the `orchestrator` command in a fresh interpreter:
    `python -m orchestrator`, or `python ARCHIVE` when this process runs from the
    single-file build (scripts/build), whose packages no other interpreter finds,
    or the executable itself when it is a frozen one (PyInstaller)."""
    if getattr(sys, "frozen", False) and python is None:
        return [sys.executable]
    archive = running_archive()
    return [python or sys.executable, *([archive] if archive else ["-m", "orchestrator"])]


@functools.cache
def running_archive():
    """The zip application this process was started from, when it holds this
    package (shiv's layout, site-packages/orchestrator/, or zipapp's); else None."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    archive = os.path.dirname(os.path.abspath(main_file)) if main_file else ""
    if not os.path.isfile(archive):
        return None
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return None
    inside = {"orchestrator/__init__.py", "site-packages/orchestrator/__init__.py"}
    return archive if names & inside else None


def describe_exit(returncode):
    """Words for how a child process ended."""
    if returncode == WarmProcess.LOST:
        return ("ended while the warm-start process that started it was gone, so how it "
                "ended is not known")
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
    """A run process this agent started: attempt `attempt` of run `run_id`."""

    __slots__ = ("run_id", "attempt", "process", "stderr_path", "started", "term_sent",
                 "kill_at")

    def __init__(self, run_id, attempt, process, stderr_path):
        self.run_id = run_id
        self.attempt = attempt
        self.process = process
        self.stderr_path = stderr_path
        self.started = time.time()
        self.term_sent = None   # when SIGTERM went to a run being cancelled
        self.kill_at = None     # when to SIGKILL a process whose run is over


class Agent:
    """Claims and executes runs. `labels` are the runs it may take (plus the
    host name unless `hostname_label=False`); `limit` caps concurrent runs.
    A run without labels goes to any agent, unless `strict_labels` (Prefect 1's
    rule: then only to an agent without labels)."""

    def __init__(self, store, name=None, labels=(), hostname_label=True, limit=None,
                 poll_interval=0.25, python=None, cancel_grace=10.0, strict_labels=False,
                 heartbeat_timeout=None, warm_starts=None):
        if isinstance(labels, str):
            labels = [labels]
        labels = set(labels)
        if hostname_label:
            labels.add(socket.gethostname())
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"Agent limit={limit!r} must be a positive whole number")
        self.store = store
        self.name = name or default_agent_name()
        self.named = name is not None  # a name asked for is refused, not changed, if in use
        self.id = new_id()
        self.host_id = host_identity()
        services = load_config()["services"]
        if heartbeat_timeout is None:
            heartbeat_timeout = services["heartbeat_timeout"]
        # Run processes forked from a warm process (daemons/zygote.py), unless asked
        # not to or the run needs another Python.
        self.warm_starts = services["warm_starts"] if warm_starts is None else warm_starts
        self.warm = None  # the WarmStarter, once the first tick starts it
        # How long a silent agent keeps its name: past the timeout, and never
        # fewer than a few of its liveness writes.
        # It holds its name as long as it counts as alive (service.agents).
        self.name_timeout = silent_after(heartbeat_timeout)
        self.labels = sorted(labels)
        self.strict_labels = bool(strict_labels)
        self.limit = limit
        self._fitting = None  # (limit,) once the database was asked (no `limit` given)
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace
        self.python = python  # None: this interpreter (see orchestrator_command)
        self.children = {}  # (run id, attempt) -> _Child
        self.wake = threading.Event()
        self.env = {}  # set for every run's process (e.g. ORCHESTRATOR_API_URL under up)
        self._registered = False
        self._last_seen = 0.0
        self._unstarted = []  # claims that could not be started: given back next tick

    def __repr__(self):
        return f"<Agent {self.name} labels={self.labels} limit={self.limit}>"

    def fitting_limit(self):
        """Without a `limit`, on PostgreSQL: the runs at once its free connections
        allow (each run process holds one), at most 50; said once. None on SQLite,
        where connections cost nothing (the agent takes up to 50 runs a look)."""
        if self._fitting is None:
            room = self.store.connection_room()
            if room is None:
                self._fitting = (None,)
            else:
                spare = max(2, room["max"] // 10)  # for the CLI, APIs, other agents
                limit = max(1, min(DEFAULT_LIMIT, room["max"] - room["reserved"]
                                   - room["in_use"] - spare))
                self._fitting = (limit,)
                logger.info("Agent %s: no --limit given, so at most %d flow runs at once: "
                            "what PostgreSQL has connections for (max_connections %d, %d "
                            "reserved, %d in use, %d kept for other clients; a run holds "
                            "one). Give --limit to choose.", self.name, limit, room["max"],
                            room["reserved"], room["in_use"], spare)
        return self._fitting[0]

    def run_once(self, now=None):
        """Reap finished children, watch running ones, then claim and start what
        fits. Returns the ids of the runs started."""
        if not self._registered:
            self.register()
        if self.warm_starts and self.warm is None and self.python is None:
            self._start_warm()
        self.reap()
        self.watch()
        self._return_unstarted()
        limit = self.limit or self.fitting_limit()
        free = (limit - len(self.children)) if limit else DEFAULT_LIMIT
        started = []
        if free > 0:
            for run_id, attempt in self.store.claim_runs(self.name, self.labels, free, now=now,
                                                         strict_labels=self.strict_labels,
                                                         runs_config=runs_as_a_process):
                if self._unstarted:  # the store failed us this tick: later, again
                    self._unstarted.append((run_id, attempt))
                    continue
                try:
                    self._start(run_id, attempt)
                except Exception:
                    # The claim stays ours to give back (the store may be full now).
                    self._unstarted.append((run_id, attempt))
                    raise
                started.append(run_id)
        if time.monotonic() - self._last_seen > SEEN_EVERY:
            if not self.store.agent_seen(self.name, self.id):  # a write: not every poll
                self._name_lost()
            self._last_seen = time.monotonic()
        return started

    def register(self, wait=True):
        """Record this agent under its name, then give back the claims an earlier
        agent of that name made and never started.

        The name is held by another agent seen within `name_timeout`? If that
        one is gone from this host's process table, we take over at once. If
        it is elsewhere, a name asked for (`--name`; with `wait`) waits for the
        holder's next liveness write: none before the timeout means it died
        (say, the container restarted), and we take over; one means it is
        alive, and AgentNameInUse is raised. A default name is made unique.
        """
        started = time.time()
        replaces = watched = None
        while True:
            holder = self.store.register_agent(
                self.name, self.labels, socket.gethostname(), os.getpid(), self.limit,
                self.strict_labels, uid=self.id, host_id=self.host_id,
                live_after=time.time() - self.name_timeout, replaces=replaces)
            if holder is None:
                break
            if self._predecessor(holder) and replaces != holder["id"]:
                replaces = holder["id"]  # it died (or is this process's): take over
                continue
            where = (f"host {holder['host']}, pid {holder['pid']}, id {holder['id']}, last "
                     f"seen {max(0.0, time.time() - holder['last_seen']):.0f} s ago")
            seen = (holder["id"], holder["last_seen"])
            if self.named and wait and watched in (None, seen):
                if watched is None:
                    logger.warning("Agent name %s is held by an agent elsewhere (%s); "
                                   "waiting up to %.0f s from then to learn whether it is "
                                   "alive", self.name, where, self.name_timeout)
                watched = seen
                time.sleep(1.0)
                continue
            if self.named:
                raise AgentNameInUse(
                    f"Agent name {self.name!r} is in use by a running agent ({where}). Give "
                    f"this agent another --name, or stop that agent first; a name is free "
                    f"again {self.name_timeout:.0f} s after its agent was last seen.")
            unique = f"{self.name}-{self.id[:8]}"
            logger.warning("Agent name %s is in use by another running agent (%s), as "
                           "default names (host-pid) of cloned hosts and containers can "
                           "be; this agent is %s", self.name, where, unique)
            self.name = unique
        self._registered = True
        self._last_seen = time.monotonic()
        self._return_stale_claims(before=started)

    def _predecessor(self, holder):
        """Is the agent holding our name an earlier one we may replace: gone from
        this host's process table, or an earlier agent of this very process?"""
        if holder.get("host_id") != self.host_id:
            return False  # elsewhere: only its silence (last seen) tells
        return holder["pid"] == os.getpid() or not process_alive(holder["pid"])

    def _name_lost(self):
        """Another agent took our name over while we were silent (stopped, or cut
        off from the database longer than the timeout): go on under a unique one."""
        taken, suffix = self.name, f"-{self.id[:8]}"
        self.name = f"{taken}-{new_id()[:8]}" if taken.endswith(suffix) else taken + suffix
        self.named = False  # a name of our own making: never refused, changed again
        logger.warning("Agent %s: another agent took the name over after this one was "
                       "not seen for over %.0f s; this agent goes on as %s", taken,
                       self.name_timeout, self.name)
        self.register()

    def run(self, stop):
        """Loop until `stop` (a threading.Event) is set; `wake` cuts a wait short:
        the API of this process sets it when it creates a run, the store's
        doorbell when another process does, a warm-start process when a run
        process ends."""
        outage = OutageLog(logger, probe=self.store.probe_write)
        threading.Thread(target=self.answer_the_doorbell, args=(stop,), daemon=True,
                         name=f"agent-doorbell-{self.name}").start()
        while not stop.is_set():
            try:
                self.run_once()
                outage.ok()
            except StoreUnavailable as exc:
                outage.failed(f"Agent {self.name}", exc)
            except AgentNameInUse:
                raise  # nothing to try again: the name is another agent's
            except Exception:  # the loop must outlive a bad tick; say what happened
                logger.exception("Agent %s: a step failed; trying again", self.name)
            self.wake.wait(self.poll_interval)
            self.wake.clear()

    def answer_the_doorbell(self, stop):
        """Until `stop` is set: wake the loop when runs may be due (another process
        created one: store/doorbell.py) and a run fits. A thread's whole work."""
        try:
            listener = self.store.doorbell()
        except Exception as exc:  # e.g. no free connection: polling still finds runs
            logger.info("Agent %s: cannot listen for new runs (%s); it looks every %g s",
                        self.name, exc, self.poll_interval)
            return
        try:
            while not stop.is_set():
                if listener.wait(1.0) and self._has_room():
                    self.wake.set()
        except Exception:
            logger.exception("Agent %s: stopped listening for new runs; it looks every "
                             "%g s", self.name, self.poll_interval)
        finally:
            listener.close()

    def _has_room(self):
        limit = self.limit or (self._fitting or (None,))[0]
        return limit is None or len(self.children) < limit

    def _return_stale_claims(self, before):
        """Claims an earlier process of this agent (same name; it is gone, or we
        would not hold the name) made and did not start go back to Scheduled,
        unless their process is there and starting (it was orphaned by the
        restart and will run them itself). A process on another host is not
        ours to look for: its host's reaper, or the claim's timeout, judges it."""
        for claim in self.store.stale_claims(self.name, before=before):
            if claim["pid"] and claim.get("host_id") != self.host_id:
                logger.info("Agent %s: run %s is starting in process %s on another host; "
                            "it is left to that host", self.name, claim["id"], claim["pid"])
                continue
            if claim["pid"] and process_alive(claim["pid"], claim["id"]):
                logger.info("Agent %s: run %s is starting in process %s of an earlier "
                            "process of this agent; it is left to it", self.name,
                            claim["id"], claim["pid"])
                continue
            if self.store.return_unstarted(
                    claim["id"], claim["attempt"],
                    f"Scheduled again: its agent {self.name} restarted before starting it, "
                    "so it never ran."):
                logger.warning("Agent %s: run %s was claimed by an earlier process of "
                               "this agent and never started; scheduled it again",
                               self.name, claim["id"])

    def _return_unstarted(self):
        while self._unstarted:
            run_id, attempt = self._unstarted[0]
            self.store.return_unstarted(run_id, attempt, f"Scheduled again: agent {self.name} "
                                        "could not start it, so it never ran.")
            self._unstarted.pop(0)

    def _start(self, run_id, attempt):
        run = self.store.get_flow_run(run_id)
        flow = self.store.get_flow(run["flow_id"])
        config = flow.get("run_config") or {}
        env = dict(os.environ, **self.env)
        env.update(config.get("env") or {})
        process_id = env[RUN_PROCESS_ID_ENV] = new_id()
        cwd = config.get("working_dir") or None
        # One stderr file per attempt: a second process never truncates a first's.
        stderr_path = private_dir(home_dir() / "logs") / f"run-{run_id}.{attempt}.stderr"
        try:
            process = self._spawn(run_id, attempt, env, cwd, stderr_path)
        except OSError as exc:
            why = f"Agent {self.name} could not start the run: {exc}"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # it never ran: later, again
                self.store.return_unstarted(run_id, attempt, f"Scheduled again: {why}")
            else:
                self.store.fail_flow_run(run_id, attempt, StateName.SUBMITTED, why)
            return
        if process is None:  # the warm-start process went before saying whether it forked
            self.store.return_unstarted(
                run_id, attempt, f"Scheduled again: agent {self.name}'s warm-start process "
                "ended while starting it, before it could start.")
            return
        self.children[(run_id, attempt)] = _Child(run_id, attempt, process, stderr_path)
        logger.info("Agent %s: started flow run %s, attempt %s (pid %s)", self.name, run_id,
                    attempt, process.pid)
        try:
            self.store.record_run_process(run_id, attempt, process.pid, process_id)
        except StoreUnavailable:
            pass  # the process records itself when it starts the run

    def _spawn(self, run_id, attempt, env, cwd, stderr_path):
        """The run's process: forked warm when it can be (None when the warm-start
        process went before saying whether it forked), else a fresh interpreter."""
        argv = ["execute", str(run_id), "--agent", self.name, "--attempt", str(attempt)]
        # Made here either way: a disk too full for it says so before anything starts.
        stderr = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self.warm_starts:
            os.close(stderr)
            if cwd and not os.path.isdir(cwd):  # fails as a fresh start would, before forking
                code = errno.ENOTDIR if os.path.exists(cwd) else errno.ENOENT
                raise OSError(code, os.strerror(code), cwd)
            try:
                if self.python is not None:
                    raise WarmStartUnavailable(f"it runs with another Python ({self.python})",
                                               for_the_run=True)
                if self.warm is None:
                    self._start_warm()
                return self.warm.spawn(argv, env, cwd, stderr_path,
                                       title=["execute", str(run_id), "--attempt", str(attempt)])
            except WarmStartUnavailable as exc:
                self._starting_fresh(run_id, exc)
            stderr = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
                [*orchestrator_command(self.python), *argv], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=cwd,
                start_new_session=True)
        finally:
            os.close(stderr)

    def warm_status(self):
        """For /api/health: whether runs start warm now, and the warm-start process."""
        zygote = self.warm.current if self.warm is not None else None
        ready = bool(zygote and zygote.ready.is_set() and not zygote.gone and not zygote.problem)
        return {"enabled": bool(self.warm_starts), "ready": ready,
                "pid": zygote.process.pid if zygote else None,
                "forks": zygote.forks if zygote else 0,
                "problem": zygote.problem if zygote else None}

    def _start_warm(self):
        """Start the warm-start process, before any run needs it."""
        self.warm = WarmStarter(orchestrator_command(), dict(os.environ, **self.env),
                                private_dir(home_dir() / "logs") / "zygote.stderr",
                                on_exit=self.wake.set)
        self.warm.start()

    def _starting_fresh(self, run_id, reason):
        """Say why run `run_id` starts in a fresh interpreter: in its log when the
        reason is the run's, else in the agent's (debug: it passes)."""
        if not reason.for_the_run:
            logger.debug("Agent %s: run %s starts in a fresh interpreter: %s", self.name,
                         run_id, reason)
            return
        try:
            self.store.write_logs([{
                "flow_run": run_id, "time": time.time(), "level": logging.INFO,
                "logger": "orchestrator.agent",
                "message": f"Started in a fresh interpreter, not a warm one: {reason}."}])
        except StoreUnavailable:
            pass  # a line of log is not worth holding the run back

    def watch(self):
        """Look at the runs of the children still running: SIGTERM the process
        group of a run asked to cancel (SIGKILL after the grace period), and
        SIGKILL a process whose run another attempt owns now (at once) or that
        was ended by someone else (after the grace period: it may be ending)."""
        live = [c for c in self.children.values() if c.process.poll() is None]
        if not live:
            return
        runs = self.store.run_attempts([c.run_id for c in live])
        now = time.monotonic()
        for child in live:
            state, attempt = runs.get(child.run_id, (None, None))
            if attempt != child.attempt:
                logger.warning("Agent %s: run %s attempt %s is owned by attempt %s now; "
                               "stopping its process %s", self.name, child.run_id,
                               child.attempt, attempt, child.process.pid)
                _signal_group(child.process, signal.SIGKILL)
            elif state == StateName.CANCELLING:
                if child.term_sent is None:
                    child.term_sent = now
                    _signal_group(child.process, signal.SIGTERM)
                    logger.info("Agent %s: cancelling flow run %s", self.name, child.run_id)
                elif now - child.term_sent > self.cancel_grace:
                    _signal_group(child.process, signal.SIGKILL)
            elif state is None or state in TERMINAL_STATES \
                    or state in (StateName.SCHEDULED, StateName.PAUSED):
                # Its run is over, waits, or was returned: the process should be ending.
                if child.kill_at is None:
                    child.kill_at = now + self.cancel_grace
                elif now > child.kill_at:
                    logger.warning("Agent %s: run %s is %s but its process %s goes on; "
                                   "stopping it", self.name, child.run_id, state,
                                   child.process.pid)
                    _signal_group(child.process, signal.SIGKILL)

    def reap(self):
        """Collect children that ended; record the runs they left unfinished. A
        child is forgotten only once that is recorded (the store may be full)."""
        if self.warm is not None:
            self.warm.reap_retired()
        for key, child in list(self.children.items()):
            returncode = child.process.poll()
            if returncode is None:
                continue
            self._record_exit(child, returncode)
            del self.children[key]

    def _record_exit(self, child, returncode):
        run_id, attempt = child.run_id, child.attempt
        state = self.store.run_attempts([run_id]).get(run_id, (None, None))[0]
        if state == StateName.CANCELLING:
            self.store.cancelled_flow_run(run_id, attempt, f"Cancelled on request; its "
                                          f"process {describe_exit(returncode)}.")
            return
        if state not in (StateName.SUBMITTED, StateName.RUNNING):
            return  # it ended, waits, or belongs to another attempt: the run says so
        if state == StateName.SUBMITTED and returncode == exit_codes.STORE_UNAVAILABLE:
            # It could not start the run (the store could not be written): it never ran.
            self.store.return_unstarted(run_id, attempt, "Scheduled again: its process could "
                                        "not write to the store to start it.")
            return
        message = (f"Flow run process {describe_exit(returncode)} before recording "
                   f"a final state.{_tail(child.stderr_path)}")
        if self.store.fail_flow_run(run_id, attempt, state, message):
            logger.warning("Agent %s: flow run %s %s", self.name, run_id,
                           describe_exit(returncode))

    def stop(self, grace=30.0):
        """Wait up to `grace` seconds for running children, then reap them."""
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.1)
        self.reap()
        if self.warm is not None:  # it ends once the children it forked have
            self.warm.close(wait=max(0.0, deadline - time.monotonic()))
            self.warm = None
        return [child.run_id for child in self.children.values()]


def runs_as_a_process(run_config_ref):
    """Can an agent of ours (which runs each flow run as a local process) run a
    flow with this run config? (A DockerRun needs a Docker agent, and so on.)"""
    return needs_other_agent(run_config_ref) is None


def _signal_group(process, signum):
    """Signal the run's whole process group: the run and any child it started."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path, lines=STDERR_TAIL_LINES):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return ("\nLast lines of its stderr:\n" + "\n".join(tail)) if tail else ""
