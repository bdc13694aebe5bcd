"""Warm starts: run processes forked from a process that has already imported
what a run needs, instead of a fresh interpreter per run.

A fresh `python -m orchestrator execute RUN` spends most of its life starting:
the interpreter, then importing the engine, the store, click, peewee and
cloudpickle. The agent starts one *zygote* instead (`orchestrator zygote`, a
fresh interpreter of its own, single-threaded, that imports those modules and
never user code, never the database) and asks it for each run: the zygote
forks, and the child does exactly what `orchestrator execute RUN` does, in its
own process, session and process group, with the run's environment, working
directory and stderr file, its own database connection and fresh random state.
It is the pattern of multiprocessing's forkserver: fork only from a process
that has no threads and holds no connections, so nothing a fork cannot copy
(a lock held by another thread, a socket) is ever copied.

The protocol is JSON lines over the zygote's stdin and stdout:

    agent -> zygote   {"id": 7, "argv": [...], "env": {...}, "cwd": ..., "stderr": path,
                       "title": ["execute", "12", "--attempt", "1"]}
    zygote -> agent   {"ready": pid}  once, when its imports are done
                      {"id": 7, "pid": 4242}   or   {"id": 7, "error": "..."}
                      {"exit": 4242, "id": 7, "code": 0}  (negative: killed by that signal)

A forked child rewrites its command line to `... orchestrator execute RUN
--attempt N` (the zygote starts with room for it), so `ps` and the reaper,
which checks a run's process by its command line, see it as a fresh run process.

One child is forked ahead, the *spare* (`... orchestrator zygote spare`): it
does what does not depend on its run (a session of its own, signals, /dev/null,
none of the zygote's descriptors, the store opened) and waits for a request on
a pipe of its own; the zygote hands it the next request instead of forking,
and forks the next spare SPARE_DELAY later. Before it forks anything, the
zygote builds the store's statements, reads the config and rehearses (runs a
built-in flow on a scratch store: service/rehearsal.py), so that no child does
any of it again: what a child only reads of the zygote's memory it shares.

The agent side (`WarmStarter`) keeps one zygote, starts a new one after
`max_forks` forks or when it dies, and says when a run cannot start warm; the
agent then starts a fresh interpreter, as it does while no zygote is ready.
"""

import ctypes
import gc
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

# What a run process imports, loaded once by the zygote (never user code).
# (The command line itself is loaded already: the zygote is one of its commands.)
PRELOAD = (
    "orchestrator.service", "orchestrator.service.execution",
    "orchestrator.flows.storage", "orchestrator.engine.flow_runner",
    "orchestrator.engine.task_runner", "orchestrator.engine.executors",
    "orchestrator.engine.run_logging", "orchestrator.store", "orchestrator.core.results",
    "cloudpickle", "peewee", "sqlite3", "logging.handlers", "uuid", "json", "zoneinfo",
)
# Environment variables that change what an interpreter imports or how it starts:
# a run whose environment sets one of these differently starts fresh.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "VIRTUAL_ENV")
# Room in the zygote's command line for a child's `execute RUN --attempt N`.
_TITLE_ROOM = 96
TITLE_PADDING = "." * _TITLE_ROOM
MAX_FORKS = 1000  # forks before a zygote is replaced by a fresh one
# Seconds after a spare is taken before the next is forked: forking it (and its
# opening the store) at once would take a core from the run that has just begun.
SPARE_DELAY = 0.02
RESTART_BACKOFF = 10.0  # seconds before replacing a zygote that ended before it was ready
READY_TIMEOUT = 30.0
REPLY_TIMEOUT = 10.0


class WarmStartUnavailable(Exception):
    """This run cannot start warm now (why is the message); start it fresh.
    `for_the_run`: the reason is the run's own (its environment), worth saying
    in its log; otherwise it passes (the warm-start process is starting)."""

    def __init__(self, message, for_the_run=False):
        super().__init__(message)
        self.for_the_run = for_the_run


