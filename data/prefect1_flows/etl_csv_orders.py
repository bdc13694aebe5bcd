"""Nightly order rollup.

orders.csv -> clean rows -> revenue per customer -> orders_by_customer.json

Rows with a missing quantity are dropped (and counted), cancelled orders are
ignored. Owner: data-eng (#orders-pipeline).
"""
import csv
import json
import os

from prefect import Flow, Parameter, task
from prefect.run_configs import DockerRun
from prefect.schedules import CronSchedule
from prefect.storage import GitHub
from prefect.utilities.logging import get_logger

HERE = os.path.dirname(os.path.abspath(__file__))


@task(name="Read orders")
def read_orders(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@task(name="Clean rows", nout=2)
def clean_rows(rows):
    good, bad = [], 0
    for row in rows:
        if not row["quantity"]:
            bad += 1
            continue
        row["quantity"] = int(row["quantity"])
        row["unit_price"] = float(row["unit_price"])
        good.append(row)
    get_logger().info("dropped %s rows without a quantity", bad)
    return good, bad


@task(name="Revenue by customer")
def revenue_by_customer(rows, statuses):
    totals = {}
    for row in rows:
        if row["status"] not in statuses:
            continue
        amount = row["quantity"] * row["unit_price"]
        totals[row["customer"]] = round(totals.get(row["customer"], 0) + amount, 2)
    return dict(sorted(totals.items()))


@task(name="Write report")
def write_report(totals, dropped, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "orders_by_customer.json")
    with open(out, "w") as fh:
        json.dump({"totals": totals, "dropped_rows": dropped}, fh, indent=2)
    return os.path.basename(out)


with Flow(
    "nightly-orders",
    schedule=CronSchedule("0 2 * * *"),
    storage=GitHub(
        repo="acme/data-flows",
        path="flows/etl_csv_orders.py",
        access_token_secret="GITHUB_ACCESS_TOKEN",
    ),
    run_config=DockerRun(image="acme/flows:2024.05", labels=["etl"]),
) as flow:
    src = Parameter("source", default=os.path.join(HERE, "inputs", "orders.csv"))
    statuses = Parameter("statuses", default=["shipped"])
    out_dir = Parameter("out_dir", default=os.path.join(HERE, "out"))

    rows, dropped = clean_rows(read_orders(src))
    totals = revenue_by_customer(rows, statuses)
    write_report(totals, dropped, out_dir)
