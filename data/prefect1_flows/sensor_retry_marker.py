"""Wait for an upstream system's "ready" marker before loading.

Poll the marker file; while it is absent, raise RETRY with a start_time a
moment ahead (sensors retry this way regardless of max_retries). The export
job drops the marker on its first poll, so the sensor passes on its second
run.
"""
import os
from datetime import datetime, timedelta, timezone

import prefect
from prefect import Flow, Parameter, task
from prefect.engine.signals import RETRY

HERE = os.path.dirname(os.path.abspath(__file__))


@task
def reset_marker(path):
    if os.path.exists(path):
        os.remove(path)
    return os.path.basename(path)


@task
def wait_for_marker(path):
    run = prefect.context.get("task_run_count", 1)
    if not os.path.exists(path):
        # Stands in for the export job finishing while we wait.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write("rows=128\n")
        raise RETRY(
            f"marker {os.path.basename(path)} not there yet (poll {run})",
            start_time=datetime.now(timezone.utc) + timedelta(milliseconds=200),
        )
    with open(path) as fh:
        rows = int(fh.read().strip().split("=")[1])
    return {"polls": run, "rows": rows}


@task
def load_export(info):
    return f"loaded {info['rows']} rows after {info['polls']} polls"


with Flow("marker-sensor") as flow:
    marker = Parameter("marker", default=os.path.join(HERE, "out", "export.ready"))
    reset = reset_marker(marker)
    info = wait_for_marker(marker, upstream_tasks=[reset])
    load_export(info)
