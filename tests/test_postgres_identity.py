"""Identity across hosts on one PostgreSQL: agents and run processes are known
by a unique id and the identity of their host (kernel boot and PID
namespace), never by a host name or an agent name.

Each "host" is a process tree in its own UTS and PID namespace
(`unshare --uts --pid --fork --mount-proc`) with its own ORCHESTRATOR_HOME,
and every host has the SAME host name, as cloned VMs and containers do.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, service_env

HOSTNAME = "clone"  # every simulated host has this name
TIMEOUT = 6  # services.heartbeat_timeout on every host: a lease expires quickly

FLOWS = """
import time
from orchestrator import Flow, Parameter, task
from orchestrator.storage import Local

@task
def nap(seconds):
    time.sleep(seconds)
    return seconds

with Flow("nap", storage=Local(path={path!r}, stored_as_script=True,
                               add_default_labels=False)) as flow:
    nap(Parameter("seconds", default=5))
"""


def _can_unshare():
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--uts", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare --uts --pid cannot run here ({probe.stderr.strip()}); run as root"
    return None


pytestmark = pytest.mark.skipif(_can_unshare() is not None,
                                reason=f"Simulated hosts need namespaces: {_can_unshare()}")


class Host:
    """One simulated host: its own home (config with a short heartbeat timeout),
    host name HOSTNAME and its own PID namespace, in which `boot()` starts
    orchestrator commands side by side."""

    def __init__(self, name, tmp_path, url):
        self.name = name
        self.home = tmp_path / f"home-{name}"
        self.home.mkdir()
        (self.home / "config.toml").write_text(
            f"[services]\nheartbeat_interval = 1\nheartbeat_timeout = {TIMEOUT}\n")
        self.env = dict(service_env(self.home), ORCHESTRATOR_DATABASE_URL=url)
        self.logs = tmp_path / f"logs-{name}"
        self.logs.mkdir()
        self.commands = []
        self.proc = None  # unshare; its child is the namespace's first process

    def boot(self, *commands):
        """Start the host: each command (a list of `orchestrator` arguments) runs
        in the background of one shell, the first process of the namespace."""
        lines = [f"hostname {HOSTNAME}"]
        for n, args in enumerate(commands):
            argv = " ".join([sys.executable, "-m", "orchestrator", *map(str, args)])
            lines.append(f"{{ {argv}; echo exited $?; }} >{self.logs / f'{n}.out'} "
                         f"2>{self.logs / f'{n}.err'} &")
            (self.logs / f"{n}.out").touch()
            (self.logs / f"{n}.err").touch()
        lines.append("wait")
        self.commands = [list(map(str, args)) for args in commands]
        self.proc = subprocess.Popen(
            ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "sh", "-c",
             "\n".join(lines)],
            env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL)
        return self

    def output(self, n):
        return (self.logs / f"{n}.out").read_text() + (self.logs / f"{n}.err").read_text()

    def wait_for(self, n, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output(n):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"host {self.name}: no {text!r} from {self.commands[n]}:\n"
                             f"{self.output(n)}")

    def pid_of(self, n):
        """The pid (as this test sees it) of the process of command `n`."""
        wanted = ["-m", "orchestrator", *self.commands[n]]
        for pid, cmdline in _processes():
            if cmdline[1:] == wanted:
                return pid
        raise AssertionError(f"host {self.name}: {self.commands[n]} is not running")

    def power_off(self):
        """SIGKILL the namespace's first process, which takes every process of
        the namespace with it (run processes too)."""
        if self.proc is None:
            return
        for child in _children(self.proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _children(pid):
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _processes():
    """(pid, command line as a list of str) of every process this test sees."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            yield int(entry.name), raw.decode(errors="replace").split("\0")[:-1]


def run_pids(run_id):
    """Pids (as this test sees them) of `orchestrator execute RUN_ID` processes."""
    return [pid for pid, cmdline in _processes() if "execute" in cmdline
            and cmdline.index("execute") + 1 < len(cmdline)
            and cmdline[cmdline.index("execute") + 1] == str(run_id)]