# -- the zygote's side ---------------------------------------------------------------
def serve(command, prepare=None, read_fd=0, write_fd=1):  # noqa: C901 - one loop
    """The zygote's loop: preload, say ready, then give a child to each request
    and report each child's exit, until its stdin closes and its children are
    done. A child calls `command(argv)`, the `orchestrator` command's entry
    point (it ends by raising SystemExit, as click's commands do).

    One child is forked ahead (the *spare*): it does what does not depend on the
    run, `prepare()` included (opening the store), then waits for a request, so
    a run's process is ready when its request comes; a new spare is forked once
    one is taken."""
    import importlib

    global _environment
    for name in PRELOAD:
        importlib.import_module(name)
    from ..config import load_config
    from ..exceptions import OrchestratorError
    from ..store import build_statements_ahead

    build_statements_ahead()  # (their SQL text only: no connection)
    try:
        load_config()  # its log format is tried once here, not in every child
    except OrchestratorError:
        pass  # each run says what is wrong with it
    else:
        _rehearse()
    _environment = dict(os.environ)
    # What is imported stays put: the collector never walks (and so never writes
    # to) these objects again, so children share their pages instead of copying.
    gc.collect()
    gc.freeze()
    from ..engine.flow_runner import frozen_for_good

    frozen_for_good()  # (its children end with their run)
    title_ok = _set_title(["zygote", "ready"])
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent says when to stop
    _send(write_fd, {"ready": os.getpid(), "titles": title_ok,
                     "threads": threading.active_count()})
    selector = selectors.DefaultSelector()
    selector.register(read_fd, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children = _Children(command, prepare, write_fd,
                         (read_fd, write_fd, wake_r, wake_w, selector.fileno()))
    children.fork_spare()
    buffer, closing = b"", False
    while not closing or children.running:
        timeout = 1.0 if closing else children.spare_wait()
        for key, _ in selector.select(timeout=timeout):
            if key.fd == wake_r:
                _drain(wake_r)
            else:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    closing = True
                    selector.unregister(read_fd)
                    children.drop_spare()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        children.start(json.loads(line))
        children.reap()
        if not closing and children.spare_wait() == 0:
            children.fork_spare()
    return 0


def _rehearse():
    """Run the rehearsal flow (service/rehearsal.py) before the first fork: the
    code a run's process runs is then run once here, not in every child. One that
    fails is said on stderr, and the children start all the same."""
    from ..service.rehearsal import rehearse

    try:
        rehearse()
    except Exception as exc:  # noqa: BLE001 - the children pay for it, nothing more
        print(f"orchestrator zygote: the rehearsal failed, so runs start less warm: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


class _Children:
    """The zygote's children: the run processes it started (pid -> the request
    each answers), and the spare waiting for the next request."""

    def __init__(self, command, prepare, write_fd, inherited):
        self.command = command
        self.prepare = prepare
        self.write_fd = write_fd
        self.inherited = inherited  # the zygote's descriptors, closed in a child
        self.running = {}
        self.spare = None  # (pid, the pipe its request goes down)
        self.spare_at = None  # when to fork the next spare (monotonic), if one is due

    def start(self, request):
        """A run process for `request`: the spare if there is one, else a fork."""
        if self.spare is not None:
            pid, pipe = self.spare
            self.spare = None
            try:
                _write_all(pipe, (json.dumps(request) + "\n").encode())
            except OSError:
                # It died waiting, or its pipe is full (a request larger than the
                # pipe while it is still preparing): never wait on it; it ends,
                # and the request goes to a new child.
                _kill(pid)
                pid = None
            finally:
                os.close(pipe)
        else:
            pid = None
        if pid is None:
            try:
                pid = os.fork()
            except OSError as exc:
                _send(self.write_fd, {"id": request["id"], "error": f"fork failed: {exc}"})
                return
            if pid == 0:
                _detach(self.inherited)
                _become_run_process(request, self.command)  # never returns
        self.running[pid] = request["id"]
        _send(self.write_fd, {"id": request["id"], "pid": pid})
        if self.spare_at is None:
            self.spare_at = time.monotonic() + SPARE_DELAY

    def spare_wait(self):
        """Seconds until the next spare is due (None: none is)."""
        if self.spare_at is None:
            return None
        return max(0.0, self.spare_at - time.monotonic())

    def fork_spare(self):
        self.spare_at = None
        if self.spare is not None:
            return
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # none this time: the next request forks
            os.close(read)
            os.close(write)
            return
        if pid == 0:
            os.close(write)
            _detach(self.inherited)
            _wait_as_spare(read, self.command, self.prepare)  # never returns
        os.close(read)
        os.set_blocking(write, False)  # (see start)
        self.spare = (pid, write)

    def drop_spare(self):
        """No more requests: the spare ends (its pipe closes, or it is killed)."""
        if self.spare is not None:
            pid, pipe = self.spare
            self.spare = None
            os.close(pipe)
            _kill(pid)

    def reap(self):
        """Report the run processes that ended; forget a spare that did (a new
        one is forked after the next request, not at once: one that cannot
        start would fail again)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.running.clear()
                return
            if pid == 0:
                return
            if pid in self.running:
                _send(self.write_fd, {"exit": pid, "id": self.running.pop(pid),
                                      "code": os.waitstatus_to_exitcode(status)})
            elif self.spare is not None and self.spare[0] == pid:
                os.close(self.spare[1])
                self.spare = None


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _detach(inherited):
    """In a forked child, what does not depend on its run: its own session and
    process group (a cancel signals them all), signals as a fresh interpreter
    has them (SIGPIPE stays ignored, as Python starts with it), /dev/null for
    stdin and stdout, and none of the zygote's descriptors."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    for fd in {devnull, *inherited} - {0, 1, 2}:
        os.close(fd)


def _wait_as_spare(pipe, command, prepare):
    """The spare: prepare, then wait for a request (none: it ends)."""
    try:
        _set_title(["zygote", "spare"])
        if prepare is not None:
            try:
                prepare()
            except Exception:  # noqa: S110 - the run does it again, and says what is wrong
                pass
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(pipe, 65536)
            if not chunk:
                os._exit(0)
            data += chunk
        os.close(pipe)
        request = json.loads(data)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    _become_run_process(request, command)


def _become_run_process(request, command):
    """In the forked child: become the run process `orchestrator execute` would
    be, with the run's stderr file, environment and working directory."""
    code = 1
    try:
        _set_title(request.get("title") or [])
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(stderr, 2)
        os.close(stderr)
        _set_environment(request["env"])
        if request.get("cwd"):
            os.chdir(request["cwd"])
        sys.path[0] = os.getcwd()  # as `python -m` started here would have it
        sys.argv = [sys.argv[0], *request["argv"]]  # as `python -m orchestrator ...`
        try:
            command(request["argv"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # whatever happens, this process must not return to the loop
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: S110 - ending anyway
                pass
        os._exit(code)


def _set_environment(env):
    """Make os.environ `env`, changing only what differs (most of it is the
    zygote's own: setting all of it again would cost a warm run a fortieth of
    its CPU), found by comparing plain dicts (os.environ decodes each value)."""
    inherited = _environment if _environment is not None else dict(os.environ)
    for name in inherited.keys() - env.keys():
        del os.environ[name]
    for name, value in env.items():
        if inherited.get(name) != value:
            os.environ[name] = value


# The zygote's os.environ as a plain dict, taken before it forks (its children
# start with it); None: not taken.
_environment = None


def _set_title(words):
    """Show `python -m orchestrator WORDS...` as this process's command line (in
    the room the zygote's last argument keeps); False where it cannot be done."""
    global _title_room
    try:
        if _title_room is None:
            _title_room = _command_line_room()
        if not _title_room:
            return False
        keep, start, end = _title_room
        new = b"\0".join(keep + [w.encode() for w in words]) + b"\0"
        if len(new) > end - start:
            return False
        # The command line is this process's own memory (where the kernel put
        # argv), which the kernel reads for /proc/PID/cmdline: written in place,
        # as setproctitle does (through /proc/self/mem it cost a run 0.15 ms).
        ctypes.memmove(start, new.ljust(end - start, b"\0"), end - start)
        return True
    except (OSError, ValueError, IndexError):
        return False


# (what to keep of the command line, where its room starts and ends), read once:
# a forked child has the zygote's, at the same addresses. False: there is none.
_title_room = None


def _command_line_room():
    with open("/proc/self/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end
    with open("/proc/self/cmdline", "rb") as fh:
        line = fh.read()
    if ctypes.string_at(start, end - start) != line:
        return False  # (not where the kernel reads it from: leave it be)
    parts = line.split(b"\0")
    try:
        return parts[:parts.index(b"zygote")], start, end  # the interpreter, how it was asked
    except ValueError:
        return False


def _problem(ready):
    """Why the children of a zygote that said `ready` would not be fit to run."""
    if not ready.get("titles"):
        return ("this system does not let a process set its command line, which the reaper "
                "reads to find a run's process")
    if ready.get("threads", 1) != 1:
        return (f"the warm-start process has {ready['threads']} threads after its imports, and "
                "forking a threaded process is not safe")
    return None


def _send(fd, message):
    _write_all(fd, (json.dumps(message) + "\n").encode())


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


# -- the agent's side ------------------------------------------------------------------
class WarmProcess:
    """A run process a zygote forked: what the agent needs of a Popen (pid,
    poll). Its exit code comes from the zygote; if the zygote is gone, the
    process is watched by its pid and, once gone, its code is unknown (None
    stays None until then; LOST afterwards)."""

    LOST = -256  # ended while its zygote was gone: how is unknown

    def __init__(self, zygote, pid, request_id):
        self.zygote = zygote
        self.pid = pid
        self.request_id = request_id
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            code = self.zygote.exit_code(self.pid, self.request_id)
            if code is not None:
                self.returncode = code
            elif self.zygote.gone and not _alive(self.pid):
                self.returncode = self.LOST
        return self.returncode


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


class _Zygote:
    """One zygote process and the thread that reads what it says."""

    def __init__(self, command, env, stderr_path, on_exit):
        stderr = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.process = subprocess.Popen(
                [*command, "zygote", TITLE_PADDING], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True)
        finally:
            os.close(stderr)
        self.on_exit = on_exit
        self.forks = 0
        self.gone = False
        self.ready = threading.Event()
        self.problem = None  # why its children would not be fit to run, if they would not
        self.said_ready = False  # it said it was ready
        self._lock = threading.Condition()
        self._replies = {}
        self._exits = {}
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, name="zygote-reader", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "ready" in message:
                self.problem = _problem(message)
                self.said_ready = True
                self.ready.set()
            elif "exit" in message:
                with self._lock:
                    self._exits[message.get("id"), message["exit"]] = message["code"]
                self.on_exit()
            else:
                with self._lock:
                    self._replies[message["id"]] = message
                    self._lock.notify_all()
        with self._lock:
            self.gone = True
            self._lock.notify_all()
        self.ready.set()
        self.on_exit()

    def spawn(self, argv, env, cwd, stderr_path, title):
        """Fork a child for `argv`; its WarmProcess. WarmStartUnavailable when the
        zygote could not fork; None when it went away before saying whether it
        did (the run's claim is then given back, not started twice)."""
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
        request = {"id": request_id, "argv": argv, "env": env, "cwd": cwd,
                   "stderr": str(stderr_path), "title": title}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except (OSError, ValueError) as exc:  # it is gone: nothing was asked of it
            self.gone = True
            raise WarmStartUnavailable(f"the warm-start process is gone ({exc})") from None
        self.forks += 1
        deadline = time.monotonic() + REPLY_TIMEOUT
        with self._lock:
            while request_id not in self._replies and not self.gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            reply = self._replies.pop(request_id, None)
        if reply is None:
            return None
        if "error" in reply:
            raise WarmStartUnavailable(reply["error"])
        return WarmProcess(self, reply["pid"], request_id)

    def exit_code(self, pid, request_id):
        """The exit code of the child forked for `request_id` (its pid `pid`), once
        it ended (keyed by both: a pid may come again)."""
        with self._lock:
            return self._exits.pop((request_id, pid), None)

    def close(self):
        """No more requests: it ends once its children have."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def kill(self):
        try:
            self.process.kill()
        except OSError:
            pass


class WarmStarter:
    """The agent's warm starts: a zygote kept ready, replaced after `max_forks`
    forks or when it dies; `spawn` forks a run process or says why it cannot."""

    def __init__(self, command, env, stderr_path, on_exit, max_forks=MAX_FORKS):
        self.command = command
        self.env = dict(env)
        self.stderr_path = stderr_path
        self.on_exit = on_exit
        self.max_forks = max_forks
        self.current = None
        self.retired = []  # zygotes asked to end, still reporting their children
        self.started = 0   # zygotes started
        self._not_before = 0.0  # no new zygote before this (monotonic): one never got ready
        self._warned = False

    def start(self):
        """Start a zygote (in the background: it is ready in a fraction of a second)."""
        self.current = _Zygote(self.command, self.env, self.stderr_path, self.on_exit)
        self.started += 1

    def spawn(self, argv, env, cwd, stderr_path, title):
        """A WarmProcess, or None (see _Zygote.spawn); WarmStartUnavailable with why
        this run starts fresh instead."""
        reason = self._unsuitable(env)
        if reason:
            raise WarmStartUnavailable(reason, for_the_run=True)
        zygote = self._ready_zygote()
        process = zygote.spawn(argv, env, cwd, stderr_path, title)
        if zygote.forks >= self.max_forks:
            self._retire()
        return process

    def _unsuitable(self, env):
        changed = sorted(k for k in set(env) | set(self.env)
                         if k.startswith(_STARTUP_PREFIXES) and env.get(k) != self.env.get(k))
        if changed:
            return (f"its environment sets {', '.join(changed)}, which changes how Python "
                    "starts, differently from the agent's")
        return None

    def _ready_zygote(self):
        zygote = self.current
        if zygote is not None and zygote.gone:
            self.retired.append(zygote)
            self.current = None
            # One that never got ready may fail so again: wait before the next.
            young = not zygote.said_ready
            logger.warning("The warm-start process (pid %s) ended%s; runs start in fresh "
                           "interpreters until another is ready%s", zygote.process.pid,
                           " before it was ready" if young else "",
                           f" (in {RESTART_BACKOFF:g} s; its errors are in {self.stderr_path})"
                           if young else "")
            if young:
                self._not_before = time.monotonic() + RESTART_BACKOFF
        if self.current is None:
            if time.monotonic() >= self._not_before:
                self.start()
            raise WarmStartUnavailable("the warm-start process is starting")
        if not zygote.ready.is_set():
            raise WarmStartUnavailable("the warm-start process is starting")
        if zygote.problem:
            if not self._warned:
                logger.warning("Warm starts are off: %s; every run starts in a fresh "
                               "interpreter", zygote.problem)
                self._warned = True
            raise WarmStartUnavailable(zygote.problem)
        return zygote

    def _retire(self):
        self.current.close()
        self.retired.append(self.current)
        self.start()

    def reap_retired(self):
        """Forget the retired zygotes that have ended (polling waits for them)."""
        self.retired = [z for z in self.retired if z.process.poll() is None]

    def close(self, wait=5.0):
        """End every zygote: each ends once its children have (or after `wait`)."""
        zygotes = [z for z in (self.current, *self.retired) if z is not None]
        for zygote in zygotes:
            zygote.close()
        deadline = time.monotonic() + wait
        for zygote in zygotes:
            try:
                zygote.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                zygote.kill()
                zygote.process.wait()
        self.current, self.retired = None, []
