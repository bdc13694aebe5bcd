"""A scratch SQLite database as a resource: created before the tasks that
use it, removed afterwards even when one of them fails."""
import os
import sqlite3

import prefect
from prefect import Flow, Parameter, resource_manager, task

HERE = os.path.dirname(os.path.abspath(__file__))


@resource_manager
class ScratchDatabase:
    """Creates out/<name>.db with a `metrics` table; deletes it on cleanup."""

    def __init__(self, name, folder=os.path.join(HERE, "out")):
        self.path = os.path.join(folder, f"{name}.db")

    def setup(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if os.path.exists(self.path):
            os.remove(self.path)
        with sqlite3.connect(self.path) as conn:
            conn.execute("CREATE TABLE metrics (name TEXT, value REAL)")
        prefect.context.get("logger").info("scratch db ready")
        return self.path

    def cleanup(self, path):
        os.remove(path)


@task
def record(db_path, metrics):
    with sqlite3.connect(db_path) as conn:
        conn.executemany("INSERT INTO metrics VALUES (?, ?)", sorted(metrics.items()))
    return len(metrics)


@task
def average(db_path, written):
    with sqlite3.connect(db_path) as conn:
        (avg,) = conn.execute("SELECT AVG(value) FROM metrics").fetchone()
    return round(avg, 3)


with Flow("scratch-db") as flow:
    metrics = Parameter("metrics", default={"cpu": 0.5, "mem": 0.25})
    with ScratchDatabase("scratch") as db:
        written = record(db, metrics)
        average(db, written)