@pytest.fixture
def hosts(tmp_path, postgres_url):
    made = []

    def make(name):
        host = Host(name, tmp_path, postgres_url)
        made.append(host)
        return host

    yield make
    for host in made:
        host.power_off()


@pytest.fixture
def pg_store(postgres_url, tmp_path):
    """The test's own view of the database, with flow "nap" registered."""
    from orchestrator.store import Store

    store = Store.open(url=postgres_url)
    flows = tmp_path / "nap_flow.py"
    flows.write_text(FLOWS.format(path=str(flows)))
    from helpers import register_flows

    register_flows(store, flows)
    yield store
    store.close()


def create_run(store, label=None, seconds=5):
    """A run of "nap" for the agents with `label` (None: a run without labels)."""
    from orchestrator import service

    return service.create_flow_run(store, "nap", parameters={"seconds": seconds},
                                   labels=[label] if label else [])["id"]


def wait_for_states(store, run_ids, done, timeout=45):
    """Poll until every run is in a state of `done`; returns {id: run}."""
    deadline = time.monotonic() + timeout
    while True:
        runs = {r: store.get_flow_run(r) for r in run_ids}
        if all(run["state"] in done for run in runs.values()) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def summary(runs):
    return {r: (run["state"], run["attempt"], run["restarts"], run["message"])
            for r, run in runs.items()}


TERMINAL = ("Success", "Failed", "Cancelled", "TimedOut", "TriggerFailed")


UP = ["up", "--port", "0", "--no-hostname-label", "--label"]


def test_long_runs_on_two_hosts_with_one_host_name_finish(hosts, pg_store):
    """Two `orchestrator up` on cloned hosts (same host name; in each PID
    namespace the process has the same pid, so even the default agent names
    match): each host's runs stay Running and end Success. (Before, each
    host's reaper took the other's runs for its own and failed them within a
    second: "its process (pid N) is gone".)"""
    a = hosts("a").boot(UP + ["host-a"])
    a.wait_for(0, "API:")
    b = hosts("b").boot(UP + ["host-b"])
    b.wait_for(0, "API:")

    runs = [create_run(pg_store, label) for label in ("host-a", "host-b", "host-a", "host-b")]
    ended = wait_for_states(pg_store, runs, TERMINAL)

    assert {s for s, *_ in summary(ended).values()} == {"Success"}, summary(ended)
    assert all(run["attempt"] == 1 and run["restarts"] == 0 for run in ended.values())
    agents = pg_store.list_agents()
    assert len({agent["name"] for agent in agents}) == 2, agents
    assert len({agent["id"] for agent in agents}) == 2, agents
    assert len({agent["host_id"] for agent in agents}) == 2, agents
    # The default name was taken: the second agent got a unique one, and said so.
    assert "is in use by another running agent" in b.output(0)


def test_a_second_agent_with_a_name_in_use_is_refused_and_no_run_fails(hosts, pg_store):
    a = hosts("a").boot(["agent", "--name", "shared", "--no-hostname-label"])
    a.wait_for(0, "Agent shared started")
    runs = [create_run(pg_store) for _ in range(2)]
    wait_for_states(pg_store, runs, ("Running",) + TERMINAL, timeout=30)

    # Host b: the same name is refused; its reaper looks at host a's runs, too.
    b = hosts("b").boot(["agent", "--name", "shared", "--no-hostname-label"], ["scheduler"])
    b.wait_for(0, "exited")
    refused = b.output(0)
    assert "exited 2" in refused and "Traceback" not in refused, refused
    assert "Agent name 'shared' is in use by a running agent" in refused, refused
    assert "another --name" in refused, refused
    b.wait_for(1, "orchestrator scheduler")

    ended = wait_for_states(pg_store, runs, TERMINAL)
    assert {s for s, *_ in summary(ended).values()} == {"Success"}, summary(ended)
    (agent,) = pg_store.list_agents()
    assert agent["name"] == "shared" and "exited" not in a.output(0)


