"""Data quality gate: each check ends its task with an explicit signal."""
import prefect
from prefect import Flow, Parameter, task
from prefect.engine.signals import ENDRUN, FAIL, SKIP, SUCCESS
from prefect.engine.state import Success


@task
def row_count_check(rows):
    if rows == 0:
        raise SKIP("empty extract, nothing to check")
    return rows


@task
def null_check(null_fraction, limit):
    if null_fraction > limit:
        raise FAIL(f"{null_fraction:.0%} nulls exceeds the {limit:.0%} limit")
    return "nulls ok"


@task
def schema_check(columns):
    if "id" in columns:
        raise SUCCESS("schema has an id column", result=sorted(columns))
    return "no id column"


@task
def freshness_check(lag_hours):
    if lag_hours < 24:
        # Known-good source: short-circuit with a final state of our choosing.
        raise ENDRUN(Success(message="fresh enough", result=lag_hours))
    return "stale"


@task
def downstream_of_skip(rows):
    return f"{rows} rows checked"


@task(trigger=prefect.triggers.always_run)
def gate_summary():
    return "gate evaluated"


with Flow("quality-gate") as flow:
    rows = Parameter("rows", default=0)
    nulls = Parameter("null_fraction", default=0.25)
    counted = row_count_check(rows)
    downstream_of_skip(counted)
    nulls_ok = null_check(nulls, 0.1)
    schema = schema_check(["name", "id", "email"])
    fresh = freshness_check(3)
    gate_summary(upstream_tasks=[counted, nulls_ok, schema, fresh])
