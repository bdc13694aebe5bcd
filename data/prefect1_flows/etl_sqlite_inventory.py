# Inventory snapshot into SQLite, then a couple of reporting queries.
#
# Uses the SQLite tasks from the Prefect task library. The database lives in
# ./out/inventory.db next to this file and is rebuilt on every run.
from pathlib import Path

from prefect import Flow, Parameter, task
from prefect.tasks.database.sqlite import SQLiteQuery, SQLiteScript

DB = str(Path(__file__).parent / "out" / "inventory.db")

SCHEMA = """
DROP TABLE IF EXISTS stock;
CREATE TABLE stock (sku TEXT PRIMARY KEY, warehouse TEXT, qty INTEGER);
"""


@task
def prepare_db(db_path):
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    return db_path


@task
def build_inserts(snapshot):
    values = ",\n".join(f"('{sku}', '{wh}', {qty})" for sku, wh, qty in snapshot)
    return f"INSERT INTO stock (sku, warehouse, qty) VALUES\n{values};"


create_schema = SQLiteScript(script=SCHEMA, name="create schema")
insert_rows = SQLiteScript(name="insert snapshot")
low_stock = SQLiteQuery(
    query="SELECT sku, qty FROM stock WHERE qty < ? ORDER BY sku",
    name="low stock",
)
per_warehouse = SQLiteQuery(
    query="SELECT warehouse, SUM(qty) FROM stock GROUP BY warehouse ORDER BY warehouse",
    name="per warehouse",
)


@task
def summarize(low, totals):
    return {"low": [sku for sku, _ in low], "warehouses": {w: q for w, q in totals}}


with Flow("inventory-sqlite") as flow:
    threshold = Parameter("threshold", default=5)
    db = prepare_db(DB)
    snapshot = [
        ("A-100", "north", 12),
        ("A-200", "north", 3),
        ("B-100", "south", 0),
        ("B-300", "south", 40),
    ]
    schema = create_schema(db=db)
    inserted = insert_rows(db=db, script=build_inserts(snapshot), upstream_tasks=[schema])
    low = low_stock(db=db, data=(threshold,), upstream_tasks=[inserted])
    totals = per_warehouse(db=db, upstream_tasks=[inserted])
    summarize(low, totals)
