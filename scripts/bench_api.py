"""API benchmark: the REST API as `orchestrator server` serves it, on loopback.

    python scripts/bench_api.py [--quick] [--requests 2000] [--repeats 3]
                                [--json bench-results/api.json]

1. Start-up: from spawning `orchestrator server --port 0` (a fresh home with
   project "p" and one registered flow) to a 200 from /api/health; median of
   5 starts.
2. Throughput and latency: POST /api/flow_runs and GET /api/flow_runs/{id}
   with 1 client and with 8 concurrent clients. Each client is a process of
   its own with one persistent HTTP/1.1 connection (`http.client`) and the
   bearer token of the home; requests/s is all requests over the wall time
   from a start barrier to the last finish; p50 and p99 of the per-request
   latencies; any non-2xx answer or exception is an error. The 1-client create
   again through `orchestrator.Client().create_flow_run` (which adds an
   idempotency key per call) shows the client's overhead. --requests per case,
   medians of --repeats rounds (the cases take turns within a round).
3. The server's RSS (VmRSS) after the load and after 2 s idle.
4. No run lost or duplicated: the runs in the store are exactly the runs the
   successful creates returned.

`--quick` shrinks the counts for a smoke run. A table goes to stdout, JSON to
bench-results/api.json. Each part uses a temporary ORCHESTRATOR_HOME of its
own; every server it starts is stopped at the end.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import statistics
import textwrap
import time

from benchkit import (
    ServiceProcess,
    forget_outside_api,
    new_home,
    open_store,
    percentile,
    print_log_problems,
    proc_rss_mb,
    run_together,
    write_json,
)

FLOWS = textwrap.dedent('''
    from orchestrator import Flow, Parameter, task

    @task
    def noop(n):
        return n

    with Flow("api-bench") as api_bench_flow:
        noop(Parameter("n"))
''')
FLOW = "p/api-bench"
HOME_PREFIX = "orchestrator-bench-api-"

MAX_DISTINCT_ERRORS = 5
IDLE_SECONDS = 2.0

# Targets (see the module docstring); None: no target for that figure.
START_TARGET_S = 0.5
RSS_TARGET_MB = 60
P99_TARGET_MS = 50
CASES = [
    # (key, label, kind, clients, req/s target)
    ("create_1", "create run (http.client)", "create", 1, 800),
    ("create_8", "create run (http.client)", "create", 8, 400),
    ("get_1", "get run (http.client)", "get", 1, None),
    ("get_8", "get run (http.client)", "get", 8, None),
    ("client_create_1", "create run (orchestrator.Client)", "client_create", 1, None),
]


# -- clients (each in a process of its own) ----------------------------------------------
class Errors:
    def __init__(self):
        self.count = 0
        self.distinct = {}

    def add(self, text):
        self.count += 1
        if text in self.distinct or len(self.distinct) < MAX_DISTINCT_ERRORS:
            self.distinct[text] = self.distinct.get(text, 0) + 1


def _raw_client(kind, base_url, token, n, offset, run_ids, barrier):
    """`n` requests on one keep-alive http.client connection; the timings and
    the ids of the runs created."""
    host, port = base_url.split("//", 1)[1].split(":")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
               "Content-Type": "application/json"}

    def connect():
        return http.client.HTTPConnection(host, int(port), timeout=30)

    conn = connect()
    conn.request("GET", "/api/health", headers=headers)  # open the connection: not timed
    conn.getresponse().read()
    errors, latencies, created = Errors(), [], []
    barrier.wait(120)
    began = time.monotonic()
    for i in range(n):
        if kind == "create":
            method, path = "POST", "/api/flow_runs"
            body = json.dumps({"flow": FLOW, "parameters": {"n": offset + i}}).encode()
        else:
            method, path, body = "GET", f"/api/flow_runs/{run_ids[(offset + i) % len(run_ids)]}", None
        start = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except Exception as exc:  # noqa: BLE001 - every failure is an error to count
            latencies.append(time.perf_counter() - start)
            errors.add(f"{method} {path.split('/')[2]}: {exc!r}")
            conn.close()
            conn = connect()
            continue
        latencies.append(time.perf_counter() - start)
        if not 200 <= resp.status < 300:
            errors.add(f"{method} {path.split('/')[2]}: HTTP {resp.status} {payload[:300]!r}")
            if resp.will_close:
                conn.close()
                conn = connect()
            continue
        try:
            run = json.loads(payload)
            run_id = run["id"]
        except (ValueError, KeyError, TypeError) as exc:
            errors.add(f"{method}: {resp.status} with a body that is not a run ({exc!r}): "
                       f"{payload[:200]!r}")
            continue
        if kind == "create":
            if resp.status != 201:
                errors.add(f"POST flow_runs: HTTP {resp.status} where 201 was expected")
                continue
            created.append(run_id)
        elif run_id != run_ids[(offset + i) % len(run_ids)]:
            errors.add(f"GET {path}: answered run {run_id}")
        if resp.will_close:  # the server ended keep-alive: count it, then go on
            errors.add(f"{method}: the server closed the keep-alive connection")
            conn.close()
            conn = connect()
    ended = time.monotonic()
    conn.close()
    return began, ended, latencies, errors, created


def _python_client(n, offset, barrier):
    """`n` creates through `orchestrator.Client()` (its own keep-alive connection)."""
    from orchestrator import Client

    client = Client()
    client.health()  # open the connection: not timed
    errors, latencies, created = Errors(), [], []
    barrier.wait(120)
    began = time.monotonic()
    for i in range(n):
        start = time.perf_counter()
        try:
            run = client.create_flow_run(FLOW, parameters={"n": offset + i})
        except Exception as exc:  # noqa: BLE001 - every failure is an error to count
            latencies.append(time.perf_counter() - start)
            errors.add(f"Client.create_flow_run: {exc!r}")
            continue
        latencies.append(time.perf_counter() - start)
        created.append(run["id"])
    ended = time.monotonic()
    client.close()
    return began, ended, latencies, errors, created


def _client_main(kind, base_url, token, n, offset, run_ids, barrier, results):
    try:
        if kind == "client_create":
            out = _python_client(n, offset, barrier)
        else:
            out = _raw_client(kind, base_url, token, n, offset, run_ids, barrier)
        began, ended, latencies, errors, created = out
        results.put({"began": began, "ended": ended, "latencies": latencies,
                     "errors": errors.count, "distinct_errors": errors.distinct,
                     "created": created})
    except BaseException as exc:  # the parent must hear of it rather than wait forever
        barrier.abort()
        results.put({"failed": f"{type(exc).__name__}: {exc}"})


def run_case(ctx, kind, clients, requests, base_url, token, run_ids, offset):
    """One round of one case: every client's figures put together."""
    shares = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    outs = run_together(ctx, _client_main, [
        (kind, base_url, token, n, offset + sum(shares[:i]), run_ids)
        for i, n in enumerate(shares)], f"{kind} client")
    latencies = [x for o in outs for x in o["latencies"]]
    distinct = {}
    for o in outs:
        for text, count in o["distinct_errors"].items():
            distinct[text] = distinct.get(text, 0) + count
    wall = max(o["ended"] for o in outs) - min(o["began"] for o in outs)
    return {"requests": len(latencies), "seconds": wall,
            "requests_per_second": len(latencies) / wall,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "max_ms": max(latencies) * 1000,
            "errors": sum(o["errors"] for o in outs), "distinct_errors": distinct,
            "created": [i for o in outs for i in o["created"]]}


