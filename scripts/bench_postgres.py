"""PostgreSQL benchmark: creating runs through the REST API and claiming them,
PostgreSQL beside SQLite, in the same run.

    python scripts/bench_postgres.py [--quick] [--requests 2000] [--runs 2000]
                                     [--repeats 3] [--postgres-url URL]
                                     [--json bench-results/postgres.json]

1. Create: `orchestrator server` on each database; POST /api/flow_runs from 1
   and from 8 client processes, each with one keep-alive connection (the
   clients of scripts/bench_api.py): requests/s over the wall time, p50, p99,
   errors.
2. Claim: --runs Scheduled runs, made through the store, claimed by 1 and by 4
   claimer processes, each calling `Store.claim_runs` as an agent's loop does
   (50 at a time, without starting the runs) until no run is left: claims/s is
   the runs over the wall time from a start barrier to the last claimer's end.
   Exactly once: afterwards every run is Submitted on attempt 1, and the
   claimers' lists hold each run once.

Each case and round gets a new database (a new home for SQLite, a new
database for PostgreSQL). PostgreSQL is a private server started for the
benchmark with PostgreSQL's default settings (fsync and synchronous_commit on:
a durable server), or --postgres-url. Medians of --repeats rounds; a table to
stdout and JSON to bench-results/postgres.json. For a figure beside a baseline
commit: `python scripts/bench_ab.py --baseline REV -- scripts/bench_postgres.py`.
"""

import argparse
import multiprocessing
import os
import platform
import statistics
import time

from bench_api import FLOW, FLOWS, run_case
from benchkit import (PrivatePostgres, ServiceProcess, forget_outside_api, new_home,
                      run_together, write_json)

HOME_PREFIX = "orchestrator-bench-postgres-home-"
CLAIM_BATCH = 50  # what an agent without --limit asks for at most


# -- claimers (each in a process of its own) ---------------------------------------------
def _claimer(home, url, name, barrier, results):
    try:
        os.environ["ORCHESTRATOR_HOME"] = home
        from orchestrator.store import Store
        from orchestrator.store import models as m

        store = Store.open(home=home, url=url)
        labels = sorted({label for flow in store.list_flows() for label in flow["labels"]})
        barrier.wait(120)
        began = time.monotonic()
        claimed = []
        while True:
            got = store.claim_runs(name, labels, CLAIM_BATCH)
            if got:
                claimed.extend(run_id for run_id, _attempt in got)
                continue
            # Nothing for this claimer now: done once no run is left to anyone.
            if not m.FlowRun.select().where(m.FlowRun.state == "Scheduled").exists():
                break
        ended = time.monotonic()
        store.close()
        results.put({"began": began, "ended": ended, "claimed": claimed})
    except BaseException as exc:  # the parent must hear of it rather than wait forever
        barrier.abort()
        results.put({"failed": f"{type(exc).__name__}: {exc}"})


def claim_round(ctx, home, url, runs, claimers):
    from orchestrator.store import Store
    from orchestrator.store import models as m

    store = Store.open(home=home, url=url)
    flow_id = store.get_flow(FLOW)["id"]
    for i in range(runs):
        store.create_flow_run(flow_id, parameters={"n": i})
    store.close()
    outs = run_together(ctx, _claimer, [(str(home), url, f"claimer-{i}")
                                         for i in range(claimers)], "claimer")
    claimed = [run_id for o in outs for run_id in o["claimed"]]
    store = Store.open(home=home, url=url)
    rows = list(m.FlowRun.select(m.FlowRun.state, m.FlowRun.attempt).tuples())
    store.close()
    once = (len(claimed) == len(set(claimed)) == runs
            and all(state == "Submitted" and attempt == 1 for state, attempt in rows))
    wall = max(o["ended"] for o in outs) - min(o["began"] for o in outs)
    return {"claims": len(claimed), "seconds": wall, "claims_per_second": len(claimed) / wall,
            "exactly_once": once,
            "per_claimer": sorted(len(o["claimed"]) for o in outs)}


# -- one database ------------------------------------------------------------------------
class Database:
    """A new home per round; on PostgreSQL also a new database, named by the URL in
    the environment of everything the round starts."""

    def __init__(self, kind, server):
        self.kind = kind
        self.server = server

    def new(self):
        url = self.server.new_database() if self.kind == "postgres" else None
        if url:
            os.environ["ORCHESTRATOR_DATABASE_URL"] = url
        else:
            os.environ.pop("ORCHESTRATOR_DATABASE_URL", None)
        home = new_home(HOME_PREFIX, FLOWS)
        return home, url


