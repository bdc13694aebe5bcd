"""Route a file either to the full reload or to the incremental path."""
from prefect import Flow, Parameter, case, task
from prefect.tasks.control_flow import merge


@task
def needs_full_reload(row_count, threshold):
    return row_count > threshold


@task
def full_reload(row_count):
    return f"full reload of {row_count} rows"


@task
def incremental(row_count):
    return f"appended {row_count} rows"


@task
def audit(outcome):
    return {"outcome": outcome}


with Flow("reload-router") as flow:
    rows = Parameter("row_count", default=120)
    threshold = Parameter("threshold", default=1000)
    full = needs_full_reload(rows, threshold)

    with case(full, True):
        a = full_reload(rows)
    with case(full, False):
        b = incremental(rows)

    audit(merge(a, b))
