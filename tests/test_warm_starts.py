"""Warm starts: run processes forked from the agent's warm-start process (its
zygote) behave as fresh `orchestrator execute` processes, and nothing is lost
or doubled when the zygote goes."""

import os
import signal
import time

import pytest

from orchestrator import service
from orchestrator.daemons.agent import Agent
from orchestrator.daemons.reaper import process_alive

FLOWS = '''
import importlib, json, logging, os, subprocess, sys, time
from orchestrator import Flow, Parameter, task, context
from orchestrator.run_configs import LocalRun
from orchestrator.storage import Script

WORKDIR = os.environ["ORCH_TEST_WORKDIR"]

@task
def who(out):
    cmdline = open("/proc/self/cmdline", "rb").read().split(b"\\0")
    with open(out, "a") as fh:
        fh.write(json.dumps({"run": context.flow_run_id, "pid": os.getpid(),
                             "cmdline": [c.decode() for c in cmdline if c],
                             "leak": os.environ.get("ORCH_TEST_LEAK"),
                             "imported": "orch_test_helper" in sys.modules}) + "\\n")

@task
def helper_value(out):
    import orch_test_helper
    with open(out, "a") as fh:
        fh.write(orch_test_helper.VALUE + "\\n")

@task
def sleeper(out):
    child = subprocess.Popen(["sleep", "300"])
    with open(out, "w") as fh:
        fh.write(str(child.pid))
    time.sleep(300)

@task
def facts(out):
    import random, signal
    named = lambda handler: getattr(handler, "__qualname__", str(handler))
    with open(out, "a") as fh:
        fh.write(json.dumps({
            "argv0": os.path.basename(sys.argv[0]), "argv": sys.argv[1:2],
            "path0": sys.path[0], "cwd": os.getcwd(),
            "leads_group": os.getpgrp() == os.getpid(), "session": os.getsid(0) == os.getpid(),
            "sigpipe": named(signal.getsignal(signal.SIGPIPE)),
            "sigint": named(signal.getsignal(signal.SIGINT)),
            "sigterm": named(signal.getsignal(signal.SIGTERM)),
            "sigchld": named(signal.getsignal(signal.SIGCHLD)),
            "stdin": os.readlink("/proc/self/fd/0"), "stdout": os.readlink("/proc/self/fd/1"),
            "random": random.random(), "run": context.flow_run_id,
            "process_id_env": "ORCHESTRATOR_RUN_PROCESS_ID" in os.environ,
            "files": sorted(_open_files()), "threads": sorted(_thread_names()),
            "log_handlers": [type(h).__name__
                             for h in logging.getLogger("orchestrator").handlers]}) + "\\n")

def _open_files():
    """What this process has open, but pipes and sockets (their inode numbers
    differ) and the run's own database, stderr and result files."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (the listing's own)
            continue
        own = os.path.join(os.environ["ORCHESTRATOR_HOME"], "")
        if not target.startswith(("pipe:", "socket:", "anon_inode:")) \\
                and not (target.startswith(own) and ("orchestrator.db" in target
                                                     or "/results/" in target
                                                     or "/logs/run-" in target)):
            found.add(target)
    return found

def _thread_names():
    import threading
    return {t.name.split("-")[0] + "-" + t.name.split("-")[1] if "-" in t.name else t.name
            for t in threading.enumerate()}

with Flow("facts", storage=Script(__file__), run_config=LocalRun(working_dir=WORKDIR)) \
        as facts_flow:
    facts(Parameter("out"))

with Flow("who", storage=Script(__file__)) as who_flow:
    who(Parameter("out"))

with Flow("leaky", storage=Script(__file__),
          run_config=LocalRun(env={"ORCH_TEST_LEAK": "secret-of-one-run"})) as leaky_flow:
    who(Parameter("out"))

with Flow("helper", storage=Script(__file__), run_config=LocalRun(working_dir=WORKDIR)) \\
        as helper_flow:
    helper_value(Parameter("out"))

with Flow("sleeper", storage=Script(__file__)) as sleeper_flow:
    sleeper(Parameter("out"))

with Flow("pythonpath", storage=Script(__file__),
          run_config=LocalRun(env={"PYTHONPATH": WORKDIR})) as pythonpath_flow:
    who(Parameter("out"))

@task
def chatty():
    from orchestrator import get_logger
    get_logger().debug("a line at DEBUG")
    get_logger().info("a line at INFO")

with Flow("debug-logs", storage=Script(__file__),
          run_config=LocalRun(env={"ORCHESTRATOR__LOGGING__LEVEL": "DEBUG"})) as debug_flow:
    chatty()

with Flow("info-logs", storage=Script(__file__)) as info_flow:
    chatty()

@task
def env_size(out):
    with open(out, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "size": len(os.environ["ORCH_TEST_BIG"]),
                             "run": context.flow_run_id}) + "\\n")

with Flow("big-env", storage=Script(__file__),
          run_config=LocalRun(env={"ORCH_TEST_BIG": "x" * 200_000})) as big_env_flow:
    env_size(Parameter("out"))
'''

