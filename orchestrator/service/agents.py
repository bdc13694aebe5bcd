"""Use cases about agents: who is there, whether alive, and which runs each holds.

One rule says when a part that shows signs of life has gone silent: an agent
(whose row's `last_seen` it writes every SEEN_EVERY seconds), a part of
`orchestrator up` (its loops' ticks). `silent_after()` is that time:
`[services] heartbeat_timeout` (60 s by default), and never less than
SEEN_MISSED signs of life. An agent is alive until then, holds its name until
then, and `orchestrator up` reports its parts alive until then.
"""

import time

__all__ = ["agents", "live_agents", "silent_after", "SEEN_EVERY", "SEEN_MISSED"]

SEEN_EVERY = 5.0  # seconds between an agent's signs of life
SEEN_MISSED = 3   # signs of life an agent may miss and still be alive


def silent_after(heartbeat_timeout=None):
    """Seconds without a sign of life after which an agent, or a part of `up`, has
    gone silent (`heartbeat_timeout` defaults to the setting's value)."""
    if heartbeat_timeout is None:
        from ..config import load_config

        heartbeat_timeout = load_config()["services"]["heartbeat_timeout"]
    return max(float(heartbeat_timeout), SEEN_MISSED * SEEN_EVERY)


def live_agents(store, now=None):
    """The agents seen within `silent_after()` of `now`."""
    now = time.time() if now is None else now
    timeout = silent_after()
    return [a for a in store.list_agents() if now - a["last_seen"] < timeout]


def agents(store, now=None):
    """Every agent known to the store, as (agent, ids of the runs it holds now, alive)."""
    now = time.time() if now is None else now
    timeout = silent_after()
    running = {}
    for run in store.active_runs():
        if run["agent"]:
            running.setdefault(run["agent"], []).append(run["id"])
    return [(agent, running.get(agent["name"], []), now - agent["last_seen"] < timeout)
            for agent in store.list_agents()]
