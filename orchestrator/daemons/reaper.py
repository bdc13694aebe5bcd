"""The reaper: notices runs whose process is gone, or never came, and says so.

A run that holds a claim or a process (Submitted, Running, Cancelling) is
judged from what the store says and, for processes on this host, from the
process table. "This host" is the host identity (kernel boot and PID
namespace, see store/identity.py) recorded beside every pid, never a host
name or an agent name: cloned VMs and containers share names, and their pids
mean nothing here. A process elsewhere is judged by its lease alone (its
heartbeat, or for a claim, how long it has waited):

- a claim that never started its run (its agent or its process died first,
  or it has waited longer than the timeout) goes back to Scheduled: the run
  never ran, so no restart is spent;
- a running run whose process is gone, or whose heartbeat is older than the
  timeout (a process that is stopped or hung counts as gone), is put back to
  Scheduled when its flow allows restarts (`max_restarts`), else failed with
  "No heartbeat detected from the remote task; marking the run as failed."
  and why; a run being cancelled ends Cancelled.

Judging and writing are apart (`judge`, then `apply`), and every write is a
compare-and-set on the attempt and the state that were judged: a run that
started, finished or was claimed again between the look and the write is left
as it is. It also runs once when `orchestrator up` starts, so runs left behind
by a crash are dealt with at once.
"""

import logging
import os
import time
from pathlib import Path

from ..core.states import StateName
from ..store import StoreUnavailable
from ..store.identity import host_identity

logger = logging.getLogger(__name__)

NO_HEARTBEAT = "No heartbeat detected from the remote task; marking the run as failed."


