"""Store records as JSON documents: a flow, a run, a task run, a state, a log
line, an artifact, an agent. One shape each for the REST API, the CLI's
`--json` and the library's tasks (`wait_for_flow_run`), so a script that reads
one reads them all. Times are ISO 8601 in UTC, None when not yet known. (No
web framework here: the CLI imports this module without paying for the API's.)"""

import datetime as _dt

from ..core.schedules import describe_schedule

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def iso(epoch):
    """Epoch seconds as ISO 8601 in UTC, or None."""
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat()


def run_document(run):
    """A flow run (a row of Store.get_flow_run / list_flow_runs)."""
    return {
        "id": run["id"], "name": run["name"], "flow_id": run["flow_id"],
        "flow": f"{run['project']}/{run['flow_name']}", "project": run["project"],
        "flow_name": run["flow_name"], "flow_version": run["flow_version"],
        "parameters": run["parameters"], "labels": run["labels"], "state": run["state"],
        "message": run["message"],
        "scheduled_start_time": iso(run["scheduled_start_time"]),
        "start_time": iso(run["start_time"]), "end_time": iso(run["end_time"]),
        "heartbeat": iso(run["heartbeat"]), "agent": run["agent"], "pid": run["pid"],
        "idempotency_key": run["idempotency_key"],
        "auto_scheduled": bool(run["auto_scheduled"]), "restarts": run["restarts"],
        "attempt": run["attempt"],
        "created": iso(run["created"]), "updated": iso(run["updated"]),
    }


def task_run_document(row):
    """A task run (a row of Store.task_runs); a map index below 0 (not mapped) is None."""
    return {
        "id": row["id"], "task_slug": row["task_slug"], "task_name": row["task_name"],
        "map_index": None if row["map_index"] is None or row["map_index"] < 0
        else row["map_index"],
        "state": row["state"], "message": row["message"], "run_count": row["run_count"],
        "start_time": iso(row["start_time"]), "end_time": iso(row["end_time"]),
        "result_location": row["result_location"],
    }


def flow_document(flow, summary=None):
    """A flow; with `summary` (Store.flow_run_summary) its recent runs and next run."""
    summary = summary or {"recent_runs": [], "next_run": None}
    return {
        "schedule_description": describe_schedule(flow["schedule"]),
        "next_run": iso(summary["next_run"]),
        "recent_runs": [{"id": rid, "state": state} for rid, state in summary["recent_runs"]],
        "id": flow["id"], "project": flow["project"], "name": flow["name"],
        "full_name": f"{flow['project']}/{flow['name']}", "version": flow["version"],
        "labels": flow["labels"], "parameters": flow["parameters"],
        "schedule": flow["schedule"], "schedule_active": bool(flow["schedule_active"]),
        "settings": flow["settings"] or {}, "storage": flow["storage"],
        "run_config": flow["run_config"], "archived": bool(flow["archived"]),
        "created": iso(flow["created"]),
    }


def artifact_document(row):
    """A markdown report or link a task run published (orchestrator.artifacts)."""
    return {
        "id": row["id"], "task_slug": row["task_slug"], "map_index": row["map_index"],
        "kind": row["kind"], "text": row["text"], "created": iso(row["created"]),
        "updated": iso(row["updated"]),
    }


def log_document(row):
    """A log line (a row of Store.logs), with its level's name."""
    level = row["level"]
    name = next((n for n, v in sorted(LEVELS.items(), key=lambda kv: -kv[1]) if level >= v),
                "NOTSET")
    return {
        "id": row["id"], "time": iso(row["time"]), "level": level, "level_name": name,
        "logger": row["logger"], "message": row["message"], "task_slug": row["task_slug"],
        "map_index": row["map_index"],
    }


def state_document(row):
    """A state a run went through (a row of Store.state_events)."""
    return {"state": row["state"], "message": row["message"], "time": iso(row["time"])}


def agent_document(row, running, alive):
    """An agent (a row of Store.list_agents), the runs it holds and whether it is alive
    (service.agents says both)."""
    return {
        "name": row["name"], "id": row.get("id"), "labels": row["labels"],
        "host": row["host"], "host_id": row.get("host_id"), "pid": row["pid"],
        "limit": row["limit"], "strict_labels": bool(row["strict_labels"]),
        "started": iso(row["started"]),
        "last_seen": iso(row["last_seen"]), "alive": alive,
        "running": running,
    }
