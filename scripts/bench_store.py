"""Store benchmark: running flows from the database, and querying it.

    python scripts/bench_store.py [--repeat 3] [--json out.json]

1. A registered flow mapping a no-op task over 10,000 items, executed with
   `orchestrator execute RUN_ID` (a fresh process, as an agent runs it): task
   runs recorded per second, and the run's time against the same flow under
   `flow.run()` in one process.
2. Database bytes per task run.
3. A task logging 100,000 lines: `orchestrator execute` (stored) against
   `flow.run()` (printed only).
4. `orchestrator runs` with 100,000 runs in the store.

Medians of --repeat runs; a table on stdout, JSON to bench-results/store.json.
Everything happens in a temporary ORCHESTRATOR_HOME.
"""

import argparse
import json
import os
import statistics
import sys
import textwrap
import time

from benchkit import cli, new_home, open_store, print_rows, write_json

FLOWS = textwrap.dedent('''
    from orchestrator import Flow, task, get_logger

    @task
    def noop(x):
        return x

    @task
    def chatty(n):
        log = get_logger()
        for i in range(n):
            log.info("line %d of the burst", i)

    with Flow("map-10k") as map_flow:
        noop.map(list(range(10000)))

    with Flow("log-burst") as log_flow:
        chatty(100000)
''')


def median(values):
    return statistics.median(values)


def orchestrator(home, *args):
    """`orchestrator ARGS` in `home`, checked: the finished process and its wall seconds."""
    start = time.perf_counter()
    proc = cli(home, *args)
    return proc, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default="bench-results/store.json")
    args = parser.parse_args()

    # For the CLI runs (benchkit.cli passes this environment on) and for this process.
    os.environ["ORCHESTRATOR__LOGGING__LEVEL"] = "INFO"
    home = new_home("orchestrator-bench-", FLOWS, project="bench")
    store = open_store(home)  # also sets ORCHESTRATOR_HOME here

    sys.path.insert(0, str(home))
    import bench_flows  # noqa: E402
    devnull = open(os.devnull, "w")

    def in_process(flow):
        saved = sys.stderr
        sys.stderr = devnull  # printing is part of both runs; keep the terminal quiet
        try:
            start = time.perf_counter()
            state = flow.run()
            took = time.perf_counter() - start
        finally:
            sys.stderr = saved
        assert state.is_successful(), state
        return took

    def from_store(flow_name):
        run = json.loads(orchestrator(home, "run", flow_name, "--json")[0].stdout)
        _, wall = orchestrator(home, "execute", run["id"])
        stored = store.get_flow_run(run["id"])
        assert stored["state"] == "Success", stored
        return stored["end_time"] - stored["start_time"], wall, run["id"]

    # 1. 10,000 mapped tasks
    size_before = db_bytes(home, store)
    runs_map = [from_store("map-10k") for _ in range(args.repeat)]
    size_after = db_bytes(home, store)
    task_runs = len(store.task_runs(runs_map[0][2]))
    local_map = median([in_process(bench_flows.map_flow) for _ in range(args.repeat)])
    run_time = median([r[0] for r in runs_map])
    wall_time = median([r[1] for r in runs_map])
    bytes_per_task_run = (size_after - size_before) / (task_runs * args.repeat)

    # 3. log burst
    runs_logs = [from_store("log-burst") for _ in range(args.repeat)]
    stored_lines = len(store.logs(runs_logs[0][2], limit=200000))
    local_logs = median([in_process(bench_flows.log_flow) for _ in range(args.repeat)])
    logs_time = median([r[0] for r in runs_logs])

    # 4. `orchestrator runs` over 100,000 runs
    seed_runs(store, 100000)
    list_times = [orchestrator(home, "runs")[1] for _ in range(max(5, args.repeat))]
    in_process_list = []
    for _ in range(max(5, args.repeat)):
        start = time.perf_counter()
        store.list_flow_runs(limit=20)
        in_process_list.append(time.perf_counter() - start)
    version_times = [orchestrator(home, "--version")[1] for _ in range(max(5, args.repeat))]

    results = {
        "map_10k_task_runs": task_runs,
        "map_10k_execute_run_seconds": run_time,
        "map_10k_execute_wall_seconds": wall_time,
        "map_10k_task_runs_per_second": task_runs / run_time,
        "map_10k_flow_run_seconds": local_map,
        "map_10k_ratio_to_flow_run": run_time / local_map,
        "db_bytes_per_task_run": bytes_per_task_run,
        "log_burst_lines_stored": stored_lines,
        "log_burst_execute_seconds": logs_time,
        "log_burst_flow_run_seconds": local_logs,
        "log_burst_ratio": logs_time / local_logs,
        "runs_cli_seconds_100k_runs": median(list_times),
        "runs_query_seconds_100k_runs": median(in_process_list),
        "cli_startup_seconds": median(version_times),
    }
    rows = [
        ("map 10,000: task runs recorded", f"{task_runs:,}"),
        ("map 10,000: `execute` run time", f"{run_time:.2f} s ({task_runs / run_time:,.0f} task runs/s)"),
        ("map 10,000: `execute` wall time (process)", f"{wall_time:.2f} s"),
        ("map 10,000: flow.run() in one process", f"{local_map:.2f} s"),
        ("map 10,000: execute / flow.run()", f"{run_time / local_map:.2f}x (target <= 3x)"),
        ("database bytes per task run", f"{bytes_per_task_run:,.0f}"),
        ("100,000 log lines: stored", f"{stored_lines:,}"),
        ("100,000 log lines: execute / flow.run()",
         f"{logs_time:.2f} s / {local_logs:.2f} s = {logs_time / local_logs:.2f}x (target <= 2x)"),
        ("`orchestrator runs`, 100,000 runs stored", f"{median(list_times) * 1000:.0f} ms "
         f"(query {median(in_process_list) * 1000:.1f} ms; `--version` "
         f"{median(version_times) * 1000:.0f} ms)"),
    ]
    print_rows(rows)
    out = write_json(args.json, results)
    print(f"\nwrote {out} (home {home})")


def db_bytes(home, store):
    store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in home.glob("orchestrator.db*"))


def seed_runs(store, n):
    """Add n finished runs quickly (one transaction, bulk inserts)."""
    from orchestrator.store import models as m

    flow_id = store.get_flow("map-10k")["id"]
    now = time.time()
    rows = [dict(flow=flow_id, name=f"seed-{i}", parameters={}, labels=[], state="Success",
                 scheduled_start_time=now - i, start_time=now - i, end_time=now - i + 1,
                 created=now - i, updated=now - i) for i in range(n)]
    with store.atomic():
        for i in range(0, n, 500):
            m.FlowRun.insert_many(rows[i:i + 500]).execute()


if __name__ == "__main__":
    main()