def test_a_run_whose_host_died_is_failed_by_lease_expiry_from_another_host(hosts, pg_store):
    """Host a powers off with a run on it: host b cannot look at a's processes,
    so it waits for the run's heartbeat to be older than the timeout; then the
    run is failed (its flow allows no restart), and host b's own run is left."""
    a = hosts("a").boot(UP + ["host-a"])
    a.wait_for(0, "API:")
    b = hosts("b").boot(UP + ["host-b"])
    b.wait_for(0, "API:")
    on_a, on_b = create_run(pg_store, "host-a", 60), create_run(pg_store, "host-b", 8)
    wait_for_states(pg_store, [on_a], ("Running",) + TERMINAL, timeout=30)
    assert pg_store.get_flow_run(on_a)["state"] == "Running"

    a.power_off()
    ended = wait_for_states(pg_store, [on_a, on_b], TERMINAL)

    assert ended[on_b]["state"] == "Success", summary(ended)
    assert ended[on_a]["state"] == "Failed", summary(ended)
    assert "the last heartbeat was" in ended[on_a]["message"], summary(ended)


def test_a_run_whose_process_died_on_its_host_is_judged_there(hosts, pg_store):
    """Host a's agent is gone and so is its run's process: a's reaper sees that
    in its own process table (or, if another host's reaper leads, the lease
    expires); host b's run, in a process that may have the same pid number, is
    left alone."""
    a = hosts("a").boot(["scheduler"], ["agent", "--name", "agent-a", "--no-hostname-label",
                                        "--label", "host-a"])
    a.wait_for(1, "Agent agent-a started")
    b = hosts("b").boot(UP + ["host-b"])
    b.wait_for(0, "API:")
    on_a, on_b = create_run(pg_store, "host-a", 60), create_run(pg_store, "host-b", 8)
    wait_for_states(pg_store, [on_a, on_b], ("Running",) + TERMINAL, timeout=30)

    os.kill(a.pid_of(1), signal.SIGKILL)  # the agent goes first: nobody reaps the child
    a.wait_for(1, "exited")
    for pid in run_pids(on_a):
        os.kill(pid, signal.SIGKILL)
    ended = wait_for_states(pg_store, [on_a, on_b], TERMINAL)

    assert ended[on_b]["state"] == "Success", summary(ended)
    assert ended[on_a]["state"] == "Failed", summary(ended)
    message = ended[on_a]["message"]
    assert "is gone" in message or "the last heartbeat was" in message, message


def test_agents_show_their_id_and_host(hosts, pg_store):
    from orchestrator.store.identity import host_identity

    pg_store.register_agent("here", ["x"], "somehost", os.getpid())
    (agent,) = pg_store.list_agents()
    assert agent["host"] == "somehost" and agent["host_id"] == host_identity()
    assert len(agent["id"]) == 36
    listing = subprocess.run([sys.executable, "-m", "orchestrator", "agents", "--json"],
                             env=dict(service_env(pg_store_home()),
                                      ORCHESTRATOR_DATABASE_URL=pg_store.url),
                             capture_output=True, text=True, timeout=60, check=False)
    assert listing.returncode == 0, listing.stderr
    (shown,) = json.loads(listing.stdout)["agents"]
    assert (shown["name"], shown["id"], shown["host"], shown["host_id"]) == (
        "here", agent["id"], "somehost", agent["host_id"])


def pg_store_home():
    return Path(os.environ["ORCHESTRATOR_HOME"])


# -- the rules, one process at a time ----------------------------------------------
OTHER_HOST = "boot:00000000-0000-0000-0000-000000000000;pidns:1"


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_on_another_host_is_judged_by_its_lease_only(pg_store):
    from orchestrator.daemons.reaper import Reaper

    run = create_run(pg_store)
    pg_store.register_agent("there", [], HOSTNAME, dead_pid(), host_id=OTHER_HOST)
    (claimed,) = pg_store.claim_runs("there", [], 1)
    pg_store.start_flow_run(run, dead_pid(), attempt=claimed[1])
    # Its pid is dead here, and its agent too, under the same host name: not ours.
    pg_store.db.execute_sql("UPDATE flow_run SET host_id = %s", (OTHER_HOST,))
    reaper = Reaper(pg_store, heartbeat_timeout=60)

    assert reaper.run_once() == []
    assert reaper.run_once(now=time.time() + 120) == [run]
    assert "the last heartbeat was" in pg_store.get_flow_run(run)["message"]


