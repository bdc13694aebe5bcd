"""Scale benchmark: every listing the API, the CLI and the web page make, at 1k,
100k and 1M runs; each should cost the same at every size.

    python scripts/bench_scale.py [--quick] [--sizes 1000,100000,1000000]
                                  [--repeats 9] [--json bench-results/scale.json]

1. Seeding: one database a size (1k, 100k and 1M finished runs), each in a
   temporary ORCHESTRATOR_HOME of its own. Five flows of two versions each; every run has 3 task
   runs, 4 state events and 5 log lines; 85% Success, 10% Failed, 5%
   Cancelled; one run a minute of scheduled time. Rows go in through the
   store's own multi-row INSERTs (`Store._insert_rows`, as a run's reporter
   writes them), 5,000 runs a transaction; the time each step took is reported.
2. Listings: every GET the web page and REST clients make (with each filter of
   /api/flow_runs: flow, several states, since/until, a cursor half-way down),
   through the falcon app in this process (`falcon.testing`, no socket: the
   figure is the app and the store), and every CLI listing through click's
   runner, also in this process. Median of --repeats samples of 5 calls each,
   after one warm-up, with the garbage collector held off; the sizes take
   turns sample by sample, so a busy machine slows each size alike.
   The time windows and cursors sit half-way through the history at every size.
3. Bytes: the database file per run at each size, and at the largest size the
   bytes per run of each index of the run tables (SQLite's dbstat), with the
   foreign-key indexes schema 10 dropped built once more to weigh them.

A table with each listing's growth factor from the smallest to the largest
size (target: 1.3x or less) goes to stdout, JSON to bench-results/scale.json.
`--quick` runs 1k/10k/100k.
"""

import argparse
import gc
import os
import platform
import sqlite3
import statistics
import time
from pathlib import Path

from benchkit import new_home, open_store, write_json

HOME_PREFIX = "orchestrator-bench-scale-"
FLOWS = 5
T0 = 1_700_000_000.0      # the first run's scheduled start
STEP = 60.0               # one run a minute
RUNS_PER_TXN = 5000
GROWTH_TARGET = 1.3
BATCH = 5                 # calls a sample (see time_listings)
TASKS = ("extract-1", "transform-1", "load-1")
# The foreign-key indexes schema 10 dropped, and the listing indexes it added.
DROPPED = {"flow_run_flow_id": ("flow_run", "flow_id"),
           "state_event_flow_run_id": ("state_event", "flow_run_id"),
           "log_flow_run_id": ("log", "flow_run_id"),
           "artifact_flow_run_id": ("artifact", "flow_run_id")}
ADDED = ("flow_run_flow_id_state_id", "flow_run_scheduled_start_time_id",
         "flow_run_flow_id_scheduled_start_time_id")


def _iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# -- seeding ------------------------------------------------------------------------------
def setup_flows(store):
    """Five flows, each registered twice (the first version archived); returns
    [(old version id, current version id)]."""
    store.create_project("p")
    flows = []
    for i in range(FLOWS):
        old = store.register_flow("p", f"flow-{i}", "fp-1", {}, [], [])[0]["id"]
        new = store.register_flow("p", f"flow-{i}", "fp-2", {}, [], [])[0]["id"]
        flows.append((old, new))
    return flows


