"""Staging load with cleanup and alerting wired through triggers.

- `drop_staging` always runs (all_finished), whatever happened upstream.
- `page_oncall` runs only if some load step failed (any_failed).
- `approve_publish` is manual_only, but the publish branch is skipped when
  the load is partial, so it never waits for a human here.
"""
from prefect import Flow, task
from prefect import triggers
from prefect.engine import signals


@task
def load_partition(name):
    if name == "eu-west":
        raise IOError(f"partition {name}: checksum mismatch")
    return f"{name} loaded"


@task
def load_us():
    return load_partition.run("us-east")


@task
def load_eu():
    return load_partition.run("eu-west")


@task(trigger=triggers.all_finished)
def drop_staging():
    return "staging dropped"


@task(trigger=triggers.any_failed)
def page_oncall():
    return "paged"


@task(trigger=triggers.all_finished)
def decide_publish():
    raise signals.SKIP("partial load, not publishing")


@task(trigger=triggers.manual_only)
def approve_publish():
    return "approved"


@task
def publish():
    return "published"


with Flow("staging-triggers") as flow:
    us = load_us()
    eu = load_eu()
    drop_staging(upstream_tasks=[us, eu])
    page_oncall(upstream_tasks=[us, eu])
    gate = decide_publish(upstream_tasks=[us, eu])
    approved = approve_publish(upstream_tasks=[gate])
    publish(upstream_tasks=[approved])
