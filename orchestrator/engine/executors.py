"""Executors: where a flow's task runs execute.

- `LocalExecutor`: one after another in this thread (the default).
- `LocalDaskExecutor(scheduler="threads"|"processes", num_workers=None)`: in
  parallel on this machine through dask's local schedulers.
- `DaskExecutor(address=None, cluster_class=None, cluster_kwargs=None,
  adapt_kwargs=None, client_kwargs=None)`: on a `distributed` cluster; with no
  address it starts `cluster_class(**cluster_kwargs)` (a `LocalCluster` by
  default) for the run. `cluster_class` may be any callable returning a
  cluster, and may read `context.parameters` to size it.

The flow runner talks to an executor through `start()`, a context manager
around one run that yields a session: `session.submit(fn, *args)` returns a
future (or the value itself), `session.wait(futures)` resolves a future or a
list of them, and futures may be passed as arguments to later submits. All
per-run state lives in the session, so one executor object can serve several
runs at once, or a run started from inside another run's task.
"""

import contextlib
import importlib
import itertools
import logging
import threading
import uuid

from ..exceptions import OrchestratorError

__all__ = ["Executor", "LocalExecutor", "LocalDaskExecutor", "DaskExecutor"]


class ExecutorError(OrchestratorError):
    """An executor could not start or was misconfigured."""


def _import_dask(what):
    try:
        import dask  # noqa: F401
    except ImportError:
        raise ExecutorError(
            f"{what} needs dask, which orchestrator installs with itself but which is "
            "missing here; install it with pip install 'dask>=2024.1'"
        ) from None


class Executor:
    """Base class. `in_other_process` is True when tasks run in other processes
    (their results and logs are then shipped back)."""

    in_other_process = False

    @contextlib.contextmanager
    def start(self):
        yield self

    def submit(self, fn, *args):
        raise NotImplementedError

    def wait(self, futures):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__}>"


class LocalExecutor(Executor):
    """Runs each task at once, in this thread. `submit` returns the state."""

    def submit(self, fn, *args):
        return fn(*args)

    def wait(self, futures):
        return futures


class _Key:
    """A placeholder for a task submitted to a dask graph but not computed yet."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


class LocalDaskExecutor(Executor):
    """Runs tasks in parallel with dask's local threaded or multiprocessing scheduler.

    Tasks are collected into one dask graph and computed when the flow runner
    needs their states (at the end, or to learn how many items to map over).
    """

    _SCHEDULERS = ("threads", "processes", "synchronous")

    def __init__(self, scheduler="threads", num_workers=None, **kwargs):
        aliases = {"threaded": "threads", "multiprocessing": "processes",
                   "sync": "synchronous", "single-threaded": "synchronous"}
        scheduler = aliases.get(scheduler, scheduler)
        if scheduler not in self._SCHEDULERS:
            raise ExecutorError(
                f"LocalDaskExecutor(scheduler={scheduler!r}) is not a scheduler; use "
                "'threads', 'processes' or 'synchronous'"
            )
        if num_workers is not None and (isinstance(num_workers, bool)
                                        or not isinstance(num_workers, int)
                                        or num_workers < 1):
            raise ExecutorError(
                f"LocalDaskExecutor(num_workers={num_workers!r}) must be a positive int"
            )
        self.scheduler = scheduler
        self.num_workers = num_workers
        self.dask_config = kwargs

    @property
    def in_other_process(self):
        return self.scheduler == "processes"

    def __repr__(self):
        return f"<LocalDaskExecutor scheduler={self.scheduler} num_workers={self.num_workers}>"

    @contextlib.contextmanager
    def start(self):
        _import_dask("LocalDaskExecutor")
        import concurrent.futures
        import multiprocessing
        import os

        workers = self.num_workers or os.cpu_count() or 1
        pool = None
        if self.scheduler == "threads":
            pool = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="orchestrator-dask")
        elif self.scheduler == "processes":
            pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"))
        session = _LocalDaskSession(self, pool)
        interrupted = False
        try:
            yield session
        except BaseException:
            interrupted = True
            raise
        finally:
            if pool is not None:
                # On an interrupt, do not wait for running tasks: cancel what
                # has not started and let the pool's threads or processes go.
                pool.shutdown(wait=not interrupted, cancel_futures=True)
                if interrupted and self.scheduler == "processes":
                    for process in list(getattr(pool, "_processes", {}).values()):
                        process.terminate()


class _LocalDaskSession:
    """One run's graph on a LocalDaskExecutor."""

    def __init__(self, executor, pool):
        self.executor = executor
        self.in_other_process = executor.in_other_process
        self._pool = pool
        self._pending = {}
        self._done = {}
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def submit(self, fn, *args):
        key = f"orchestrator-{next(self._counter)}"
        self._pending[key] = (fn,) + tuple(a.key if isinstance(a, _Key) else a for a in args)
        return _Key(key)

    def _compute(self):
        pending, self._pending = self._pending, {}
        if not pending:
            return
        graph = dict(pending)
        done = self._done
        for task in pending.values():
            for arg in task[1:]:
                if isinstance(arg, str) and arg in done:
                    graph[arg] = done[arg]
        keys = list(pending)
        executor = self.executor
        if executor.scheduler == "threads":
            from dask.threaded import get

            values = get(graph, keys, pool=self._pool, num_workers=executor.num_workers,
                         **executor.dask_config)
        elif executor.scheduler == "processes":
            from dask.multiprocessing import get

            # Dask batches 6 tasks per submit to its pool by default, which runs
            # independent tasks one after another in one process: one per submit.
            config = dict({"chunksize": 1}, **executor.dask_config)
            values = get(graph, keys, pool=self._pool, **config)
        else:
            import dask

            values = dask.get(graph, keys)
        done.update(zip(keys, values))

    def wait(self, futures):
        with self._lock:
            if self._pending:
                self._compute()
        return self._resolve(futures)

    def _resolve(self, obj):
        if isinstance(obj, _Key):
            return self._done[obj.key]
        if isinstance(obj, list):
            return [self._resolve(o) for o in obj]
        if isinstance(obj, tuple):
            return tuple(self._resolve(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self._resolve(v) for k, v in obj.items()}
        return obj


def _load_cluster_class(value):
    if isinstance(value, str):
        module_name, _, attr = value.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError):
            raise ExecutorError(
                f"DaskExecutor(cluster_class={value!r}) cannot be imported; give a "
                "class, a callable, or a dotted path such as 'distributed.LocalCluster'"
            ) from None
    if not callable(value):
        raise ExecutorError(
            f"DaskExecutor(cluster_class={value!r}) is not callable; give a cluster "
            "class or a function that returns a cluster"
        )
    return value


