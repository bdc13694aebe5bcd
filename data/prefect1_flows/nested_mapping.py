"""Per-store, per-day sales: map over stores, then over each store's days
(flatten), retrying the one flaky store feed."""
import datetime

import prefect
from prefect import Flow, flatten, task, unmapped
from prefect.run_configs import KubernetesRun
from prefect.schedules import Schedule
from prefect.schedules.clocks import IntervalClock
from prefect.storage import S3

STORES = {"berlin": [120, 80], "lisbon": [60, 0, 30], "oslo": []}


@task
def stores():
    return sorted(STORES)


@task(max_retries=2, retry_delay=datetime.timedelta(0))
def daily_sales(store):
    if store == "lisbon" and prefect.context.task_run_count == 1:
        raise ConnectionError("lisbon feed timed out")
    return STORES[store]


@task
def with_vat(amount, rate):
    return round(amount * (1 + rate), 2)


@task
def store_total(amounts):
    return sum(amounts)


@task
def grand_total(per_store):
    return round(sum(per_store), 2)


with Flow("nested-sales") as flow:
    per_day = daily_sales.map(stores())
    gross = with_vat.map(flatten(per_day), unmapped(0.2))
    totals = store_total.map(per_day)
    grand_total(totals)

flow.schedule = Schedule(clocks=[IntervalClock(datetime.timedelta(hours=1))])
flow.storage = S3(bucket="acme-prefect-flows", stored_as_script=False)
flow.run_config = KubernetesRun(cpu_request="500m", memory_request="1Gi", labels=["k8s"])