def create_round(db, ctx, clients, requests):
    home, _url = db.new()
    server = ServiceProcess(home, "server")
    try:
        server.wait_healthy()
        figures = run_case(ctx, "create", clients, requests, server.base_url, server.token,
                           None, offset=0)
        server.check_running()
    finally:
        server.stop()
    figures.pop("created")
    figures.pop("distinct_errors")
    return figures


CASES = [
    # (key, label, kind, processes)
    ("create_1", "REST create run, 1 client", "create", 1),
    ("create_8", "REST create run, 8 clients", "create", 8),
    ("claim_1", "claim runs, 1 claimer", "claim", 1),
    ("claim_4", "claim runs, 4 claimers", "claim", 4),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small counts: a smoke run.")
    parser.add_argument("--requests", type=int, default=None,
                        help="Creates per create case and round (default 2000; 300 quick).")
    parser.add_argument("--runs", type=int, default=None,
                        help="Runs claimed per claim case and round (default 2000; 300 quick).")
    parser.add_argument("--repeats", "--repeat", dest="repeats", type=int, default=None,
                        help="Rounds; medians are reported (default 3; 1 with --quick).")
    parser.add_argument("--postgres-url", default=None,
                        help="A PostgreSQL server (postgresql://user@host:port) to use "
                             "instead of a private one; a database is created per round.")
    parser.add_argument("--json", default="bench-results/postgres.json")
    args = parser.parse_args()
    requests = args.requests or (300 if args.quick else 2000)
    runs = args.runs or (300 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    if requests < 8 or runs < 4 or repeats < 1:
        parser.error("--requests must be at least 8, --runs at least 4, --repeats at least 1")
    forget_outside_api()
    ctx = multiprocessing.get_context("spawn")
    began = time.perf_counter()

    if args.postgres_url:
        server = PrivatePostgres.__new__(PrivatePostgres)
        server.url = args.postgres_url.rstrip("/")
        server.stop = lambda: None
    else:
        server = PrivatePostgres()
    rounds = {(kind, key): [] for kind in ("sqlite", "postgres") for key, *_ in CASES}
    try:
        for _ in range(repeats):
            for kind in ("sqlite", "postgres"):
                db = Database(kind, server)
                for key, _label, what, processes in CASES:
                    if what == "create":
                        figures = create_round(db, ctx, processes, requests)
                    else:
                        home, url = db.new()
                        figures = claim_round(ctx, home, url, runs, processes)
                    rounds[(kind, key)].append(figures)
    finally:
        server.stop()
        os.environ.pop("ORCHESTRATOR_DATABASE_URL", None)

    cases = []
    for key, label, what, processes in CASES:
        for kind in ("sqlite", "postgres"):
            figures = rounds[(kind, key)]
            rate = "requests_per_second" if what == "create" else "claims_per_second"
            case = {"name": f"{kind}: {label}", "database": kind, "case": key,
                    "processes": processes, "rounds": len(figures),
                    "per_second": statistics.median(f[rate] for f in figures)}
            if what == "create":
                case.update(p50_ms=statistics.median(f["p50_ms"] for f in figures),
                            p99_ms=statistics.median(f["p99_ms"] for f in figures),
                            errors=sum(f["errors"] for f in figures))
            else:
                case.update(exactly_once=all(f["exactly_once"] for f in figures))
            cases.append(case)

    results = {"quick": args.quick, "cpus": os.cpu_count(), "python": platform.python_version(),
               "requests_per_case": requests, "runs_per_claim_case": runs,
               "repeats": repeats, "postgres": "given" if args.postgres_url else "private",
               "cases": cases, "bench_seconds": time.perf_counter() - began}
    print(f"median of {repeats} round(s), {os.cpu_count()} CPUs; {requests:,} creates and "
          f"{runs:,} claims per case")
    header = ("case", "SQLite /s", "PostgreSQL /s", "PG p50 ms", "PG p99 ms", "checks")
    by = {(c["database"], c["case"]): c for c in cases}
    rows = []
    for key, label, what, _ in CASES:
        lite, pg = by[("sqlite", key)], by[("postgres", key)]
        if what == "create":
            check = f"errors {lite['errors']} / {pg['errors']}"
            p50, p99 = f"{pg['p50_ms']:.2f}", f"{pg['p99_ms']:.2f}"
        else:
            ok = lite["exactly_once"] and pg["exactly_once"]
            check = "exactly once" if ok else "NOT exactly once"
            p50 = p99 = ""
        rows.append((label, f"{lite['per_second']:,.0f}", f"{pg['per_second']:,.0f}", p50, p99,
                     check))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(f"{v:<{w}}" if i in (0, 5) else f"{v:>{w}}"
                        for i, (v, w) in enumerate(zip(row, widths))))
    out = write_json(args.json, results)
    print(f"\nwrote {out} in {results['bench_seconds']:.0f} s")


if __name__ == "__main__":
    main()
