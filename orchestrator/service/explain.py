"""Why has a run not started? The Prefect FAQ's "stuck in Scheduled"
checklist, answered from the store instead of by the user.

`explain_flow_run` asks the checklist's questions in order; each step below
answers one of them with the sentences it has to say (none: nothing to say).
"""

import time

from ..core.states import StateName
from ..flows.run_configs import needs_other_agent
from ..store import agent_takes
from .agents import live_agents


_NOTHING_HOLDS_IT_BACK = ("Nothing holds it back: a matching agent should claim it at its next "
                         "look (within a second or so).")


def explain_flow_run(store, run_id, now=None):
    """Plain sentences saying why run `run_id` is not running (or what it is doing)."""
    now = time.time() if now is None else now
    run = store.get_flow_run(run_id)
    flow = store.get_flow(run["flow_id"])
    if run["state"] != StateName.SCHEDULED:
        return [_what_it_is_doing(run)]
    reasons = [
        *_needs_another_kind_of_agent(flow),
        *_scheduled_for_later(run, now),
        *_held_by_late_runs_policy(store, run, flow, now),
        *_schedule_paused(run, flow),
    ]
    agents = live_agents(store, now)
    reasons += _no_agent_running(agents)
    reasons += _agents_refusing_its_labels(run, agents)
    reasons += _agents_at_their_limit(store, _agents_taking(run, agents))
    reasons += _flow_limit_full(store, run, flow)
    reasons += _label_limits_full(store, run)
    return reasons or [_NOTHING_HOLDS_IT_BACK]


def _what_it_is_doing(run):
    """A run past Scheduled: claimed, running, or finished for good."""
    state = run["state"]
    if state == StateName.SUBMITTED:
        return f"It was claimed by agent {run['agent']} and is starting."
    if state in (StateName.RUNNING, StateName.CANCELLING):
        return f"It is {state}" + (f" (agent {run['agent']}, pid {run['pid']})"
                                   if run["agent"] else "") + "."
    return (f"It is {state}: {run['message'] or 'no message'}. It will not start again; "
            f"start a new run with: orchestrator run {run['project']}/{run['flow_name']}")


def _needs_another_kind_of_agent(flow):
    """Its run config (a DockerRun, say) is for an agent we do not have."""
    other_agent = needs_other_agent(flow.get("run_config"))
    if not other_agent:
        return []
    kind = flow["run_config"]["type"]
    article = "an" if other_agent[0] in "AEIOU" else "a"  # an ECS agent
    return [f"Its flow {flow['project']}/{flow['name']} has run config {kind}, which needs "
            f"{article} {other_agent} agent; none of ours runs it (our agents run flows as local "
            "processes), so it waits. To run it here, give the flow run_config=LocalRun(...) "
            f"or UniversalRun(...) with the same labels and env instead of {kind}, and "
            "register it again."]


def _scheduled_for_later(run, now):
    """Its start time has not come yet."""
    wait = run["scheduled_start_time"] - now
    if wait > 0:
        return [f"It is scheduled for later: in {wait:.0f} s."]
    return []


def _held_by_late_runs_policy(store, run, flow, now):
    """A due, never-tried auto run that its flow's late-run policy has the
    scheduler skip (too late, or a newer run is due under run_latest)."""
    due = run["scheduled_start_time"] - now <= 0
    if not (run["auto_scheduled"] and due and not run["attempt"]):
        return []
    hold = store.late_policy_hold(run["flow_id"], flow.get("settings") or {},
                                  run["scheduled_start_time"], now)
    return [hold] if hold else []


def _schedule_paused(run, flow):
    """An auto run of a flow whose schedule is paused."""
    if run["auto_scheduled"] and not flow.get("schedule_active", True):
        return [f"The schedule of {flow['project']}/{flow['name']} is paused; "
                f"resume it with: orchestrator schedule resume {flow['name']}"]
    return []


def _no_agent_running(agents):
    """No live agent at all."""
    if agents:
        return []
    return ["No agent is running. Start one with `orchestrator up` (or "
            "`orchestrator agent`)."]


def _agents_taking(run, agents):
    """The live agents whose labels take the run."""
    return [agent for agent in agents
            if agent_takes(run["labels"], agent["labels"], agent.get("strict_labels"))]


def _agents_refusing_its_labels(run, agents):
    """Each live agent that does not take the run, and which labels it lacks."""
    labels = set(run["labels"])
    reasons = []
    for agent in agents:
        have = set(agent["labels"])
        if agent_takes(labels, have, agent.get("strict_labels")):
            continue
        if labels:
            reasons.append(f"Agent {agent['name']} has labels {sorted(have)}; the run needs "
                           f"{sorted(labels)}, so it lacks {sorted(labels - have)}.")
        else:
            reasons.append(f"The run has no labels, and agent {agent['name']} takes runs "
                           f"without labels only when it has none (--strict-labels); it has "
                           f"{sorted(have)}. Run the flow with --label, or start an agent "
                           "without --strict-labels.")
    return reasons


def _agents_at_their_limit(store, matching):
    """Each agent that would take the run but already runs its --limit of runs."""
    limited = [agent for agent in matching if agent["limit"]]
    if not limited:
        return []
    active = store.active_runs()
    reasons = []
    for agent in limited:
        busy = [r["id"] for r in active if r["agent"] == agent["name"]]
        if len(busy) >= agent["limit"]:
            reasons.append(f"Agent {agent['name']} is at its limit of {agent['limit']} "
                           f"runs (running: {', '.join(map(str, busy))}).")
    return reasons


def _flow_limit_full(store, run, flow):
    """Its flow's max_concurrent_runs are all taken."""
    flow_limit = (flow.get("settings") or {}).get("max_concurrent_runs")
    if not flow_limit:
        return []
    holders = store.limit_holders(flow_id=run["flow_id"])
    if len(holders) >= flow_limit:
        return [f"Flow {flow['name']} allows {flow_limit} concurrent runs, and "
                f"runs {', '.join(map(str, holders))} hold them."]
    return []


def _label_limits_full(store, run):
    """Each of its labels whose concurrency limit is taken, by label name."""
    labels = set(run["labels"])
    reasons = []
    for label, limit in sorted(store.concurrency_limits("label").items()):
        if label not in labels:
            continue
        holders = store.limit_holders(label=label)
        if len(holders) >= limit:
            reasons.append(f"Label {label!r} allows {limit} concurrent runs, and runs "
                           f"{', '.join(map(str, holders)) or 'none'} hold them.")
    return reasons