class DaskExecutor(Executor):
    """Runs tasks on a `distributed` cluster: an existing one at `address`, or
    one started for the run from `cluster_class(**cluster_kwargs)`.

    Log records emitted by tasks on the workers are carried back with each
    task's state and logged in the flow's process.
    """

    in_other_process = True

    def __init__(self, address=None, cluster_class=None, cluster_kwargs=None,
                 adapt_kwargs=None, client_kwargs=None, debug=False):
        if address is not None and cluster_class is not None:
            raise ExecutorError(
                "DaskExecutor takes either address= (an existing cluster) or "
                "cluster_class= (start one), not both"
            )
        for name, value in (("cluster_kwargs", cluster_kwargs), ("adapt_kwargs", adapt_kwargs),
                            ("client_kwargs", client_kwargs)):
            if value is not None and not isinstance(value, dict):
                raise ExecutorError(
                    f"DaskExecutor({name}={value!r}) must be a dict of keyword arguments, "
                    f"e.g. {name}={{'n_workers': 2}}")
        self.address = address
        self.cluster_class = cluster_class
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.adapt_kwargs = dict(adapt_kwargs or {})
        self.client_kwargs = dict(client_kwargs or {})
        self.debug = debug

    def __repr__(self):
        where = self.address or getattr(self.cluster_class, "__name__", "LocalCluster")
        return f"<DaskExecutor {where}>"

    @contextlib.contextmanager
    def start(self):
        _import_dask("DaskExecutor")
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ExecutorError(
                "DaskExecutor needs the distributed package; install it with "
                "pip install 'distributed>=2024.1' (the [dask] extra of onebox-orchestrator)"
            ) from None
        cluster = None
        if self.address is not None:
            client = Client(self.address, **self.client_kwargs)
        else:
            factory = _load_cluster_class(self.cluster_class or LocalCluster)
            kwargs = dict(self.cluster_kwargs)
            if factory is LocalCluster:
                kwargs.setdefault("dashboard_address", None)
                kwargs.setdefault("silence_logs", logging.ERROR if not self.debug else logging.INFO)
            cluster = factory(**kwargs)
            if self.adapt_kwargs:
                cluster.adapt(**self.adapt_kwargs)
            client = Client(cluster, **self.client_kwargs)
        try:
            yield _DistributedSession(client)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


class _DistributedSession:
    """One run on a distributed cluster. Keys carry a token of their own, so
    runs from several processes sharing one cluster never mix results."""

    in_other_process = True

    def __init__(self, client):
        self.client = client
        self._prefix = f"orchestrator-{uuid.uuid4().hex[:12]}"
        self._counter = itertools.count()

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False,
                                  key=f"{self._prefix}-{next(self._counter)}")

    def map(self, fn, *iterables):
        """Submit one call per item in a single round trip to the scheduler."""
        n = min((len(i) for i in iterables), default=0)
        keys = [f"{self._prefix}-{next(self._counter)}" for _ in range(n)]
        return self.client.map(fn, *iterables, key=keys, pure=False)

    def wait(self, futures):
        """The futures' values. A task whose worker was lost more often than the
        cluster allows (dask raises KilledWorker; see the scheduler's
        `allowed-failures`) ends Failed, saying so, and the tasks that needed
        its result TriggerFailed: the run goes on to its end instead of failing
        whole with dask's error."""
        try:
            return self.client.gather(futures)
        except Exception as exc:
            if type(exc).__name__ != "KilledWorker":
                raise
        from distributed import wait as wait_all

        many = isinstance(futures, (list, tuple))
        wait_all(list(futures) if many else [futures])
        values = [self._outcome(f) for f in (futures if many else [futures])]
        return values if many else values[0]

    def _outcome(self, future):
        if future.status != "error":
            return future.result()
        exc = future.exception()
        if type(exc).__name__ != "KilledWorker":
            raise exc
        from ..core.states import Failed, TriggerFailed

        if getattr(exc, "task", None) != future.key:
            return TriggerFailed("An upstream task's Dask worker was lost while it ran "
                                 "(KilledWorker), so this task did not run.")
        times = getattr(exc, "allowed_failures", 0) + 1
        return Failed(
            f"The Dask worker running this task was lost {times} time(s) while it ran "
            "(KilledWorker: the cluster's distributed.scheduler.allowed-failures is "
            f"{times - 1}); a task that kills its worker, or runs it out of memory, "
            "does this. The task did not finish.", result=exc)