# -- the parts ---------------------------------------------------------------------------
def bench_startup(starts):
    times = []
    for _ in range(starts):
        home = new_home(HOME_PREFIX, FLOWS)
        server = ServiceProcess(home, "server")
        try:
            times.append(server.wait_healthy())
        finally:
            server.stop()
    return times


def bench_load(requests, repeats):
    ctx = multiprocessing.get_context("spawn")
    home = new_home(HOME_PREFIX, FLOWS)
    os.environ["ORCHESTRATOR_HOME"] = str(home)  # for orchestrator.Client() in the clients
    server = ServiceProcess(home, "server")
    try:
        server.wait_healthy()
        token = server.token
        rss_start = proc_rss_mb(server.proc.pid)
        rounds = {key: [] for key, *_ in CASES}
        created = []
        for _ in range(repeats):
            for key, _label, kind, clients, _target in CASES:
                # GETs read runs the creates made (the first `requests` of them).
                run_ids = created[:requests] if kind == "get" else None
                if kind == "get" and not run_ids:
                    raise SystemExit("no run was created, so there is none to get")
                figures = run_case(ctx, kind, clients, requests, server.base_url, token,
                                   run_ids, offset=len(created))
                created.extend(figures.pop("created"))
                rounds[key].append(figures)
                server.check_running()
        rss_loaded = proc_rss_mb(server.proc.pid)
        time.sleep(IDLE_SECONDS)
        rss_idle = proc_rss_mb(server.proc.pid)
    finally:
        server.stop()
    problems = server.log_problems()

    store = open_store(home)
    try:
        from orchestrator.store import models as m

        stored = [r.id for r in m.FlowRun.select(m.FlowRun.id)]
    finally:
        store.close()
    stored_set, created_set = set(stored), set(created)
    runs = {"successful_creates": len(created), "distinct_ids_returned": len(created_set),
            "runs_in_store": len(stored),
            "returned_but_not_stored": sorted(created_set - stored_set)[:20],
            "stored_but_not_returned": sorted(stored_set - created_set)[:20]}
    runs["ok"] = (len(stored) == len(created) == len(created_set)
                  and stored_set == created_set)
    rss = {"after_start_mb": rss_start, "after_load_mb": rss_loaded,
           "after_idle_mb": rss_idle, "idle_seconds": IDLE_SECONDS}
    return rounds, rss, runs, problems, str(home)


