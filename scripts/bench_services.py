"""Services benchmark: `orchestrator up` as the thing that runs flows.

    python scripts/bench_services.py [--quick] [--json bench-results/services.json]

1. Start-up: from spawning `orchestrator up --port 0` to a 200 from its
   health endpoint.
2. Trigger-to-start latency: a run is created from this process (another
   process than `up`, as with the CLI) and timed until its first task body
   starts (the task writes time.time() to a file); p50 and p99 over 50 runs,
   one at a time (each after a random pause of up to one poll interval, so
   triggers do not arrive in step with the agent's polls), with the agent's
   default poll interval (0.25 s) and with 0.1 s.
3. Throughput: 1,000 runs of a one-task flow created at once, run by `up`
   with `--limit 4`; runs per minute from the first creation to the last end.
4. Idle: a fresh `up` left alone for 60 s, then its RSS (VmRSS) and its CPU
   use over a further 30 s (utime + stime from /proc, % of one core).

`--quick` shrinks every count and wait for a smoke run. A table goes to
stdout, JSON to bench-results/services.json. Each part uses a temporary
ORCHESTRATOR_HOME of its own; every `up` it starts is stopped at the end.
"""

import argparse
import os
import platform
import random
import statistics
import textwrap
import time
from pathlib import Path

from benchkit import (
    ServiceProcess,
    new_home,
    open_store,
    percentile,
    print_rows,
    proc_rss_mb,
    write_json,
)

FLOWS = textwrap.dedent('''
    import time
    from orchestrator import Flow, Parameter, task

    @task
    def first(out):
        started = time.time()
        with open(out + ".tmp", "w") as fh:
            fh.write(repr(started))
        import os
        os.replace(out + ".tmp", out)

    @task
    def noop():
        return 1

    with Flow("latency") as latency_flow:
        first(Parameter("out"))

    with Flow("one-task") as one_task_flow:
        noop()
''')

HOME_PREFIX = "orchestrator-bench-services-"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = ("Success", "Failed", "Cancelled", "TimedOut", "Skipped", "TriggerFailed",
            "Cached")
DEFAULT_POLL = 0.25  # `orchestrator up --poll-interval` default


def bench_latency(n, poll_interval):
    from orchestrator import service

    home = new_home(HOME_PREFIX, FLOWS, project="bench")
    up = ServiceProcess(home, "up", "--poll-interval", poll_interval)
    store = open_store(home)
    # Triggers come at random moments, not in step with the agent's polls.
    rng = random.Random(1)
    try:
        startup = up.wait_healthy(need_agent=True)
        latencies = []
        for i in range(n):
            out = home / f"started-{i}"
            time.sleep(rng.uniform(0, poll_interval))
            created = time.time()
            run = service.create_flow_run(store, "latency", parameters={"out": str(out)})
            deadline = time.monotonic() + 60
            while not out.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run['id']} never started: "
                                     f"{store.get_flow_run(run['id'])}")
                time.sleep(0.002)
            latencies.append(float(out.read_text()) - created)
            while store.get_flow_run(run["id"])["state"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run['id']} never finished")
                time.sleep(0.01)  # one at a time: the next starts on an idle agent
            ended = store.get_flow_run(run["id"])
            if ended["state"] != "Success":
                raise SystemExit(f"run {run['id']} ended {ended['state']}: {ended['message']}")
    finally:
        up.stop()
        store.close()
    return startup, latencies


def bench_throughput(n, limit, poll_interval):
    from orchestrator import service

    home = new_home(HOME_PREFIX, FLOWS, project="bench")
    up = ServiceProcess(home, "up", "--poll-interval", poll_interval, "--limit", limit)
    store = open_store(home)
    try:
        up.wait_healthy(need_agent=True)
        started = time.perf_counter()
        ids = [service.create_flow_run(store, "one-task")["id"] for _ in range(n)]
        created = time.perf_counter() - started
        deadline = time.monotonic() + max(600, n * 2)
        while True:
            done = store.list_flow_runs(state=TERMINAL, limit=n + 1)
            if len(done) >= n:
                break
            if time.monotonic() > deadline or up.proc.poll() is not None:
                raise SystemExit(f"only {len(done)} of {n} runs finished")
            time.sleep(0.05)
        last_end = max(r["end_time"] for r in done)
        first_created = store.get_flow_run(ids[0])["created"]
        elapsed = last_end - first_created
        successes = sum(1 for r in done if r["state"] == "Success")
    finally:
        up.stop()
        store.close()
    return {"runs": n, "successes": successes, "limit": limit,
            "poll_interval": poll_interval, "create_seconds": created,
            "elapsed_seconds": elapsed, "runs_per_minute": n / elapsed * 60}


