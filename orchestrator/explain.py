"""Why has a run not started? The Prefect FAQ's "stuck in Scheduled"
checklist, answered from the store instead of by the user."""

import time

from .flows.run_configs import needs_other_agent
from .store import agent_takes

AGENT_ALIVE_SECONDS = 30.0


def explain_flow_run(store, run_id, now=None):
    """Plain sentences saying why run `run_id` is not running (or what it is doing)."""
    now = time.time() if now is None else now
    run = store.get_flow_run(run_id)
    flow = store.get_flow(run["flow_id"])
    state = run["state"]
    if state != "Scheduled":
        if state == "Submitted":
            return [f"It was claimed by agent {run['agent']} and is starting."]
        if state in ("Running", "Cancelling"):
            return [f"It is {state}" + (f" (agent {run['agent']}, pid {run['pid']})"
                                         if run["agent"] else "") + "."]
        return [f"It is {state}: {run['message'] or 'no message'}. It will not start again; "
                f"start a new run with: orchestrator run {run['project']}/{run['flow_name']}"]
    reasons = []
    other_agent = needs_other_agent(flow.get("run_config"))
    if other_agent:
        kind = flow["run_config"]["type"]
        article = "an" if other_agent[0] in "AEIOU" else "a"  # an ECS agent
        reasons.append(
            f"Its flow {flow['project']}/{flow['name']} has run config {kind}, which needs "
            f"{article} {other_agent} agent; none of ours runs it (our agents run flows as local "
            "processes), so it waits. To run it here, give the flow run_config=LocalRun(...) "
            f"or UniversalRun(...) with the same labels and env instead of {kind}, and "
            "register it again.")
    wait = run["scheduled_start_time"] - now
    if wait > 0:
        reasons.append(f"It is scheduled for later: in {wait:.0f} s.")
    if run["auto_scheduled"] and wait <= 0 and not run["attempt"]:
        hold = store.late_policy_hold(run["flow_id"], flow.get("settings") or {},
                                      run["scheduled_start_time"], now)
        if hold:
            reasons.append(hold)
    if run["auto_scheduled"] and not flow.get("schedule_active", True):
        reasons.append(f"The schedule of {flow['project']}/{flow['name']} is paused; "
                       f"resume it with: orchestrator schedule resume {flow['name']}")
    labels = set(run["labels"])
    agents = [a for a in store.list_agents() if now - a["last_seen"] < AGENT_ALIVE_SECONDS]
    if not agents:
        reasons.append("No agent is running. Start one with `orchestrator up` (or "
                       "`orchestrator agent`).")
    matching = []
    for agent in agents:
        have = set(agent["labels"])
        if agent_takes(labels, have, agent.get("strict_labels")):
            matching.append(agent)
        elif labels:
            reasons.append(f"Agent {agent['name']} has labels {sorted(have)}; the run needs "
                           f"{sorted(labels)}, so it lacks {sorted(labels - have)}.")
        else:
            reasons.append(f"The run has no labels, and agent {agent['name']} takes runs "
                           f"without labels only when it has none (--strict-labels); it has "
                           f"{sorted(have)}. Run the flow with --label, or start an agent "
                           "without --strict-labels.")
    active = store.active_runs() if any(a["limit"] for a in matching) else []
    for agent in matching:
        if agent["limit"]:
            busy = [r["id"] for r in active if r["agent"] == agent["name"]]
            if len(busy) >= agent["limit"]:
                reasons.append(f"Agent {agent['name']} is at its limit of {agent['limit']} "
                               f"runs (running: {', '.join(map(str, busy))}).")
    flow_limit = (flow.get("settings") or {}).get("max_concurrent_runs")
    if flow_limit:
        holders = store.limit_holders(flow_id=run["flow_id"])
        if len(holders) >= flow_limit:
            reasons.append(f"Flow {flow['name']} allows {flow_limit} concurrent runs, and "
                           f"runs {', '.join(map(str, holders))} hold them.")
    for label, limit in sorted(store.concurrency_limits("label").items()):
        if label in labels:
            holders = store.limit_holders(label=label)
            if len(holders) >= limit:
                reasons.append(f"Label {label!r} allows {limit} concurrent runs, and runs "
                               f"{', '.join(map(str, holders)) or 'none'} hold them.")
    if not reasons:
        reasons.append("Nothing holds it back: a matching agent should claim it at its next "
                       "look (within a second or so).")
    return reasons
