"""Services benchmark: `orchestrator up` as the thing that runs flows, with
warm starts (run processes forked from the agent's warm-start process) and
with fresh interpreters (`ORCHESTRATOR__SERVICES__WARM_STARTS=false`), side by
side in one run.

    python scripts/bench_services.py [--quick] [--json bench-results/services.json]

1. Start-up: from spawning `orchestrator up --port 0` to a 200 from its
   health endpoint.
2. Trigger-to-start latency: a run is created and timed until its first task
   body starts (the task writes time.time() to a file); p50 and p99 over 50
   runs, one at a time (each after a random pause of up to 50 ms), created
   (a) from this process, as the CLI or a script on the host does (the agent
   hears of it through the store's doorbell), and (b) over REST (`up`'s API
   wakes its agent).
3. Throughput: 1,000 runs of a one-task flow created at once, run by `up`
   with `--limit 4`; runs per second from the first creation to the last end,
   and the CPU the run processes used per run (the children's CPU as /proc
   counts it for `up` and for its warm-start process, less the warm-start
   process's own when one ends: the 1,000th run retires it).
4. Memory of a run process: the unique set size (private pages, from
   /proc/PID/smaps_rollup) of the process of a one-task flow whose task waits.
5. Idle: a fresh `up` left alone for 60 s, then its RSS (VmRSS, with its
   warm-start process's beside it) and its CPU use over a further 30 s (utime +
   stime from /proc, % of one core).

`--quick` shrinks every count and wait for a smoke run. A table goes to
stdout, JSON to bench-results/services.json. Each part uses a temporary
ORCHESTRATOR_HOME of its own; every `up` it starts is stopped at the end.
"""