def proc_cpu_seconds(pid):
    # Fields after the ")" of the command name: utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def bench_idle(idle_seconds, measure_seconds):
    home = new_home(HOME_PREFIX, FLOWS, project="bench")
    up = ServiceProcess(home, "up")
    try:
        up.wait_healthy(need_agent=True)
        time.sleep(idle_seconds)
        rss_after_idle = proc_rss_mb(up.proc.pid)
        cpu_before, wall_before = proc_cpu_seconds(up.proc.pid), time.monotonic()
        time.sleep(measure_seconds)
        cpu_after, wall_after = proc_cpu_seconds(up.proc.pid), time.monotonic()
        rss_end = proc_rss_mb(up.proc.pid)
    finally:
        up.stop()
    return {"idle_seconds": idle_seconds, "measure_seconds": measure_seconds,
            "rss_mb": rss_after_idle, "rss_mb_at_end": rss_end,
            "cpu_percent": (cpu_after - cpu_before) / (wall_after - wall_before) * 100}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Small counts and short waits: a smoke run.")
    parser.add_argument("--json", default="bench-results/services.json")
    parser.add_argument("--limit", type=int, default=4,
                        help="`up --limit` for the throughput part.")
    args = parser.parse_args()
    n_latency, n_throughput = (10, 100) if args.quick else (50, 1000)
    idle, measure = (5, 5) if args.quick else (60, 30)
    began = time.perf_counter()

    startup, lat_default = bench_latency(n_latency, poll_interval=DEFAULT_POLL)
    _, lat_fast = bench_latency(n_latency, poll_interval=0.1)
    throughput = bench_throughput(n_throughput, args.limit, poll_interval=0.1)
    idle_figures = bench_idle(idle, measure)

    def latency(values, poll):
        return {"runs": len(values), "poll_interval": poll,
                "p50_ms": statistics.median(values) * 1000,
                "p99_ms": percentile(values, 99) * 1000,
                "min_ms": min(values) * 1000, "max_ms": max(values) * 1000}

    results = {
        "quick": args.quick, "cpus": os.cpu_count(), "python": platform.python_version(),
        "startup_to_healthy_seconds": startup,
        "latency_default_poll": latency(lat_default, DEFAULT_POLL),
        "latency_fast_poll": latency(lat_fast, 0.1),
        "throughput": throughput, "idle": idle_figures,
        "bench_seconds": time.perf_counter() - began,
    }
    d, f, t, i = (results["latency_default_poll"], results["latency_fast_poll"],
                  throughput, idle_figures)
    rows = [
        ("`up` start to healthy", f"{startup * 1000:.0f} ms"),
        (f"trigger-to-start, {d['runs']} runs, poll {DEFAULT_POLL:g} s (default)",
         f"p50 {d['p50_ms']:.0f} ms, p99 {d['p99_ms']:.0f} ms (target p50 < 300 ms)"),
        (f"trigger-to-start, {f['runs']} runs, poll 0.1 s",
         f"p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms (target p50 < 300 ms)"),
        (f"throughput, {t['runs']:,} one-task runs, --limit {t['limit']}",
         (f"{t['runs_per_minute']:,.0f} runs/min ({t['elapsed_seconds']:.1f} s, "
          f"{t['successes']:,} Success) on {os.cpu_count()} CPUs")),
        (f"idle after {i['idle_seconds']} s: RSS", f"{i['rss_mb']:.1f} MB (target < 80 MB)"),
        (f"idle: CPU over {i['measure_seconds']} s",
         f"{i['cpu_percent']:.2f} % of a core (target < 1 %)"),
    ]
    print_rows(rows)
    out = write_json(args.json, results)
    print(f"\nwrote {out} in {results['bench_seconds']:.0f} s")


if __name__ == "__main__":
    main()
