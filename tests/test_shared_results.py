"""Checkpoints a resumed run needs, reachable from every host.

A run whose task raises RETRY(start_time=...) goes back to Scheduled and is
resumed later, perhaps on another host; the tasks that had finished are
restored from their checkpoints. `[results] location` (a path or an fsspec URL
that every host reads) puts those checkpoints where any host finds them; a run
resumed where they cannot be read fails, naming the tasks, the location tried
and the setting, rather than run finished tasks (and their side effects) again.

Two "hosts" here are two homes on one database (an SQLite file both open, or
PostgreSQL). Host B runs in its own mount namespace with host A's home hidden
under an empty tmpfs, as another machine would not see it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import ROOT

from orchestrator import Flow, Parameter, service
from orchestrator.service import execution as backend
from orchestrator.config import load_config
from orchestrator.exceptions import ConfigError, ResultError
from orchestrator.results import PackedResult
from orchestrator.store import Store

# The retry is an hour ahead: a retry due within INLINE_RETRY_SECONDS is waited
# for in the run's process, a later one sends the run back to Scheduled.
TASKS = """
    import datetime as dt
    from pathlib import Path

    from orchestrator import Flow, Parameter, signals, task
    from orchestrator.storage import Script


    @task
    def extract(calls):
        with open(calls, "a") as f:
            f.write("ran\\n")
        return 41


    @task
    def wait_for_data(x, marker):
        if not Path(marker).exists():
            Path(marker).touch()
            raise signals.RETRY("data not there yet", start_time=dt.datetime.now(
                dt.timezone.utc) + dt.timedelta(hours=1))
        return x + 1

"""
FLOW_FILE = TASKS + """

    with Flow("sensor", storage=Script(__file__)) as flow:
        wait_for_data(extract(Parameter("calls")), Parameter("marker"))