import argparse
import json
import os
import platform
import random
import statistics
import textwrap
import time
import urllib.request
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

    @task
    def wait(out):
        import os
        with open(out, "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(2)

    with Flow("latency") as latency_flow:
        first(Parameter("out"))

    with Flow("one-task") as one_task_flow:
        noop()

    with Flow("waiting") as waiting_flow:
        wait(Parameter("out"))
''')

HOME_PREFIX = "orchestrator-bench-services-"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = ("Success", "Failed", "Cancelled", "TimedOut", "Skipped", "TriggerFailed",
            "Cached")
MODES = {"warm": {"ORCHESTRATOR__SERVICES__WARM_STARTS": "true"},
         "fresh": {"ORCHESTRATOR__SERVICES__WARM_STARTS": "false"}}


def start_up(mode, *args):
    home = new_home(HOME_PREFIX, FLOWS, project="bench")
    up = ServiceProcess(home, "up", *args, env=MODES[mode])
    try:
        store = open_store(home)
        startup = up.wait_healthy(need_agent=True)
        if mode == "warm":
            wait_for_zygote(up.proc.pid)
    except BaseException:
        up.stop()
        raise
    return home, up, store, startup


def wait_for_zygote(parent, timeout=30):
    """The pid of `parent`'s warm-start process, once it has said it is ready
    (its command line then ends in `zygote ready`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children_of(parent):
            if cmdline(pid)[-2:] == ["zygote", "ready"]:
                return pid
        time.sleep(0.01)
    raise SystemExit("the warm-start process never became ready")


def children_of(pid):
    """The children of every thread of process `pid`."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def cmdline(pid):
    try:
        return [p.decode() for p in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if p]
    except OSError:
        return []


def rest_create(up, flow, parameters):
    request = urllib.request.Request(
        up.base_url + "/api/flow_runs", method="POST",
        data=json.dumps({"flow": flow, "parameters": parameters}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {up.token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def bench_latency(mode, n, via):
    from orchestrator import service

    home, up, store, startup = start_up(mode)
    rng = random.Random(1)
    try:
        latencies = []
        for i in range(n):
            out = home / f"started-{i}"
            time.sleep(rng.uniform(0, 0.05))
            created = time.time()
            if via == "rest":
                run = rest_create(up, "bench/latency", {"out": str(out)})
            else:
                run = service.create_flow_run(store, "latency", parameters={"out": str(out)})
            deadline = time.monotonic() + 60
            while not out.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run['id']} never started: "
                                     f"{store.get_flow_run(run['id'])}")
                time.sleep(0.0005)
            latencies.append(float(out.read_text()) - created)
            while store.get_flow_run(run["id"])["state"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run['id']} never finished")
                time.sleep(0.005)  # one at a time: the next starts on an idle agent
            ended = store.get_flow_run(run["id"])
            if ended["state"] != "Success":
                raise SystemExit(f"run {run['id']} ended {ended['state']}: {ended['message']}")
    finally:
        up.stop()
        store.close()
    return startup, latencies


def children_cpu_seconds(pid):
    """CPU of `pid`'s children it has waited for (cutime + cstime); 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def run_processes_cpu_seconds(up_pid, zygotes_seen=None):
    """CPU of the run processes `up` has had so far: its waited-for children
    (fresh run processes, and warm-start processes that ended, with theirs), plus
    what its live warm-start processes' waited-for children used. A warm-start
    process that ended counts in `up`'s children with its own CPU (its imports,
    its rehearsal, its forks), which is not a run process's: `zygotes_seen`
    ({pid: its own CPU when last seen}, kept up to date here) takes it out."""
    zygotes = [p for p in children_of(up_pid) if "zygote" in cmdline(p)]
    total = children_cpu_seconds(up_pid) + sum(map(children_cpu_seconds, zygotes))
    if zygotes_seen is None:
        return total
    for pid in zygotes:
        try:
            zygotes_seen[pid] = proc_cpu_seconds(pid)
        except OSError:
            pass
    return total - sum(cpu for pid, cpu in zygotes_seen.items() if pid not in zygotes)


def bench_throughput(mode, n, limit):
    from orchestrator import service

    home, up, store, _ = start_up(mode, "--limit", limit)
    zygotes = {}
    try:
        cpu_before = run_processes_cpu_seconds(up.proc.pid, zygotes)
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
            run_processes_cpu_seconds(up.proc.pid, zygotes)  # (each one's own CPU, kept)
            time.sleep(0.02)
        time.sleep(0.5)  # the last processes are waited for
        cpu_after = run_processes_cpu_seconds(up.proc.pid, zygotes)
        last_end = max(r["end_time"] for r in done)
        first_created = store.get_flow_run(ids[0])["created"]
        elapsed = last_end - first_created
        successes = sum(1 for r in done if r["state"] == "Success")
    finally:
        up.stop()
        store.close()
    return {"runs": n, "successes": successes, "limit": limit, "create_seconds": created,
            "elapsed_seconds": elapsed, "runs_per_second": n / elapsed,
            "child_cpu_ms_per_run": (cpu_after - cpu_before) / n * 1000}


def unique_set_mb(pid):
    """Private (unshared) memory of `pid`: Private_Clean + Private_Dirty."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def bench_memory(mode, samples):
    from orchestrator import service

    home, up, store, _ = start_up(mode)
    sizes = []
    try:
        for i in range(samples):
            out = home / f"pid-{i}"
            run = service.create_flow_run(store, "waiting", parameters={"out": str(out)})
            deadline = time.monotonic() + 60
            while not out.exists() or not out.read_text():
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run['id']} never started")
                time.sleep(0.01)
            time.sleep(0.5)  # its task is waiting: the process has done all it will
            sizes.append(unique_set_mb(int(out.read_text())))
            while store.get_flow_run(run["id"])["state"] not in TERMINAL:
                time.sleep(0.05)
    finally:
        up.stop()
        store.close()
    return statistics.median(sizes)


def proc_cpu_seconds(pid):
    # Fields after the ")" of the command name: utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def bench_idle(idle_seconds, measure_seconds):
    home, up, store, _ = start_up("warm")
    store.close()
    try:
        zygote = wait_for_zygote(up.proc.pid)
        time.sleep(idle_seconds)
        rss_after_idle = proc_rss_mb(up.proc.pid)
        zygote_rss = proc_rss_mb(zygote)
        pids = (up.proc.pid, zygote)
        cpu_before, wall_before = sum(map(proc_cpu_seconds, pids)), time.monotonic()
        time.sleep(measure_seconds)
        cpu_after, wall_after = sum(map(proc_cpu_seconds, pids)), time.monotonic()
        rss_end = proc_rss_mb(up.proc.pid)
    finally:
        up.stop()
    return {"idle_seconds": idle_seconds, "measure_seconds": measure_seconds,
            "rss_mb": rss_after_idle, "rss_mb_at_end": rss_end,
            "zygote_rss_mb": zygote_rss,
            "cpu_percent": (cpu_after - cpu_before) / (wall_after - wall_before) * 100}


def latency_figures(values):
    return {"runs": len(values), "p50_ms": statistics.median(values) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "min_ms": min(values) * 1000, "max_ms": max(values) * 1000}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Small counts and short waits: a smoke run.")
    parser.add_argument("--json", default="bench-results/services.json")
    parser.add_argument("--limit", type=int, default=4,
                        help="`up --limit` for the throughput part.")
    args = parser.parse_args()
    n_latency, n_throughput, n_memory = (10, 100, 2) if args.quick else (50, 1000, 5)
    idle, measure = (5, 5) if args.quick else (60, 30)
    began = time.perf_counter()

    results = {"quick": args.quick, "cpus": os.cpu_count(),
               "python": platform.python_version()}
    for mode in MODES:
        startup, local = bench_latency(mode, n_latency, via="store")
        _, rest = bench_latency(mode, n_latency, via="rest")
        results[mode] = {
            "startup_to_healthy_seconds": startup,
            "latency_local": latency_figures(local), "latency_rest": latency_figures(rest),
            "throughput": bench_throughput(mode, n_throughput, args.limit),
            "run_process_uss_mb": bench_memory(mode, n_memory),
        }
    results["idle"] = bench_idle(idle, measure)
    results["bench_seconds"] = time.perf_counter() - began

    w, f, i = results["warm"], results["fresh"], results["idle"]

    def both(pick, unit, digits=0):
        a, b = pick(w), pick(f)
        return f"{a:,.{digits}f} {unit}  |  {b:,.{digits}f} {unit}  ({a / b:.2f}x)"

    rows = [
        ("", "warm  |  fresh (warm/fresh)"),
        ("`up` start to healthy", both(lambda r: r["startup_to_healthy_seconds"] * 1000, "ms")),
    ]
    for key, what in (("latency_local", "created on the host"), ("latency_rest", "over REST")):
        rows += [
            (f"trigger-to-first-task p50, {w[key]['runs']} runs {what}",
             both(lambda r, k=key: r[k]["p50_ms"], "ms", 1) + "  (target warm <= 10 ms)"),
            (f"trigger-to-first-task p99, {w[key]['runs']} runs {what}",
             both(lambda r, k=key: r[k]["p99_ms"], "ms", 1) + "  (target warm <= 50 ms)"),
        ]
    rows += [
        (f"throughput, {w['throughput']['runs']:,} one-task runs, --limit {args.limit}",
         both(lambda r: r["throughput"]["runs_per_second"], "runs/s", 1)
         + "  (target warm >= 100)"),
        ("CPU of the run processes, per run",
         both(lambda r: r["throughput"]["child_cpu_ms_per_run"], "ms", 1)
         + "  (target warm <= 10 ms)"),
        ("run process unique set size (median)",
         both(lambda r: r["run_process_uss_mb"], "MB", 1) + "  (target warm <= 10 MB)"),
        (f"idle after {i['idle_seconds']} s: RSS",
         f"{i['rss_mb']:.1f} MB, warm-start process {i['zygote_rss_mb']:.1f} MB"),
        (f"idle: CPU over {i['measure_seconds']} s",
         f"{i['cpu_percent']:.2f} % of a core (target < 1 %)"),
    ]
    print_rows(rows)
    out = write_json(args.json, results)
    print(f"\nwrote {out} in {results['bench_seconds']:.0f} s")


if __name__ == "__main__":
    main()