def test_a_claim_of_an_agent_on_another_host_waits_for_the_claim_timeout(pg_store):
    from orchestrator.daemons.reaper import Reaper

    run = create_run(pg_store)
    pg_store.register_agent("there", [], HOSTNAME, dead_pid(), host_id=OTHER_HOST)
    pg_store.claim_runs("there", [], 1)
    reaper = Reaper(pg_store, heartbeat_timeout=60)

    assert reaper.run_once() == []  # its pid means nothing here
    assert reaper.run_once(now=time.time() + 120) == [run]
    assert "never started" in pg_store.get_flow_run(run)["message"]


def test_an_agent_takes_over_its_name_from_a_predecessor_that_died_on_this_host(pg_store):
    from orchestrator.daemons.agent import Agent

    pg_store.register_agent("etl", [], HOSTNAME, dead_pid())
    run = create_run(pg_store)
    pg_store.claim_runs("etl", [], 1)  # claimed by the dead one, never started
    agent = Agent(pg_store, name="etl", hostname_label=False, heartbeat_timeout=60)
    agent.register()

    (row,) = pg_store.list_agents()
    assert (row["name"], row["id"], row["pid"]) == ("etl", agent.id, os.getpid())
    assert pg_store.get_flow_run(run)["state"] == "Scheduled"  # given back, as before


def test_a_name_held_by_a_live_agent_elsewhere_is_refused_or_made_unique(pg_store, log_records):
    from orchestrator.daemons.agent import Agent, AgentNameInUse, default_agent_name

    for name in ("etl", default_agent_name()):
        pg_store.register_agent(name, [], HOSTNAME, 1, host_id=OTHER_HOST)

    with pytest.raises(AgentNameInUse) as refused:
        # (wait=False: as if its next liveness write had come; `--name` waits for it)
        Agent(pg_store, name="etl", hostname_label=False,
              heartbeat_timeout=60).register(wait=False)
    assert "Agent name 'etl' is in use by a running agent (host clone, pid 1" in str(
        refused.value)
    assert "another --name" in str(refused.value)

    default = Agent(pg_store, hostname_label=False, heartbeat_timeout=60)
    default.register()
    assert default.name == f"{default_agent_name()}-{default.id[:8]}"
    assert any("is in use by another running agent" in m for m in log_records.messages())

    # Silent past the timeout, the holder elsewhere is taken for dead: the name is free.
    pg_store.db.execute_sql("UPDATE agent SET last_seen = %s WHERE name = 'etl'",
                            (time.time() - 120,))
    taker = Agent(pg_store, name="etl", hostname_label=False, heartbeat_timeout=60)
    taker.register()
    assert {a["name"]: a["id"] for a in pg_store.list_agents()}["etl"] == taker.id


def test_an_agent_whose_name_was_taken_over_goes_on_under_a_unique_one(pg_store):
    from orchestrator.daemons.agent import Agent

    agent = Agent(pg_store, name="etl", hostname_label=False, heartbeat_timeout=60)
    agent.run_once()
    # Silent for long (a frozen VM): another agent took the name.
    pg_store.register_agent("etl", [], HOSTNAME, 1, host_id=OTHER_HOST, uid="other")
    assert pg_store.agent_seen("etl", agent.id) is False
    agent._last_seen = 0.0
    agent.run_once()

    assert agent.name == f"etl-{agent.id[:8]}"
    names = {a["name"]: a["id"] for a in pg_store.list_agents()}
    assert names == {"etl": "other", agent.name: agent.id}