FINAL = ("Success", "Failed", "Cancelled")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    path = tmp_path / "workdir"
    path.mkdir()
    monkeypatch.setenv("ORCH_TEST_WORKDIR", str(path))
    return path


@pytest.fixture
def warm_store(registered_store, workdir):
    return registered_store(FLOWS, "warm_flows.py")


@pytest.fixture
def agent(warm_store):
    made = []

    def make(**options):
        options.setdefault("poll_interval", 0.05)
        options.setdefault("warm_starts", True)
        one = Agent(warm_store, **options)
        made.append(one)
        return one

    yield make
    for one in made:
        for child in one.children.values():
            os.killpg(child.process.pid, signal.SIGKILL) if process_alive(
                child.process.pid) else None
        one.stop(grace=5)


def ready(agent, timeout=30):
    """Tick the agent until its warm-start process is ready."""
    deadline = time.monotonic() + timeout
    agent.run_once()
    while not agent.warm.current.ready.wait(0.05):
        assert time.monotonic() < deadline, "the warm-start process never became ready"
    return agent


def finish(agent, store, run_ids, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agent.run_once()
        states = [store.get_flow_run(r)["state"] for r in run_ids]
        if all(s in FINAL for s in states) and not agent.children:
            return states
        time.sleep(0.02)
    raise AssertionError(f"runs did not finish: {states}")


def records(path):
    import json

    found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [dict(record, run=int(record["run"])) for record in found]


def make_run(store, flow, **params):
    return service.create_flow_run(store, flow, parameters=params)["id"]


def test_a_warm_run_process_is_forked_and_looks_like_execute(agent, warm_store, tmp_path):
    worker = ready(agent(limit=2))
    out = tmp_path / "who.jsonl"
    runs = [make_run(warm_store, "who", out=str(out)) for _ in range(3)]

    assert finish(worker, warm_store, runs) == ["Success"] * 3

    seen = records(out)
    assert sorted(r["run"] for r in seen) == sorted(runs)
    zygote = worker.warm.current.process.pid
    for record in seen:
        # A child of the warm-start process, shown as `orchestrator execute RUN`.
        at = record["cmdline"].index("execute")
        assert record["cmdline"][at + 1] == str(record["run"]), record
        assert "zygote" not in record["cmdline"]
    assert worker.warm.current.forks == 3 and zygote != os.getpid()


def test_a_warm_run_process_is_set_up_as_a_fresh_one(agent, warm_store, tmp_path):
    warm, fresh = ready(agent(limit=1)), agent(limit=1, warm_starts=False)
    out = tmp_path / "facts.jsonl"
    runs = []
    for worker in (warm, warm, fresh):
        runs.append(make_run(warm_store, "facts", out=str(out)))
        assert finish(worker, warm_store, runs[-1:]) == ["Success"]

    first, second, cold = records(out)
    assert warm.warm.current.forks == 2 and fresh.warm is None
    varying = ("random", "run")
    assert {k: v for k, v in first.items() if k not in varying} \
        == {k: v for k, v in cold.items() if k not in varying}
    assert first["argv"] == ["execute"] and first["leads_group"] and first["session"]
    assert first["stdin"] == first["stdout"] == "/dev/null"
    assert len({first["random"], second["random"], cold["random"]}) == 3  # reseeded


def test_a_run_whose_environment_changes_how_python_starts_starts_fresh_and_says_so(
        agent, warm_store, tmp_path):
    worker = ready(agent())
    out = tmp_path / "who.jsonl"
    run = make_run(warm_store, "pythonpath", out=str(out))

    assert finish(worker, warm_store, [run]) == ["Success"]

    assert worker.warm.current.forks == 0
    said = [row["message"] for row in warm_store.logs(run)]
    assert any("Started in a fresh interpreter, not a warm one: its environment sets "
               "PYTHONPATH" in m for m in said), said
    assert "execute" in records(out)[0]["cmdline"]


def test_one_runs_environment_and_imports_never_reach_the_next(agent, warm_store, tmp_path):
    worker = ready(agent(limit=1))
    out = tmp_path / "who.jsonl"
    first = make_run(warm_store, "leaky", out=str(out))
    assert finish(worker, warm_store, [first]) == ["Success"]
    second = make_run(warm_store, "who", out=str(out))
    assert finish(worker, warm_store, [second]) == ["Success"]

    leaky, clean = records(out)
    assert leaky["leak"] == "secret-of-one-run" and clean["leak"] is None
    assert worker.warm.current.forks == 2


def test_a_module_changed_on_disk_is_imported_anew_by_the_next_run(agent, warm_store, workdir,
                                                                   tmp_path):
    worker = ready(agent(limit=1))
    helper = workdir / "orch_test_helper.py"
    out = tmp_path / "values.txt"
    helper.write_text("VALUE = 'first'\n")
    first = make_run(warm_store, "helper", out=str(out))
    assert finish(worker, warm_store, [first]) == ["Success"]
    helper.write_text("VALUE = 'second, changed on disk'\n")
    second = make_run(warm_store, "helper", out=str(out))
    assert finish(worker, warm_store, [second]) == ["Success"]

    assert out.read_text().splitlines() == ["first", "second, changed on disk"]
    assert worker.warm.current.forks == 2  # both runs were forked warm


def test_cancel_stops_a_warm_run_and_the_processes_it_started(agent, warm_store, tmp_path):
    worker = ready(agent(cancel_grace=2.0))
    out = tmp_path / "grandchild.pid"
    run = make_run(warm_store, "sleeper", out=str(out))
    deadline = time.monotonic() + 30
    while not out.exists() or not out.read_text():
        worker.run_once()
        assert time.monotonic() < deadline, "the run never started its own child"
        time.sleep(0.05)
    grandchild = int(out.read_text())
    assert process_alive(grandchild) and worker.warm.current.forks == 1

    service.cancel_flow_run(warm_store, run)

    assert finish(worker, warm_store, [run], timeout=30) == ["Cancelled"]
    deadline = time.monotonic() + 10
    while process_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(grandchild)


def test_a_warm_start_process_killed_mid_burst_loses_no_run_and_doubles_none(
        agent, warm_store, tmp_path):
    worker = ready(agent(limit=4))
    out = tmp_path / "who.jsonl"
    runs = [make_run(warm_store, "who", out=str(out)) for _ in range(40)]
    first = worker.warm.current.process
    deadline = time.monotonic() + 30
    while worker.warm.current.forks < 6:
        worker.run_once()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    first.kill()  # SIGKILL, mid-burst

    states = finish(worker, warm_store, runs, timeout=120)

    assert states == ["Success"] * 40
    per_run = {}
    for record in records(out):
        per_run[record["run"]] = per_run.get(record["run"], 0) + 1
    assert per_run == {run: 1 for run in runs}  # each task body ran exactly once
    assert worker.warm.started >= 2  # another warm-start process took over


def test_the_warm_childs_short_way_into_execute_ends_as_the_command_line_does(
        warm_store, capsys):
    from orchestrator.cli.commands import _run_command, main

    def ended(call, argv):
        with pytest.raises(SystemExit) as exit_:
            call(argv)
        return exit_.value.code, capsys.readouterr().err.strip().splitlines()[-1]

    short = lambda argv: _run_command(argv)  # noqa: E731
    long = lambda argv: main(args=argv, prog_name="orchestrator")  # noqa: E731
    runs = [make_run(warm_store, "who", out="/dev/null") for _ in range(2)]
    argvs = []
    for run in runs:
        attempt = warm_store.claim_run(run, "an agent")
        argvs.append(["execute", str(run), "--agent", "an agent", "--attempt", str(attempt)])
    # A run executed, then executed again once it is over: the same ends both ways.
    assert ended(short, argvs[0])[0] == ended(long, argvs[1])[0] == 0
    again_short, again_long = ended(short, argvs[0]), ended(long, argvs[0])
    assert again_short == again_long
    assert again_short[0] == 2 and again_short[1].startswith("Error: Flow run"), again_short


def test_a_warm_start_process_that_dies_before_it_is_ready_is_not_started_again_at_once(
        tmp_path, caplog):
    import sys

    from orchestrator.daemons.zygote import WarmStarter, WarmStartUnavailable

    starter = WarmStarter([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ),
                          tmp_path / "zygote.stderr", on_exit=lambda: None)
    starter.start()
    deadline = time.monotonic() + 30
    while not starter.current.gone:
        assert time.monotonic() < deadline, "the failing warm-start process never ended"
        time.sleep(0.01)
    for _ in range(3):  # each run starts fresh; no new process is tried for a while
        with pytest.raises(WarmStartUnavailable, match="is starting"):
            starter.spawn(["execute", "1"], dict(os.environ), None, tmp_path / "run.stderr",
                          ["execute", "1"])
    assert starter.started == 1
    assert "ended before it was ready" in caplog.text and "zygote.stderr" in caplog.text
    starter.close()


def test_a_warm_start_process_unfit_to_fork_runs_is_refused_saying_why():
    from orchestrator.daemons.zygote import _problem

    assert _problem({"ready": 1, "titles": True, "threads": 1}) is None
    assert "command line" in _problem({"ready": 1, "titles": False, "threads": 1})
    assert "2 threads" in _problem({"ready": 1, "titles": True, "threads": 2})


def zygote_children(zygote_pid):
    """{pid: command line} of the warm-start process's children."""
    from pathlib import Path

    found = {}
    for task in Path(f"/proc/{zygote_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            found[int(pid)] = [c.decode() for c in cmdline if c]
    return found


def spare_of(worker, timeout=30):
    """The pid of the warm-start process's spare (its title ends `zygote spare`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.run_once()
        spares = [pid for pid, cmdline in zygote_children(worker.warm.current.process.pid).items()
                  if cmdline[-2:] == ["zygote", "spare"]]
        if spares:
            return spares[0]
        time.sleep(0.01)
    raise AssertionError("the warm-start process has no spare")


def test_a_run_is_given_the_spare_forked_ahead_and_a_new_spare_follows(
        agent, warm_store, tmp_path):
    worker = ready(agent(limit=1))
    out = tmp_path / "who.jsonl"
    spares = []
    for _ in range(2):
        spares.append(spare_of(worker))
        assert finish(worker, warm_store, [make_run(warm_store, "who", out=str(out))]) == [
            "Success"]

    # Each run ran in the process that was waiting as the spare when it came.
    assert [r["pid"] for r in records(out)] == spares
    assert spares[0] != spares[1]
    assert spare_of(worker) not in spares


def test_a_spare_that_died_waiting_costs_no_run(agent, warm_store, tmp_path):
    worker = ready(agent(limit=1))
    spare = spare_of(worker)
    os.kill(spare, signal.SIGKILL)
    zygote = worker.warm.current.process.pid
    deadline = time.monotonic() + 10
    while spare in zygote_children(zygote):  # until the warm-start process has seen it end
        assert time.monotonic() < deadline, "the dead spare was never collected"
        time.sleep(0.01)
    out = tmp_path / "who.jsonl"
    run = make_run(warm_store, "who", out=str(out))

    assert finish(worker, warm_store, [run]) == ["Success"]
    assert records(out)[0]["pid"] != spare
    assert worker.warm.current.forks == 1


def test_the_spare_ends_with_its_warm_start_process(agent, warm_store):
    worker = ready(agent(limit=1))
    spare = spare_of(worker)
    zygote = worker.warm.current.process

    worker.stop(grace=10)

    assert zygote.poll() is not None
    deadline = time.monotonic() + 10
    while process_alive(spare):
        assert time.monotonic() < deadline, "the spare outlived its warm-start process"
        time.sleep(0.02)


def test_a_run_whose_environment_outgrows_a_pipe_runs_warm_with_all_of_it(
        agent, warm_store, tmp_path):
    worker = ready(agent(limit=1))
    spare_of(worker)
    out = tmp_path / "sizes.jsonl"
    runs = [make_run(warm_store, "big-env", out=str(out)) for _ in range(3)]

    assert finish(worker, warm_store, runs) == ["Success"] * 3
    assert [r["size"] for r in records(out)] == [200_000] * 3
    assert worker.warm.current.forks == 3  # warm each time (a spare, or a fork)


def test_what_a_run_process_imports_takes_no_file_lock_library():
    # filelock costs a process 27 ms to import and every fork a hook of its own;
    # a run reads its flow without the lock, so neither the warm-start process
    # nor a run's way into `execute` imports it.
    import subprocess
    import sys

    code = ("import importlib, sys\n"
            "from orchestrator.daemons import zygote\n"
            "import orchestrator.cli.commands\n"
            "for name in zygote.PRELOAD: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'filelock'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_run_whose_logging_settings_differ_from_the_warm_start_processs_logs_by_its_own(
        agent, warm_store):
    # The warm-start process sets logging up (as its rehearsal runs) with its
    # settings; a run that sets others in its environment logs by those, and the
    # next run by the warm-start process's again.
    worker = ready(agent(limit=1))
    runs = []
    for flow in ("debug-logs", "info-logs"):
        runs.append(make_run(warm_store, flow))
        assert finish(worker, warm_store, runs[-1:]) == ["Success"]
    debug, info = ([row["message"] for row in service.logs(warm_store, run)] for run in runs)
    assert "a line at DEBUG" in debug and "a line at INFO" in debug
    assert "a line at DEBUG" not in info and "a line at INFO" in info
    assert worker.warm.current.forks == 2


def test_a_rehearsal_that_fails_is_said_and_the_warm_start_process_goes_on(
        monkeypatch, capsys):
    # (No input makes a real rehearsal fail while runs still work: it is made to.)
    from orchestrator.daemons import zygote
    from orchestrator.service import rehearsal

    def fails(times=2):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rehearsal, "rehearse", fails)
    zygote._rehearse()  # returns
    said = capsys.readouterr().err
    assert "orchestrator zygote: the rehearsal failed, so runs start less warm: " \
           "OSError: [Errno 28] No space left on device" in said


def test_a_rehearsal_leaves_nothing_behind(tmp_path):
    # Run in a process of its own, as the warm-start process runs it: no file,
    # thread or connection of it is left, and the process's own store is the
    # one its models use again.
    import subprocess
    import sys

    code = ("import glob, json, os, threading\n"
            "from orchestrator import service\n"
            "from orchestrator.service.rehearsal import rehearse\n"
            "from orchestrator.store import models\n"
            "store = service.open_store()\n"
            "before = set(os.listdir('/proc/self/fd'))\n"
            "rehearse()\n"
            "print(json.dumps({'fds': sorted(set(os.listdir('/proc/self/fd')) - before),\n"
            "    'threads': threading.active_count(),\n"
            "    'scratch': glob.glob(os.path.join(os.environ['TMPDIR'], '*')),\n"
            "    'models_on_own_store': models.database.obj is store.db,\n"
            "    'projects': [p['name'] for p in store.list_projects()]}))\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, ORCHESTRATOR_HOME=str(tmp_path / "home"), TMPDIR=str(scratch))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    import json

    facts = json.loads(out.stdout)
    assert facts == {"fds": [], "threads": 1, "scratch": [], "models_on_own_store": True,
                     "projects": []}, (facts, out.stderr)
    assert out.stderr == ""


def test_a_rehearsal_without_room_says_so_and_leaves_nothing_behind(tmp_path):
    # (Too little room is made to be the case by asking for more than any disk has.)
    import subprocess
    import sys

    code = ("import glob, os, sys\n"
            "from orchestrator.service import rehearsal\n"
            "rehearsal.MIN_FREE_BYTES = 1 << 62\n"
            "stderr = sys.stderr\n"
            "try:\n"
            "    rehearsal.rehearse()\n"
            "except OSError as exc:\n"
            "    print(exc.errno, exc.strerror)\n"
            "print(glob.glob(os.path.join(os.environ['TMPDIR'], '*')), sys.stderr is stderr)\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, ORCHESTRATOR_HOME=str(tmp_path / "home"), TMPDIR=str(scratch))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    said, left = out.stdout.splitlines()
    assert said.startswith("28 less than ") and said.endswith(f"MB free in {scratch}")
    assert left == "[] True"
