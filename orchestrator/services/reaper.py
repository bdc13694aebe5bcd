"""The reaper: notices runs whose process is gone and says so.

A run that holds a claim or a process (Submitted, Running, Cancelling) but
whose heartbeat is older than the timeout, or whose recorded process on this
host no longer exists, is failed with "No heartbeat detected from the remote
task; marking the run as failed." and what is known about why, or put back
to Scheduled when its flow allows restarts (`max_restarts`). A terminal state
is never overwritten. It also runs once when `orchestrator up` starts, so
runs left behind by a crash are dealt with at once.
"""

import logging
import os
import socket
import time

logger = logging.getLogger(__name__)

NO_HEARTBEAT = "No heartbeat detected from the remote task; marking the run as failed."


def process_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Reaper:
    """`run_once(now)` checks every active run once; returns the ids it changed."""

    def __init__(self, store, heartbeat_timeout=60.0, submit_timeout=None):
        self.store = store
        self.heartbeat_timeout = float(heartbeat_timeout)
        # A claimed run whose process never started (its agent died).
        self.submit_timeout = float(submit_timeout or heartbeat_timeout)
        self.host = socket.gethostname()

    def run_once(self, now=None):
        now = time.time() if now is None else now
        agents = {a["name"]: a for a in self.store.list_agents()}
        changed = []
        for run in self.store.active_runs():
            why = self._why_dead(run, agents, now)
            if why is None:
                continue
            if self._restart_or_fail(run, why):
                changed.append(run["id"])
        return changed

    def _why_dead(self, run, agents, now):
        agent = agents.get(run["agent"]) if run["agent"] else None
        # Only an agent's record says which host a run's process is on; a run
        # started by hand (orchestrator execute) is judged by its heartbeat.
        local = agent is not None and agent["host"] == self.host
        if run["state"] == "Submitted":
            agent_gone = agent is not None and local and not process_alive(agent["pid"])
            waited = now - run["updated"]
            if agent_gone:
                return f"its agent {run['agent']} (pid {agent['pid']}) is gone"
            if waited > self.submit_timeout and not local:
                return f"it was claimed {waited:.0f} s ago and never started"
            return None
        if local and run["pid"]:
            if not process_alive(run["pid"]):
                return f"its process (pid {run['pid']}) is gone"
            return None  # its process is here and alive: that beats any heartbeat
        if not self._heartbeats(run["flow_id"]):
            return None  # Flow(heartbeat=False): silence says nothing
        last = run["heartbeat"] or run["start_time"] or run["updated"]
        if now - last > self.heartbeat_timeout:
            return f"the last heartbeat was {now - last:.0f} s ago"
        return None

    def _heartbeats(self, flow_id):
        settings = self.store.get_flow(flow_id).get("settings") or {}
        return settings.get("heartbeat", True)

    def _restart_or_fail(self, run, why):
        flow = self.store.get_flow(run["flow_id"])
        allowed = int((flow.get("settings") or {}).get("max_restarts", 0) or 0)
        if run["state"] == "Cancelling":
            return self.store.set_flow_run_state(
                run["id"], "Cancelled", f"Cancelled ({why}).", end=True)
        if run["restarts"] < allowed:
            logger.warning("Flow run %s: %s; restarting it (%d of %d)", run["id"], why,
                           run["restarts"] + 1, allowed)
            return self.store.requeue_flow_run(
                run["id"], f"Restarted ({run['restarts'] + 1} of {allowed}): {why}.")
        logger.warning("Flow run %s: %s; marking it failed", run["id"], why)
        return self.store.set_flow_run_state(run["id"], "Failed", f"{NO_HEARTBEAT} ({why}.)",
                                             end=True)
