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
import json
import math
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

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

API_LINE = re.compile(r"API:\s+(http://127\.0\.0\.1:\d+/api/health)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = ("Success", "Failed", "Cancelled", "TimedOut", "Skipped", "TriggerFailed",
            "Cached")


class Up:
    """An `orchestrator up --port 0` subprocess in `home`, output to files."""

    def __init__(self, home, *args):
        self.home = home
        self.env = dict(os.environ, ORCHESTRATOR_HOME=str(home))
        self.out = home / f"up-{time.monotonic_ns()}.out"
        self.spawned = time.perf_counter()
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "up", "--port", "0", *map(str, args)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.url = None

    def wait_healthy(self, timeout=30):
        """Seconds from spawn to a 200 from /api/health with the agent alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"orchestrator up exited:\n{self.out.read_text()}")
            if self.url is None:
                found = API_LINE.search(self.out.read_text())
                if found:
                    self.url = found.group(1)
            if self.url is not None:
                try:
                    with urllib.request.urlopen(self.url, timeout=2) as resp:
                        body = json.loads(resp.read())
                    if resp.status == 200 and body["agent"]["alive"]:
                        return time.perf_counter() - self.spawned
                except OSError:
                    pass
            time.sleep(0.005)
        raise SystemExit(f"orchestrator up did not become healthy:\n{self.out.read_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def new_home(flows_needed=True):
    home = Path(tempfile.mkdtemp(prefix="orchestrator-bench-services-"))
    if flows_needed:
        flows = home / "bench_flows.py"
        flows.write_text(FLOWS)
        env = dict(os.environ, ORCHESTRATOR_HOME=str(home))
        for args in (["project", "create", "bench"], ["register", "-p", "bench", flows]):
            proc = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)],
                                  env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"orchestrator {' '.join(map(str, args))}:\n{proc.stderr}")
    return home


def open_store(home):
    """The store of `home`, opened in this process (the database is per home)."""
    os.environ["ORCHESTRATOR_HOME"] = str(home)
    from orchestrator.store import Store

    return Store.open(home=home)


def percentile(values, pct):
    """Nearest-rank percentile (p99 of 50 samples is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


DEFAULT_POLL = 0.25  # `orchestrator up --poll-interval` default


def bench_latency(n, poll_interval):
    from orchestrator import service

    home = new_home()
    up = Up(home, "--poll-interval", poll_interval)
    store = open_store(home)
    # Triggers come at random moments, not in step with the agent's polls.
    rng = random.Random(1)
    try:
        startup = up.wait_healthy()
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

    home = new_home()
    up = Up(home, "--poll-interval", poll_interval, "--limit", limit)
    store = open_store(home)
    try:
        up.wait_healthy()
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


def proc_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def proc_cpu_seconds(pid):
    # Fields after the ")" of the command name: utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def bench_idle(idle_seconds, measure_seconds):
    home = new_home()
    up = Up(home)
    try:
        up.wait_healthy()
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
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out} in {results['bench_seconds']:.0f} s")


if __name__ == "__main__":
    main()
