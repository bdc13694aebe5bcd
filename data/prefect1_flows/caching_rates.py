"""Exchange rates are expensive to fetch: cache them, and skip a day's
conversion when its output already exists (target=)."""
import datetime
import os

from prefect import Flow, Parameter, task
from prefect.engine.cache_validators import all_inputs
from prefect.engine.results import LocalResult
from prefect.engine.serializers import JSONSerializer

TARGETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inputs", "targets")
CALLS = []


@task(cache_for=datetime.timedelta(hours=1), cache_validator=all_inputs)
def fetch_rates(base):
    CALLS.append(base)
    return {"base": base, "EUR": 0.92, "GBP": 0.79}


@task
def convert(rates, amount):
    return {k: round(v * amount, 2) for k, v in rates.items() if k != "base"}


@task(
    target="{task_name}-{parameters[day]}.json",
    result=LocalResult(dir=TARGETS, serializer=JSONSerializer()),
    checkpoint=True,
)
def daily_totals(day):
    # Only reached when the target file for `day` is missing.
    return {"day": day, "computed": True}


@task
def fetch_count():
    return len(CALLS)


with Flow("cached-rates") as flow:
    base = Parameter("base", default="USD")
    amount = Parameter("amount", default=100)
    day = Parameter("day", default="2024-05-01")
    first = fetch_rates(base)
    second = fetch_rates(base, upstream_tasks=[first])
    convert(second, amount)
    totals = daily_totals(day)
    fetch_count(upstream_tasks=[first, second])