def _state(i):
    r = (i // FLOWS) % 20  # the same mix of states in every flow
    return "Success" if r < 17 else ("Failed" if r < 19 else "Cancelled")


def seed(store, flows, first, last):
    """Runs first..last-1 (ids first+1..last), finished, with their task runs,
    state events and log lines."""
    run_cols = ("id", "flow_id", "name", "parameters", "labels", "state", "message",
                "scheduled_start_time", "start_time", "end_time", "auto_scheduled", "restarts",
                "attempt", "created", "updated")
    task_cols = ("flow_run_id", "task_slug", "task_name", "map_index", "state", "run_count",
                 "start_time", "end_time")
    event_cols = ("flow_run_id", "task_slug", "map_index", "state", "message", "time")
    log_cols = ("flow_run_id", "task_slug", "map_index", "time", "level", "logger", "message")
    for start in range(first, last, RUNS_PER_TXN):
        runs, tasks, events, logs = [], [], [], []
        for i in range(start, min(start + RUNS_PER_TXN, last)):
            run_id = i + 1
            old, new = flows[i % FLOWS]
            flow_id = old if (i // FLOWS) % 10 < 3 else new
            when = T0 + i * STEP
            state = _state(i)
            runs.append((run_id, flow_id, f"run-{run_id}", "{}", "[]", state,
                         None if state == "Success" else f"{state} on purpose", when, when + 1,
                         when + 5, bool(i % 2), 0, 1, when - 30, when + 5))
            for n, slug in enumerate(TASKS):
                tasks.append((run_id, slug, slug[:-2], -1, "Success", 1, when + 1 + n,
                              when + 2 + n))
            for n, moved in enumerate(("Scheduled", "Submitted", "Running", state)):
                events.append((run_id, None, None, moved, None, when + n))
            for n in range(5):
                slug = TASKS[n % 3]
                logs.append((run_id, slug, -1, when + 1 + n / 10, 20, "orchestrator.task",
                             f"{slug}: step {n} of run {run_id} done"))
        with store.db.atomic():
            store._insert_rows("flow_run", run_cols, runs)
            store._insert_rows("task_run", task_cols, tasks)
            store._insert_rows("state_event", event_cols, events)
            store._insert_rows('"log"', log_cols, logs)


# -- timing --------------------------------------------------------------------------------
def api_cases(n, flows):
    """(name, path) of every GET the web page and REST clients make, at size n."""
    middle = T0 + (n // 2) * STEP
    # Six hours half-way back: the same runs in the window at every size (1k runs
    # span 16 hours), so each size lists as many.
    since, until = _iso(middle - 3 * 3600), _iso(middle + 3 * 3600)
    cursor = n // 2
    run = cursor
    flow = "p/flow-0"
    return [
        ("GET /api/flows", "/api/flows"),
        ("GET /api/flows?archived=true", "/api/flows?archived=true"),
        ("GET /api/flows/{id}", f"/api/flows/{flows[0][1]}"),
        ("GET /api/flow_runs", "/api/flow_runs?limit=50"),
        ("GET /api/flow_runs cursor", f"/api/flow_runs?limit=50&cursor={cursor}"),
        ("GET /api/flow_runs flow", f"/api/flow_runs?limit=50&flow={flow}"),
        ("GET /api/flow_runs flow cursor", f"/api/flow_runs?limit=50&flow={flow}&cursor={cursor}"),
        ("GET /api/flow_runs state", "/api/flow_runs?limit=50&state=Failed"),
        ("GET /api/flow_runs 2 states", "/api/flow_runs?limit=50&state=Failed&state=Cancelled"),
        ("GET /api/flow_runs 2 states cursor",
         f"/api/flow_runs?limit=50&state=Failed&state=Cancelled&cursor={cursor}"),
        ("GET /api/flow_runs flow 2 states",
         f"/api/flow_runs?limit=50&flow={flow}&state=Failed&state=Cancelled"),
        ("GET /api/flow_runs since until", f"/api/flow_runs?limit=50&since={since}&until={until}"),
        ("GET /api/flow_runs since until cursor",
         f"/api/flow_runs?limit=50&since={since}&until={until}&cursor={cursor}"),
        ("GET /api/flow_runs until", f"/api/flow_runs?limit=50&until={until}"),
        ("GET /api/flow_runs flow since until",
         f"/api/flow_runs?limit=50&flow={flow}&since={since}&until={until}"),
        ("GET /api/flow_runs state since until",
         f"/api/flow_runs?limit=50&state=Failed&since={since}&until={until}"),
        ("GET /api/flow_runs flow 2 states since until",
         (f"/api/flow_runs?limit=50&flow={flow}&state=Failed&state=Cancelled"
          f"&since={since}&until={until}")),
        ("GET /api/flow_runs/{id}", f"/api/flow_runs/{run}"),
        ("GET /api/flow_runs/{id}/task_runs", f"/api/flow_runs/{run}/task_runs"),
        ("GET /api/flow_runs/{id}/states", f"/api/flow_runs/{run}/states"),
        ("GET /api/flow_runs/{id}/artifacts", f"/api/flow_runs/{run}/artifacts"),
        ("GET /api/flow_runs/{id}/logs", f"/api/flow_runs/{run}/logs?cursor=0&level=DEBUG"),
        ("GET /api/flow_runs/{id}/explain", f"/api/flow_runs/{run}/explain"),
        ("GET /api/agents", "/api/agents"),
        ("GET /api/concurrency_limits", "/api/concurrency_limits"),
    ]


def cli_cases(n):
    run = str(n // 2)
    return [
        ("orchestrator flows", ["flows"]),
        ("orchestrator flows --all", ["flows", "--all"]),
        ("orchestrator runs", ["runs"]),
        ("orchestrator runs --flow", ["runs", "--flow", "p/flow-0"]),
        ("orchestrator runs --state x2", ["runs", "--state", "Failed", "--state", "Cancelled"]),
        ("orchestrator runs --flow --state", ["runs", "--flow", "p/flow-0", "--state", "Failed"]),
        ("orchestrator show RUN", ["show", run]),
        ("orchestrator logs RUN", ["logs", run]),
        ("orchestrator agents", ["agents"]),
    ]


def _sample_ms(call, batch=BATCH):
    started = time.perf_counter()
    for _ in range(batch):
        call()
    return (time.perf_counter() - started) * 1000 / batch


def time_listings(stores, repeats):
    """{size: {listing: median ms}}. Sizes take turns within each round, so a
    busy machine slows every size alike and the growth factors hold."""
    from click.testing import CliRunner
    from falcon import testing

    from orchestrator.api import create_app
    from orchestrator.cli import main
    from orchestrator.store import models

    def use(n):
        # One process, several databases: point the models at this size's.
        os.environ["ORCHESTRATOR_HOME"] = str(stores[n]["home"])
        models.database.initialize(stores[n]["store"].db)

    calls = {}  # listing -> {size: call}
    runner = CliRunner()
    for n, entry in stores.items():
        client = testing.TestClient(create_app(entry["store"], token="bench"),
                                    headers={"Authorization": "Bearer bench"})
        for name, path in api_cases(n, entry["flows"]):
            def get(path=path, client=client):
                answer = client.simulate_get(path)
                if answer.status_code != 200:
                    raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
            calls.setdefault(name, {})[n] = get
        for name, args in cli_cases(n):
            def run_cli(args=args):
                done = runner.invoke(main, args, catch_exceptions=False)
                if done.exit_code != 0:
                    raise SystemExit(f"orchestrator {' '.join(args)}: {done.output[-300:]}")
            calls.setdefault(name, {})[n] = run_cli
    results = {n: {} for n in stores}
    for name, by_size in calls.items():
        samples = {n: [] for n in stores}
        for n, call in by_size.items():  # warm-up: caches, prepared queries
            use(n)
            call()
        gc.collect()
        gc.disable()  # a collection inside one sample is noise, not the listing
        try:
            for _ in range(repeats):
                for n, call in by_size.items():
                    use(n)
                    samples[n].append(_sample_ms(call))
        finally:
            gc.enable()
        for n in stores:
            results[n][name] = statistics.median(samples[n])
    return results


# -- bytes ---------------------------------------------------------------------------------
def db_bytes(path):
    raw = sqlite3.connect(path)
    try:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    return os.path.getsize(path)


def index_bytes(path, n):
    """Bytes per run of each index of the run tables (dbstat), with the dropped
    foreign-key indexes built once more (then dropped) to weigh them."""
    raw = sqlite3.connect(path)
    try:
        try:
            raw.execute("SELECT 1 FROM dbstat LIMIT 1")
        except sqlite3.OperationalError:
            return None  # this SQLite has no dbstat
        for name, (table, column) in DROPPED.items():
            raw.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("{column}")')
        raw.commit()
        sizes = {name: size / n for name, size in raw.execute(
            "SELECT s.name, SUM(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name "
            "WHERE m.tbl_name IN ('flow_run', 'task_run', 'state_event', 'log') "
            "GROUP BY s.name ORDER BY s.name")}
        for name in DROPPED:
            raw.execute(f'DROP INDEX "{name}"')
        raw.commit()
        return sizes
    finally:
        raw.close()


# -- main ----------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k, 10k and 100k runs")
    parser.add_argument("--sizes", help="comma-separated run counts, ascending")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", default="bench-results/scale.json")
    args = parser.parse_args()
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [1_000, 10_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000])

    stores, seeding, per_run = {}, {}, {}
    for n in sizes:
        home = new_home(HOME_PREFIX)
        store = open_store(home)
        store.register_agent("edge-1", ["edge"], "bench-host", os.getpid())
        store.set_concurrency_limit("edge", 4)
        flows = setup_flows(store)
        started = time.perf_counter()
        seed(store, flows, 0, n)
        seeding[n] = time.perf_counter() - started
        print(f"seeded {n:,} runs in {seeding[n]:.1f} s "
              f"({n / max(seeding[n], 1e-9):,.0f} runs/s)", flush=True)
        path = Path(home) / "orchestrator.db"
        per_run[n] = db_bytes(path) / n
        stores[n] = {"home": home, "store": store, "flows": flows, "path": path}
    figures = time_listings(stores, args.repeats)
    indexes = index_bytes(stores[sizes[-1]]["path"], sizes[-1])
    small, large = sizes[0], sizes[-1]
    names = list(figures[small])
    width = max(len(name) for name in names)
    head = "".join(f"{f'{n:,} runs':>13}" for n in sizes)
    print(f"\n{'listing (median ms)':<{width}}{head}{'growth':>9}")
    rows, slow = [], []
    for name in names:
        values = [figures[n][name] for n in sizes]
        growth = values[-1] / values[0]
        mark = "" if growth <= GROWTH_TARGET else "  over 1.3x"
        if mark:
            slow.append(name)
        print(f"{name:<{width}}" + "".join(f"{v:13.2f}" for v in values)
              + f"{growth:8.2f}x{mark}")
        rows.append({"listing": name, "ms": {str(n): round(figures[n][name], 3) for n in sizes},
                     "growth": round(growth, 3)})
    print(f"\n{'database bytes per run':<{width}}"
          + "".join(f"{per_run[n]:13.0f}" for n in sizes))
    print(f"{'seeding seconds':<{width}}" + "".join(f"{seeding[n]:13.1f}" for n in sizes))
    if indexes:
        dropped = sum(v for k, v in indexes.items() if k in DROPPED)
        added = sum(v for k, v in indexes.items() if k in ADDED)
        print(f"\nindex bytes per run at {large:,} runs (dbstat):")
        for name, value in indexes.items():
            note = " (dropped by schema 10)" if name in DROPPED else (
                " (added by schema 10)" if name in ADDED else "")
            print(f"  {name:<48}{value:8.1f}{note}")
        if added:  # (on a database before schema 10 the dropped ones are there)
            print(f"  dropped {dropped:.1f}, added {added:.1f}: database bytes per run "
                  f"before schema 10 about {per_run[large] - added + dropped:.0f}, after "
                  f"{per_run[large]:.0f} (the dropped ones weighed as freshly built)")
    print(f"\n{len(names) - len(slow)} of {len(names)} listings within {GROWTH_TARGET}x "
          f"from {small:,} to {large:,} runs" + (f"; over: {', '.join(slow)}" if slow else ""))
    out = write_json(args.json, {
        "bench": "scale", "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "sizes": sizes, "repeats": args.repeats,
        "seeding_seconds": {str(n): round(seeding[n], 2) for n in sizes},
        "bytes_per_run": {str(n): round(per_run[n], 1) for n in sizes},
        "index_bytes_per_run": indexes, "listings": rows,
        "growth_target": GROWTH_TARGET, "over_target": slow})
    print(f"JSON: {out}")
    for entry in stores.values():
        entry["store"].close()


if __name__ == "__main__":
    main()
