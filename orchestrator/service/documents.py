"""A run and a task run as JSON documents: one shape for the REST API, the
CLI's `--json` and the client, so a script that reads one reads them all.
Times are ISO 8601 in UTC, None when not yet known. (No web framework here:
the CLI imports this module without paying for the API's.)"""

import datetime as _dt


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