def summarize(rounds):
    cases = []
    for key, label, kind, clients, target in CASES:
        runs = rounds[key]
        distinct = {}
        for r in runs:
            for text, count in r["distinct_errors"].items():
                distinct[text] = distinct.get(text, 0) + count
        case = {"case": key, "label": label, "kind": kind, "clients": clients,
                "requests_per_round": runs[0]["requests"], "rounds": len(runs),
                "requests_per_second": statistics.median(r["requests_per_second"] for r in runs),
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "max_ms": max(r["max_ms"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "first_errors": dict(list(distinct.items())[:MAX_DISTINCT_ERRORS]),
                "target_requests_per_second": target, "target_p99_ms": P99_TARGET_MS,
                "per_round": [{k: v for k, v in r.items() if k != "distinct_errors"}
                              for r in runs]}
        case["ok"] = (case["errors"] == 0 and case["p99_ms"] < P99_TARGET_MS
                      and (target is None or case["requests_per_second"] >= target))
        cases.append(case)
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Small counts: a smoke run.")
    parser.add_argument("--requests", type=int, default=None,
                        help="Requests per case and round (default 2000; 300 with --quick).")
    parser.add_argument("--repeats", "--repeat", dest="repeats", type=int, default=None,
                        help="Rounds of every case; medians are reported (default 3; "
                             "1 with --quick).")
    parser.add_argument("--starts", type=int, default=None,
                        help="Server starts timed (default 5; 2 with --quick).")
    parser.add_argument("--json", default="bench-results/api.json")
    args = parser.parse_args()
    requests = args.requests or (300 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    starts = args.starts or (2 if args.quick else 5)
    if requests < 8 or repeats < 1 or starts < 1:
        parser.error("--requests must be at least 8, --repeats and --starts at least 1")
    # The clients must reach the server this benchmark starts, with its token.
    forget_outside_api()
    began = time.perf_counter()

    start_times = bench_startup(starts)
    rounds, rss, runs, problems, home = bench_load(requests, repeats)
    cases = summarize(rounds)
    startup = statistics.median(start_times)

    results = {
        "quick": args.quick, "cpus": os.cpu_count(), "python": platform.python_version(),
        "requests_per_case": requests, "repeats": repeats,
        "startup": {"starts": starts, "median_seconds": startup, "seconds": start_times,
                    "target_seconds": START_TARGET_S, "ok": startup < START_TARGET_S},
        "rss": dict(rss, target_mb=RSS_TARGET_MB, ok=rss["after_idle_mb"] < RSS_TARGET_MB),
        "cases": cases, "runs_check": runs, "server_log_problems": problems[:20],
        "home": home, "bench_seconds": time.perf_counter() - began,
    }

    header = ("case", "clients", "req/s", "p50 ms", "p99 ms", "errors", "target", "ok?")
    rows = []
    for c in cases:
        target = (f">= {c['target_requests_per_second']}/s, " if c["target_requests_per_second"]
                  else "") + f"p99 < {P99_TARGET_MS} ms, 0 errors"
        rows.append((c["label"], str(c["clients"]), f"{c['requests_per_second']:,.0f}",
                     f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}", str(c["errors"]), target,
                     "ok" if c["ok"] else "NO"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"{requests:,} requests per case, median of {repeats} round(s), "
          f"{os.cpu_count()} CPUs")
    for row in [header, *rows]:
        print("  ".join(f"{v:<{w}}" if i in (0, 6, 7) else f"{v:>{w}}"
                        for i, (v, w) in enumerate(zip(row, widths))))
    for c in cases:
        for text, count in c["first_errors"].items():
            print(f"  {c['case']} error x{count}: {text}")

    r = results["rss"]
    lines = [
        (f"`server` start to healthy (median of {starts})",
         f"{startup * 1000:.0f} ms", f"< {START_TARGET_S * 1000:.0f} ms",
         results["startup"]["ok"]),
        (f"server RSS after load, then {IDLE_SECONDS:g} s idle",
         f"{r['after_load_mb']:.1f} MB, {r['after_idle_mb']:.1f} MB "
         f"(at start {r['after_start_mb']:.1f} MB)", f"< {RSS_TARGET_MB} MB", r["ok"]),
        ("runs in the store / successful creates",
         f"{runs['runs_in_store']:,} / {runs['successful_creates']:,} "
         f"({runs['distinct_ids_returned']:,} distinct ids)", "equal, same ids", runs["ok"]),
    ]
    print()
    width = max(len(line[0]) for line in lines)
    vwidth = max(len(line[1]) for line in lines)
    for name, value, target, ok in lines:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target:<16}  {'ok' if ok else 'NO'}")
    if not runs["ok"]:
        print(f"  returned but not stored: {runs['returned_but_not_stored']}; "
              f"stored but not returned: {runs['stored_but_not_returned']}")
    print_log_problems(problems)

    out = write_json(args.json, results)
    print(f"\nwrote {out} in {results['bench_seconds']:.0f} s (home {home})")


if __name__ == "__main__":
    main()
