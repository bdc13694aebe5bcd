"""Imperative ResourceManager: a "lock" that must be released even when the
work inside it fails."""
import os

from prefect import Flow, task
from prefect.tasks.core.resource_manager import ResourceManager
from prefect.triggers import all_finished

HERE = os.path.dirname(os.path.abspath(__file__))
LOCK_DIR = os.path.join(HERE, "out", "locks")


class FileLock:
    def __init__(self, name):
        self.path = os.path.join(LOCK_DIR, name + ".lock")

    def setup(self):
        os.makedirs(LOCK_DIR, exist_ok=True)
        with open(self.path, "x") as fh:
            fh.write("held")
        return os.path.basename(self.path)

    def cleanup(self, lock_name):
        os.remove(os.path.join(LOCK_DIR, lock_name))


PartitionLock = ResourceManager(FileLock, name="partition-lock")


@task
def rewrite_partition(lock_name):
    raise RuntimeError(f"disk quota exceeded while holding {lock_name}")


@task(trigger=all_finished)
def locks_left():
    return sorted(os.listdir(LOCK_DIR))


flow = Flow("locked-rewrite")
with flow:
    with PartitionLock("2024-05") as lock:
        rewritten = rewrite_partition(lock)

# Check, after the lock's cleanup task, that no lock file is left behind.
cleanup = flow.get_tasks(name="partition-lock.cleanup")[0]
locks_left.set_upstream(cleanup, flow=flow)
