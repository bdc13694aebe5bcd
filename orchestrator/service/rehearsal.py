"""A rehearsal: a small built-in flow run the whole way `orchestrator execute`
runs one (store, Local storage, engine, logging, results), on a scratch store
that is thrown away after.

A warm-start process rehearses before it forks its first child. A forked child
copies every page it writes, and code that runs for the first time in a
process writes a great deal: caches filled on first use, objects made once,
bytecode the interpreter adapts as it runs. Run once in the warm-start
process, those writes are made there, and its children share the pages
instead of each copying them. The rehearsal runs no user code and leaves
nothing behind: its files, its connections and its threads are gone before
the first fork.
"""

import contextlib
import errno
import io
import shutil
import sys
import tempfile
from pathlib import Path

from ..config import load_config
from ..core.flow import Flow
from ..core.results import PackedResult
from ..core.task import Parameter, task
from ..engine.run_logging import get_logger
from ..store import Store
from .execution import execute_flow_run
from .flows import create_project, load_flow, register_flow
from .runs import create_flow_run

__all__ = ["rehearse"]

PROJECT = "rehearsal"
MIN_FREE_BYTES = 64 << 20  # free space a rehearsal needs where it makes its scratch store


def rehearse(times=2):
    """Run the rehearsal flow `times` times as `orchestrator execute` runs a flow,
    with the configuration of this process (results go to the scratch
    directory); its log lines go nowhere. Raises what went wrong."""
    from ..flows.storage import Local

    with contextlib.ExitStack() as undo:  # (every step undone, even when one fails)
        scratch = Path(tempfile.mkdtemp(prefix="orchestrator-rehearsal-"))
        undo.callback(shutil.rmtree, scratch, ignore_errors=True)
        if shutil.disk_usage(scratch).free < MIN_FREE_BYTES:
            # (a run waits for room on a full disk: a rehearsal would wait forever)
            raise OSError(errno.ENOSPC, f"less than {MIN_FREE_BYTES >> 20} MB free in "
                                        f"{scratch.parent}")
        undo.callback(setattr, sys, "stderr", sys.stderr)
        sys.stderr = io.StringIO()
        store = Store.open(url=f"sqlite:///{scratch / 'rehearsal.db'}", private=True)
        undo.callback(store.forget)
        undo.callback(PackedResult.close_all)
        config = load_config()
        config["results"] = dict(config["results"], location=str(scratch / "results"))
        flow = _flow()
        flow.storage = Local(directory=scratch / "flows", add_default_labels=False)
        create_project(store, PROJECT)
        register_flow(store, flow, PROJECT)
        for _ in range(times):
            run = create_flow_run(store, flow.name, project=PROJECT)
            execute_flow_run(store, run["id"], load_flow, config=config)


def _flow():
    """A parameter, a task that logs, and a task mapped over what it returns.
    (Made here, not at import: its tasks are pickled by value, as a user's are.)"""

    @task
    def pair(n):
        get_logger().info("rehearsing with %s", n)
        return [n, n + 1]

    @task
    def double(x):
        return 2 * x

    with Flow("rehearsal") as flow:
        double.map(pair(Parameter("n", default=1)))
    return flow