def process_alive(pid, run_id=None):
    """Is process `pid` alive (and, where /proc tells, running flow run `run_id`)?

    Checking the command line guards against a recycled pid: after a reboot the
    number of a lost run's process may belong to anything.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if run_id is None:
        return True
    for look in range(2):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return not Path("/proc/self").exists()  # no /proc here: the pid must do
        except OSError:
            return True
        if _executes(cmdline, run_id):
            return True
        if look == 0:
            time.sleep(0.05)  # a process caught between fork and exec shows its parent's
    return False


def _executes(cmdline, run_id):
    """Is this command line `... execute RUN_ID ...`? (The run id right after
    `execute`: the process of run 2's attempt 1 is not run 1's.)"""
    try:
        at = cmdline.index(b"execute")
    except ValueError:
        return False
    return cmdline[at + 1:at + 2] == [str(run_id).encode()]


class Verdict:
    """What the reaper decided about one run, from what it read."""

    __slots__ = ("run", "action", "why")

    def __init__(self, run, action, why):
        self.run = run          # the run as read
        self.action = action    # "unstarted", "restart", "fail" or "cancelled"
        self.why = why

    def __repr__(self):
        return f"<Verdict run {self.run['id']} {self.action}: {self.why}>"


class Reaper:
    """`run_once(now)` judges every active run once and applies the verdicts;
    returns the ids it changed."""

    def __init__(self, store, heartbeat_timeout=60.0, submit_timeout=None):
        self.store = store
        self.heartbeat_timeout = float(heartbeat_timeout)
        # A claimed run whose process never started.
        self.submit_timeout = float(submit_timeout or heartbeat_timeout)
        self.host_id = host_identity()  # whose pids this reaper may look at
        # When a write of the reaper last failed because the store could not be
        # written: runs could not beat then either, so their silence counts from
        # here, not from their last heartbeat.
        self.unwritable_at = None

    def run_once(self, now=None):
        return [v.run["id"] for v in self.judge(now) if self.apply(v)]

    # -- looking ------------------------------------------------------------------
    def judge(self, now=None):
        """Verdicts on the active runs that look dead (reads only)."""
        now = time.time() if now is None else now
        # Runs first: an agent that registered before claiming a run read here
        # is in the list read after (its row says where it is now).
        runs = self.store.active_runs()
        agents = {a["name"]: a for a in self.store.list_agents()}
        verdicts = []
        for run in runs:
            verdict = self._judge(run, agents, now)
            if verdict is not None:
                verdicts.append(verdict)
        return verdicts

    def _judge(self, run, agents, now):
        agent = agents.get(run["agent"]) if run["agent"] else None
        # A process an agent started (`orchestrator execute RUN`) recorded on
        # this host is looked for here; a run started by hand, or on another
        # host, is judged by its heartbeat.
        local = agent is not None and bool(run["pid"]) and run.get("host_id") == self.host_id
        if run["state"] == StateName.SUBMITTED:
            why = self._why_unstarted(run, agent, local, now)
            return None if why is None else Verdict(run, "unstarted", why)
        why = self._why_dead(run, local, now)
        if why is None:
            return None
        if run["state"] == StateName.CANCELLING:
            return Verdict(run, "cancelled", why)
        allowed = int((self._settings(run).get("max_restarts", 0)) or 0)
        return Verdict(run, "restart" if run["restarts"] < allowed else "fail", why)

    def _why_unstarted(self, run, agent, local, now):
        waited = now - run["updated"]
        if local:
            if not process_alive(run["pid"], run["id"]):
                return f"its process (pid {run['pid']}) ended before starting it"
            if waited > self.submit_timeout:  # (its agent stops it: the claim is over)
                return (f"its process (pid {run['pid']}) has not started it in "
                        f"{waited:.0f} s")
            return None  # its process is starting
        # No process yet: the agent holding the claim's name is looked for, if
        # it is on this host (a name is one live agent's; see Agent.register).
        if (not run["pid"] and agent is not None and agent.get("host_id") == self.host_id
                and not process_alive(agent["pid"])):
            return f"its agent {run['agent']} (pid {agent['pid']}) is gone"
        if waited > self.submit_timeout:
            return f"it was claimed {waited:.0f} s ago and never started"
        return None

    def _why_dead(self, run, local, now):
        alive = None
        if local:
            alive = process_alive(run["pid"], run["id"])
            if not alive:
                return f"its process (pid {run['pid']}) is gone"
        if not self._settings(run).get("heartbeat", True):
            return None  # Flow(heartbeat=False): silence says nothing
        last = run["heartbeat"] or run["start_time"] or run["updated"]
        if self.unwritable_at is not None:
            last = max(last, self.unwritable_at)
        if now - last <= self.heartbeat_timeout:
            return None
        why = f"the last heartbeat was {now - last:.0f} s ago"
        if alive:
            why += f"; its process (pid {run['pid']}) is still there, stopped or hung"
        return why

    def _settings(self, run):
        return self.store.get_flow(run["flow_id"]).get("settings") or {}

    # -- writing ------------------------------------------------------------------
    def apply(self, verdict):
        """Write one verdict, if the run is still on the attempt and in the state
        that were judged; returns True when it changed the run."""
        run, why = verdict.run, verdict.why
        run_id, attempt, judged = run["id"], run["attempt"], run["state"]
        try:
            if verdict.action == "unstarted":
                changed = self.store.return_unstarted(
                    run_id, attempt, f"Scheduled again: {why}, so it never ran.")
            elif verdict.action == "cancelled":
                changed = self.store.cancelled_flow_run(run_id, attempt,
                                                        f"Cancelled ({why}).")
            elif verdict.action == "restart":
                allowed = int(self._settings(run).get("max_restarts", 0) or 0)
                changed = self.store.restart_flow_run(
                    run_id, attempt, judged,
                    f"Restarted ({run['restarts'] + 1} of {allowed}): {why}.",
                    beat=run["heartbeat"])
            else:
                changed = self.store.fail_flow_run(run_id, attempt, judged,
                                                   f"{NO_HEARTBEAT} ({why}.)",
                                                   beat=run["heartbeat"])
        except StoreUnavailable:
            self.unwritable_at = time.time()
            raise
        if changed:
            logger.warning("Flow run %s: %s; %s", run_id, why, _DONE[verdict.action])
        return changed


_DONE = {"unstarted": "scheduled it again (it never ran)",
         "cancelled": "marked it cancelled",
         "restart": "restarting it",
         "fail": "marking it failed"}
