"""Scheduler benchmark: tick time with 1,000 active schedules and 100,000 late runs.

    python scripts/bench_scheduler.py [--flows 1000] [--late 100000] [--ticks 7]
                                      [--json bench-results/scheduler.json]

In a temporary ORCHESTRATOR_HOME (SQLite), with `--flows` flows whose
schedules mix cron (every minute, every 5 minutes, hourly, daily at 06:00
Berlin) and intervals (10 minutes, 1 hour), and late-run policies run_all,
run_latest and skip in turn:

1. first tick: creates every flow's horizon (10 runs and at least an hour).
2. steady tick: nothing to create; time moves on one second per tick.
3. 100,000 late runs (after a "downtime", spread over the flows and left
   Scheduled) with every flow on run_all: the ticks leave them alone.
4. the same 100,000 late runs with every flow on skip: ticks work them off
   in bounded batches; ms per tick while they do, and how many ticks it takes.

Medians of --ticks ticks (with the max); a table on stdout, JSON to
bench-results/scheduler.json. Time is injected: the benchmark never waits.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from benchkit import new_home, open_store, print_rows, write_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2024, 5, 1, 6, 0, tzinfo=timezone.utc).timestamp()
POLICIES = ("run_all", "run_latest", "skip")


def schedules():
    from orchestrator.schedules import CronSchedule, IntervalSchedule

    berlin = datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    return [CronSchedule("* * * * *"), CronSchedule("*/5 * * * *"), CronSchedule("0 * * * *"),
            CronSchedule("0 6 * * *", start_date=berlin),
            IntervalSchedule(timedelta(minutes=10)), IntervalSchedule(timedelta(hours=1))]


def setup_flows(store, count):
    """`count` flows registered straight into the store (no pickling: this is
    about the scheduler, not registration)."""
    store.create_project("bench")
    kinds = [s.to_ref() for s in schedules()]
    ids = []
    for i in range(count):
        record, _ = store.register_flow(
            "bench", f"flow-{i:04d}", f"fp-{i}", {"type": "Script", "path": "x.py"}, [], [],
            schedule=kinds[i % len(kinds)],
            settings={"late_runs": POLICIES[i % len(POLICIES)], "max_lateness": None})
        ids.append(record["id"])
    return ids


def set_policy(store, policy):
    from orchestrator.store import models as m

    with store.db.atomic():
        m.Flow.update(settings={"late_runs": policy, "max_lateness": None}).execute()


def seed_late_runs(store, flow_ids, total, end):
    """`total` Scheduled auto runs before `end`, spread evenly over the flows."""
    from orchestrator.store.scheduling import auto_run_key

    per_flow = total // len(flow_ids)
    rows = []
    for n, flow_id in enumerate(flow_ids):
        for i in range(per_flow):
            when = end - (i + 1) * 60.0
            rows.append((flow_id, f"late-{n}-{i}", "{}", "[]", "Scheduled", when,
                         auto_run_key("bench", f"flow-{n:04d}", when, ["seeded"]), 1, 0,
                         when, when))
    with store.db.atomic():
        store.db.cursor().executemany(
            "INSERT INTO flow_run (flow_id, name, parameters, labels, state, "
            "scheduled_start_time, idempotency_key, auto_scheduled, restarts, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def tick(scheduler, now):
    started = time.perf_counter()
    summary = scheduler.run_once(now=now)
    return (time.perf_counter() - started) * 1000, summary


def ticks(scheduler, now, count, expect_no_skips=False):
    """`count` ticks one second apart after `now`: their ms, and the last tick's now."""
    times = []
    for _ in range(count):
        now += 1
        ms, summary = tick(scheduler, now)
        if expect_no_skips:
            assert summary["skipped"] == 0, summary
        times.append(ms)
    return times, now


def stats(values):
    return {"ticks": len(values), "median_ms": statistics.median(values),
            "max_ms": max(values), "min_ms": min(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--late", type=int, default=100_000)
    parser.add_argument("--ticks", type=int, default=7)
    parser.add_argument("--json", default=str(ROOT / "bench-results" / "scheduler.json"))
    args = parser.parse_args()

    home = new_home("orchestrator-bench-scheduler-")
    store = open_store(home)
    from orchestrator.daemons.scheduler import Scheduler

    flow_ids = setup_flows(store, args.flows)
    scheduler = Scheduler(store, lock_path=home / "scheduler.lock")
    results = {"flows": args.flows, "late_runs": args.late, "python": platform.python_version(),
               "cpus": os.cpu_count(), "sqlite": __import__("sqlite3").sqlite_version}

    first_ms, first = tick(scheduler, NOW)
    results["first_tick"] = {"ms": first_ms, "created": first["created"]}

    steady, now = ticks(scheduler, NOW, args.ticks)
    results["steady_tick"] = stats(steady)

    # A downtime: the late runs, then time moves on by a day (every flow tops up).
    now += 24 * 3600
    seeded = seed_late_runs(store, flow_ids, args.late, end=now - 3600)
    results["late_runs_seeded"] = seeded
    set_policy(store, "run_all")
    catch_up_ms, catch_up = tick(scheduler, now)
    results["first_tick_after_downtime"] = {"ms": catch_up_ms, "created": catch_up["created"]}
    left_alone, now = ticks(scheduler, now, args.ticks, expect_no_skips=True)
    results["tick_with_late_runs_run_all"] = stats(left_alone)

    set_policy(store, "skip")
    working, skipped_total = [], 0
    while True:
        now += 1
        ms, summary = tick(scheduler, now)
        if summary["skipped"] == 0:
            break
        working.append(ms)
        skipped_total += summary["skipped"]
        if len(working) > 10_000:
            raise SystemExit("late runs were never worked off")
    results["ticks_skipping_late_runs"] = dict(stats(working), skipped=skipped_total,
                                               per_tick=scheduler.late_budget)
    after, now = ticks(scheduler, now, args.ticks)
    results["steady_tick_after_backlog"] = stats(after)

    rows = [
        ("flows with active schedules", f"{args.flows:,}"),
        ("first tick (creates every horizon)",
         f"{first_ms:,.0f} ms, {first['created']:,} runs created"),
        ("steady tick", f"median {statistics.median(steady):.1f} ms (max {max(steady):.1f})"),
        (f"tick with {seeded:,} late runs, run_all",
         f"median {statistics.median(left_alone):.1f} ms (max {max(left_alone):.1f})"),
        (f"ticks skipping {seeded:,} late runs (skip)",
         f"{len(working)} ticks, median {statistics.median(working):.0f} ms "
         f"(max {max(working):.0f}), {scheduler.late_budget:,} per tick"),
        ("steady tick after the backlog",
         f"median {statistics.median(after):.1f} ms (max {max(after):.1f})"),
    ]
    print_rows(rows)
    out = write_json(args.json, results)
    print(f"\nwrote {out} (home {home})")
    store.close()


if __name__ == "__main__":
    main()
