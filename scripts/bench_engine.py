"""Engine benchmark: microseconds per no-op task on each executor.

    python scripts/bench_engine.py [--repeat 5] [--quick] [--json out.json]

Graphs: a chain of 1,000 and 10,000 tasks, a fan-out of 1,000 into one
reducer, `.map` over 10,000 and 100,000 items; on LocalExecutor and
LocalDaskExecutor(threads), with the same graph on `dask.threaded.get` as the
floor; and DaskExecutor on a 2-worker LocalCluster mapping over 1,000. Prints
the median of --repeat runs (whole `flow.run()`, graph freezing included) and
writes the figures as JSON (default bench-results/engine.json).
"""

import argparse
import logging
import os
import platform
import statistics
import sys
import time

from benchkit import write_json  # does not import orchestrator

os.environ.setdefault("ORCHESTRATOR__LOGGING__LEVEL", "WARNING")

from orchestrator import Flow, task  # noqa: E402
from orchestrator.executors import DaskExecutor, LocalDaskExecutor, LocalExecutor  # noqa: E402


@task
def noop(x=None):
    return x


@task
def reduce_all(xs):
    return len(xs)


def chain(n):
    with Flow(f"chain-{n}") as flow:
        t = noop()
        for _ in range(n - 1):
            t = noop(t)
    return flow, n


def fan_out(n):
    with Flow(f"fanout-{n}") as flow:
        reduce_all([noop(i) for i in range(n)])
    return flow, n + 2  # n no-ops, the list collector, the reducer


def mapped(n):
    with Flow(f"map-{n}") as flow:
        noop.map(list(range(n)))
    return flow, n + 1  # children and the constant list task


def _noop(*args):
    return None


def dask_floor(kind, n):
    """The same shape as a plain dask graph of no-op functions."""
    if kind == "chain":
        graph = {"t0": (_noop,)}
        graph.update({f"t{i}": (_noop, f"t{i - 1}") for i in range(1, n)})
        return graph, [f"t{n - 1}"], n
    if kind == "fanout":
        graph = {f"t{i}": (_noop, i) for i in range(n)}
        graph["reduce"] = (_noop, [f"t{i}" for i in range(n)])
        return graph, ["reduce"], n + 1
    graph = {"src": (_noop,)}
    graph.update({f"c{i}": (_noop, "src", i) for i in range(n)})
    return graph, [f"c{i}" for i in range(n)], n + 1


def median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_flow_checked(flow, executor):
    state = flow.run(executor=executor)
    if not state.is_successful():
        raise SystemExit(f"benchmark flow {flow.name} ended {state!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the 100,000 map")
    parser.add_argument("--json", default="bench-results/engine.json")
    parser.add_argument("--no-distributed", action="store_true")
    args = parser.parse_args()

    import dask.threaded

    cases = [("chain", 1000, chain), ("chain", 10000, chain), ("fanout", 1000, fan_out),
             ("map", 10000, mapped)]
    if not args.quick:
        cases.append(("map", 100000, mapped))
    rows = []
    for kind, n, build in cases:
        flow, n_tasks = build(n)
        repeat = args.repeat if n <= 10000 else max(3, args.repeat // 2)
        local = median_seconds(lambda: run_flow_checked(flow, LocalExecutor()), repeat)
        threads = median_seconds(
            lambda: run_flow_checked(flow, LocalDaskExecutor("threads")), repeat)
        graph, keys, floor_tasks = dask_floor(kind, n)
        floor = median_seconds(lambda: dask.threaded.get(graph, keys), repeat)
        rows.append({
            "graph": f"{kind} {n:,}", "tasks": n_tasks,
            "local_us": local / n_tasks * 1e6,
            "threads_us": threads / n_tasks * 1e6,
            "dask_floor_us": floor / floor_tasks * 1e6,
        })
        r = rows[-1]
        print(f"{r['graph']:>12}: local {r['local_us']:7.1f} us/task   "
              f"threads {r['threads_us']:7.1f}   dask floor {r['dask_floor_us']:7.1f}",
              file=sys.stderr, flush=True)

    distributed_row = None
    if not args.no_distributed:
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster:
            flow, n_tasks = mapped(1000)
            executor = DaskExecutor(address=cluster.scheduler_address)
            run_flow_checked(flow, executor)  # warm the workers' imports
            seconds = median_seconds(lambda: run_flow_checked(flow, executor), args.repeat)
        distributed_row = {"graph": "map 1,000", "tasks": n_tasks,
                           "dask_executor_us": seconds / n_tasks * 1e6}

    print()
    print(f"{'graph':>12} {'tasks':>8} {'Local us/task':>14} {'LocalDask(threads)':>19} "
          f"{'dask floor':>11} {'threads/floor':>14}")
    for r in rows:
        print(f"{r['graph']:>12} {r['tasks']:>8,} {r['local_us']:>14.1f} "
              f"{r['threads_us']:>19.1f} {r['dask_floor_us']:>11.1f} "
              f"{r['threads_us'] / r['dask_floor_us']:>13.2f}x")
    by_graph = {r["graph"]: r for r in rows}
    growth = {}
    if "chain 1,000" in by_graph and "chain 10,000" in by_graph:
        total = lambda r, k: r[k] * r["tasks"]  # noqa: E731
        for key in ("local_us", "threads_us"):
            growth[key] = total(by_graph["chain 10,000"], key) / total(by_graph["chain 1,000"], key)
        print(f"\nchain 10,000 / chain 1,000 total time: local {growth['local_us']:.1f}x, "
              f"threads {growth['threads_us']:.1f}x (linear is 10x)")
    if distributed_row:
        print(f"DaskExecutor, 2-worker LocalCluster, map 1,000: "
              f"{distributed_row['dask_executor_us']:.0f} us/task")
    out = write_json(args.json, {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "repeat": args.repeat, "rows": rows,
        "chain_growth_10k_over_1k": growth, "distributed": distributed_row,
    })
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