"""

WAIT_SECONDS = 60  # the longest a step may take before the test gives up


class Hosts:
    """Hosts A and B: two homes on database `url`, both with `location` as their
    `[results] location` (None: the default, each host's own home)."""

    def __init__(self, tmp_path, url, location):
        self.tmp = tmp_path
        self.url = url
        self.location = location
        self.homes = {name: tmp_path / f"host-{name}" for name in "ab"}
        for home in self.homes.values():
            home.mkdir()
            if location is not None:
                (home / "config.toml").write_text(f'[results]\nlocation = "{location}"\n')
        self.flow_file = tmp_path / "sensor_flow.py"
        self.flow_file.write_text(textwrap.dedent(FLOW_FILE))
        self.calls = tmp_path / "extract.calls"
        self.marker = tmp_path / "data.marker"

    def env(self, host):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ORCHESTRATOR") or k == "ORCHESTRATOR_TEST_POSTGRES_URL"}
        env.update(ORCHESTRATOR_HOME=str(self.homes[host]), ORCHESTRATOR_DATABASE_URL=self.url)
        return env

    def command(self, host, *args):
        """`orchestrator *args` on `host`; on B, host A's home cannot be seen."""
        command = [sys.executable, "-m", "orchestrator", *map(str, args)]
        if host == "b":
            hidden = self.homes["a"]
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f'mount -t tmpfs tmpfs "{hidden}" && exec "$@"', "sh", *command]
        return command

    def run(self, host, *args):
        return subprocess.run(self.command(host, *args), env=self.env(host), cwd=ROOT,
                              capture_output=True, text=True, timeout=WAIT_SECONDS,
                              check=False)

    def check(self, host, *args):
        done = self.run(host, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def start_run(self):
        """Registers the flow from host A and creates a run: its id."""
        self.check("a", "project", "create", "etl")
        self.check("a", "register", "-p", "etl", self.flow_file)
        out = self.check("a", "run", "etl/sensor", "--param", f"calls={self.calls}",
                         "--param", f"marker={self.marker}", "--json")
        return json.loads(out)["id"]

    def first_attempt_on_a(self, store, run_id):
        """Host A's agent runs `run_id` until its retry sends it back to Scheduled;
        then the agent stops."""
        with open(self.tmp / "agent-a.log", "w") as log:
            agent = subprocess.Popen(self.command("a", "agent", "--no-hostname-label",
                                                  "--poll-interval", "0.1"),
                                     env=self.env("a"), cwd=ROOT, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline:
                run = store.get_flow_run(run_id)
                if run["state"] == "Scheduled" and run["attempt"] >= 1:
                    break
                assert run["state"] not in ("Failed", "Success"), run
                time.sleep(0.1)
            else:
                raise AssertionError(f"host A never finished its first attempt: {run}\n"
                                     f"{(self.tmp / 'agent-a.log').read_text()}")
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(WAIT_SECONDS)
        assert self.calls.read_text().count("ran") == 1
        assert "retry" in store.get_flow_run(run_id)["message"].lower()


def unshare_or_skip():
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to hide host A's home from host B "
                    "(a mount namespace)")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount does not work here: {probe.stderr.decode().strip()}")


def resume_on_b(tmp_path, url, location):
    """Run the sensor flow's first attempt on host A, resume it on host B:
    (the run after, its log lines, host B's `execute`, the hosts)."""
    unshare_or_skip()
    hosts = Hosts(tmp_path, url, location)
    run_id = hosts.start_run()
    store = Store.open(url=url)
    try:
        hosts.first_attempt_on_a(store, run_id)
        done = hosts.run("b", "execute", run_id)
        run = store.get_flow_run(run_id)
        logs = [row["message"] for row in store.logs(run_id)]
    finally:
        store.close()
    return run, logs, done, hosts


# -- resumed on another host ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["path", "file-url"])
def test_a_run_resumed_on_another_host_restores_finished_tasks_from_the_shared_location(
        tmp_path, kind):
    shared = tmp_path / "shared-results"
    location = str(shared) if kind == "path" else f"file://{shared}"
    url = f"sqlite:///{tmp_path / 'shared.db'}"

    run, logs, done, hosts = resume_on_b(tmp_path, url, location)

    assert done.returncode == 0, (done.stdout, done.stderr, logs)
    assert run["state"] == "Success", (run["message"], logs)
    assert hosts.calls.read_text().count("ran") == 1  # restored on B, not run again
    assert not list(hosts.homes["a"].glob("results/*")), "results went to host A's home"
    assert list(shared.glob("*.results"))


def test_a_run_resumed_on_another_host_on_postgresql_restores_from_the_shared_location(
        tmp_path, postgres_url):
    shared = tmp_path / "shared-results"

    run, logs, _, hosts = resume_on_b(tmp_path, postgres_url, str(shared))

    assert run["state"] == "Success", (run["message"], logs)
    assert hosts.calls.read_text().count("ran") == 1


def test_a_run_resumed_where_its_checkpoints_cannot_be_read_fails_and_says_why(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"

    run, logs, done, hosts = resume_on_b(tmp_path, url, None)

    assert hosts.calls.read_text().count("ran") == 1  # not run a second time
    assert run["state"] == "Failed", (run["message"], logs)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    [line] = [m for m in logs if "cannot be read" in m]
    for words in ("'extract'", str(hosts.homes["a"] / "results"),
                  "[results] location", "ORCHESTRATOR__RESULTS__LOCATION",
                  "every host"):
        assert words in line, (words, line)
    assert "cannot be read" in run["message"]


# -- in this process: an fsspec location (memory://) -----------------------------------
# The hosts' tasks, defined here too (from the same source) for runs in this process.
_TASKS = {}
exec(compile(textwrap.dedent(TASKS), __file__, "exec"), _TASKS)
extract, wait_for_data = _TASKS["extract"], _TASKS["wait_for_data"]


def test_a_memory_url_location_keeps_checkpoints_a_resumed_run_restores(
        store, tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR__RESULTS__LOCATION", "memory://orchestrator-test/r")
    with Flow("sensor") as flow:
        wait_for_data(extract(Parameter("calls")), Parameter("marker"))
    calls = tmp_path / "calls"
    service.register_flow(store, flow, "etl")
    run = service.create_flow_run(store, "sensor", parameters={
        "calls": str(calls), "marker": str(tmp_path / "marker")})

    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Scheduled"
    extracted = next(t for t in store.task_runs(run["id"]) if t["task_slug"] == "extract-1")
    assert extracted["result_location"].startswith("memory://orchestrator-test/r/")
    PackedResult.forget_buffers()  # as a new process would: only the store has them
    assert PackedResult("memory://elsewhere").read(extracted["result_location"]) == 41
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success"

    assert calls.read_text().count("ran") == 1


def test_a_sensor_whose_only_finished_task_is_a_parameter_resumes_on_another_host(
        store, tmp_path, monkeypatch):
    # A Parameter's value is the run's own: its missing checkpoint is no reason to fail.
    monkeypatch.setenv("ORCHESTRATOR__RESULTS__LOCATION", str(tmp_path / "host-a"))
    with Flow("sensor") as flow:
        wait_for_data(Parameter("x"), Parameter("marker"))
    service.register_flow(store, flow, "etl")
    run = service.create_flow_run(store, "sensor",
                                  parameters={"x": 1, "marker": str(tmp_path / "marker")})
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Scheduled"

    PackedResult.forget_buffers()  # host B: a process of its own, another location,
    shutil.rmtree(tmp_path / "host-a")  # and host A's files are not there
    monkeypatch.setenv("ORCHESTRATOR__RESULTS__LOCATION", str(tmp_path / "host-b"))
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success", \
        store.get_flow_run(run["id"])["message"]


def test_results_that_cannot_be_written_point_nowhere_and_a_resumed_run_runs_them_again(
        store, tmp_path, monkeypatch):
    # An object store that is down when the run's results are flushed (it cannot
    # be taken down here for real: its writes fail instead).
    from orchestrator.core import results as core_results

    monkeypatch.setenv("ORCHESTRATOR__RESULTS__LOCATION", f"file://{tmp_path / 'store'}")

    def down(url, name, data):
        raise core_results.ResultError(f"Cannot write result {url}/{name}: the store is down")

    working = core_results._put
    monkeypatch.setattr(core_results, "_put", down)
    with Flow("sensor") as flow:
        wait_for_data(extract(Parameter("calls")), Parameter("marker"))
    calls = tmp_path / "calls"
    service.register_flow(store, flow, "etl")
    run = service.create_flow_run(store, "sensor", parameters={
        "calls": str(calls), "marker": str(tmp_path / "marker")})

    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Scheduled"
    extracted = next(t for t in store.task_runs(run["id"]) if t["task_slug"] == "extract-1")
    assert extracted["state"] == "Success" and extracted["result_location"] is None
    said = [row["message"] for row in store.logs(run["id"])]
    assert any("could not be written" in m and "'extract'" in m and "run again" in m
               for m in said), said

    monkeypatch.setattr(core_results, "_put", working)  # the store is back
    PackedResult.forget_buffers()  # (and this process stands for a new one)
    assert backend.execute_flow_run(store, run["id"], service.load_flow) == "Success", \
        store.get_flow_run(run["id"])["message"]
    assert calls.read_text().count("ran") == 2  # said before: it ran again


def test_packed_results_at_a_url_are_read_back_before_and_after_they_are_flushed():
    result = PackedResult("memory://orchestrator-test/flush")
    first = result.write({"a": 1}, flow_run_id="7")
    second = result.write([2], flow_run_id="7")

    assert result.read(first) == {"a": 1}  # from this process's buffer
    PackedResult.flush_all()
    PackedResult.forget_buffers()
    assert (result.read(first), result.read(second)) == ({"a": 1}, [2])
    third = result.write("three", flow_run_id="7")
    assert third.split("#")[0] != first.split("#")[0]  # a new part: objects never change
    PackedResult.flush_all()
    PackedResult.forget_buffers()
    assert result.read(third) == "three"
    with pytest.raises(ResultError, match="cannot be read|Cannot read"):
        result.read("memory://orchestrator-test/flush/missing.results#0+4")


# -- settings ------------------------------------------------------------------------
def test_the_results_location_defaults_to_the_homes_results_folder(home):
    config = load_config(environ={})

    assert config["results"]["location"] == str(home / "results")
    assert config.source("results", "location") == "default"


def test_the_results_location_comes_from_the_environment_or_the_config_file(home):
    (home / "config.toml").write_text('[results]\nlocation = "~/shared/results/"\n')
    assert load_config(environ={})["results"]["location"] == os.path.expanduser(
        "~/shared/results")

    config = load_config(environ={"ORCHESTRATOR__RESULTS__LOCATION": "s3://bucket/prefix/"})
    assert config["results"]["location"] == "s3://bucket/prefix"
    assert config.source("results", "location") == "ORCHESTRATOR__RESULTS__LOCATION"


@pytest.mark.parametrize("value, words", [
    ("results", "relative path"),
    ("", "is empty"),
    ("3", "must be a string"),
    ("'s3://'", "names no bucket"),
])
def test_a_bad_results_location_is_refused_naming_the_value_and_the_fix(home, value, words):
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"ORCHESTRATOR__RESULTS__LOCATION": value})

    message = str(caught.value)
    assert words in message
    assert "results.location" in message and "ORCHESTRATOR__RESULTS__LOCATION" in message


def test_a_location_whose_filesystem_package_is_missing_names_the_extra():
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    with pytest.raises(ResultError) as caught:
        PackedResult("s3://bucket/prefix").write(1, flow_run_id="1")
    assert "s3fs" in str(caught.value) and "[s3]" in str(caught.value)


def test_a_url_location_without_fsspec_names_the_extra_to_install(tmp_path):
    # fsspec hidden from this interpreter, as on a host without the extra.
    code = textwrap.dedent("""
        import sys
        sys.modules["fsspec"] = None
        from orchestrator.results import PackedResult
        from orchestrator.exceptions import ResultError
        try:
            PackedResult("gcs://bucket/prefix").write(1, flow_run_id="1")
        except ResultError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=WAIT_SECONDS, check=False)

    assert "Traceback" not in done.stderr, done.stderr
    assert "fsspec" in done.stdout and "[gcs]" in done.stdout, done.stdout
