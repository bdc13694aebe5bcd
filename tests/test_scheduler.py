"""The scheduler service (orchestrator.daemons.scheduler) on a real store.

Time is injected (`run_once(now=...)`); nothing sleeps for time to pass.
Concurrency is tested with real processes.
"""

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import Clock, claim, end_run

from orchestrator import Flow, Parameter, service, task
from orchestrator.schedules import (CronClock, CronSchedule, IntervalSchedule,
                                    Schedule, ScheduleError)
from orchestrator.daemons.scheduler import Scheduler
from orchestrator.store.scheduling import auto_run_key

ROOT = Path(__file__).resolve().parent.parent
UTC = timezone.utc
NOW = Clock.START  # 2024-05-01 06:00 UTC, where the `clock` fixture starts
MINUTE, HOUR = 60.0, 3600.0


@task
def greet(day):
    return f"hello {day}"


@task
def shout(text):
    return text.upper()


def make_flow(schedule, changed=False, name="daily", **settings):
    with Flow(name, schedule=schedule, **settings) as flow:
        text = greet(Parameter("day", default="today"))
        if changed:
            shout(text)
    return flow


@pytest.fixture
def scheduler(store, home):
    s = Scheduler(store, lock_path=home / "scheduler.lock")
    yield s
    s.release()


def register(store, flow):
    record, _ = service.register_flow(store, flow, "etl")
    return record


def auto_runs(store, state="Scheduled"):
    """Auto-scheduled runs in `state` (all states when None), by start time."""
    query = ("SELECT id, flow_id, scheduled_start_time, state, message, parameters, labels, "
             "idempotency_key, name, end_time FROM flow_run WHERE auto_scheduled = 1"
             + (" AND state = ?" if state else "") + " ORDER BY scheduled_start_time, id")
    cursor = store.db.execute_sql(query, (state,) if state else ())
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def times(runs):
    return [r["scheduled_start_time"] for r in runs]


def count(store, sql, *params):
    return store.db.execute_sql(sql, params).fetchone()[0]


# -- creating runs ahead of time -------------------------------------------------------
def test_a_tick_creates_the_next_10_runs_when_they_cover_the_hour(store, scheduler):
    flow = register(store, make_flow(IntervalSchedule(timedelta(minutes=10),
                                                      start_date=datetime(2024, 1, 1,
                                                                          tzinfo=UTC))))
    summary = scheduler.run_once(now=NOW)
    runs = auto_runs(store)
    assert summary["created"] == 10
    assert times(runs) == [NOW + i * 10 * MINUTE for i in range(10)]  # 06:00 (due now) .. 07:30
    assert {r["flow_id"] for r in runs} == {flow["id"]}
    first = store.get_flow_run(runs[0]["id"])
    assert first["auto_scheduled"] and first["state"] == "Scheduled"
    assert first["name"] and not first["name"].startswith("~")
    assert first["idempotency_key"] == "auto:etl/daily:2024-05-01T06:00:00Z"
    assert [e["state"] for e in store.state_events(first["id"])] == ["Scheduled"]


def test_a_tick_creates_at_least_an_hour_of_runs_when_10_do_not_cover_it(store, scheduler):
    register(store, make_flow(IntervalSchedule(timedelta(minutes=1),
                                               start_date=datetime(2024, 1, 1, tzinfo=UTC))))
    scheduler.run_once(now=NOW)
    assert times(auto_runs(store)) == [NOW + i * MINUTE for i in range(61)]  # 06:00 .. 07:00


def test_a_daily_schedule_gets_its_next_10_days(store, scheduler):
    register(store, make_flow(CronSchedule("0 6 * * *")))
    scheduler.run_once(now=NOW + 1)
    assert times(auto_runs(store)) == [NOW + i * 24 * HOUR for i in range(1, 11)]


def test_ticking_again_creates_nothing_new_and_time_passing_tops_up(store, scheduler, clock):
    register(store, make_flow(CronSchedule("*/10 * * * *")))
    scheduler.run_once(now=clock.now)
    before = auto_runs(store)
    assert scheduler.run_once(now=clock.now)["created"] == 0
    assert auto_runs(store) == before
    # 5 s on, the 06:00 run is no longer ahead: one more keeps 10 ahead.
    clock.advance(5)
    assert scheduler.run_once(now=clock.now)["created"] == 1
    assert scheduler.run_once(now=clock.now)["created"] == 0
    # 25 minutes on: 06:30 .. 07:40 are ahead; two more keep 10 ahead.
    clock.advance(25 * MINUTE)
    assert scheduler.run_once(now=clock.now)["created"] == 2
    assert times(auto_runs(store)) == [NOW + i * 10 * MINUTE for i in range(13)]
    assert len({r["idempotency_key"] for r in auto_runs(store)}) == 13


def test_a_very_frequent_schedule_is_capped(store, home):
    register(store, make_flow(IntervalSchedule(0.5, start_date=datetime(2024, 1, 1, tzinfo=UTC))))
    capped = Scheduler(store, lock_path=home / "s.lock", max_future_runs=300)
    capped.run_once(now=NOW)
    assert len(auto_runs(store)) == 300
    assert capped.run_once(now=NOW)["created"] == 0


def test_a_daily_cron_across_the_autumn_change_makes_one_run_that_day(store, scheduler):
    ny = ZoneInfo("America/New_York")
    register(store, make_flow(CronSchedule("30 1 * * *", start_date=datetime(2024, 1, 1,
                                                                              tzinfo=ny))))
    scheduler.run_once(now=datetime(2024, 11, 1, 12, tzinfo=ny))
    days = [datetime.fromtimestamp(t, ny).strftime("%m-%d %H:%M") for t in
            times(auto_runs(store))]
    assert days == [f"11-{d:02d} 01:30" for d in range(2, 12)]


def test_clock_parameters_and_labels_reach_the_runs(store, scheduler):
    schedule = Schedule(clocks=[
        CronClock("0 7 * * *", parameter_defaults={"day": "monday"}, labels=["gpu"]),
        CronClock("0 7 * * *", parameter_defaults={"day": "other"}),
        CronClock("0 8 * * *"),
    ])
    flow = register(store, make_flow(schedule))
    scheduler.run_once(now=NOW)
    runs = [store.get_flow_run(r["id"]) for r in auto_runs(store)[:3]]
    assert [(r["scheduled_start_time"] - NOW, r["parameters"], r["labels"]) for r in runs] == [
        (HOUR, {"day": "monday"}, ["gpu"]),
        (HOUR, {"day": "other"}, flow["labels"]),
        (2 * HOUR, {}, flow["labels"]),  # the flow's own defaults apply when it starts
    ]
    assert len({r["idempotency_key"] for r in runs}) == 3


def test_clock_parameters_the_flow_does_not_have_are_refused_at_registration(store):
    from orchestrator.exceptions import ParameterError

    schedule = Schedule(clocks=[CronClock("0 7 * * *", parameter_defaults={"dya": 1}),
                                CronClock("0 8 * * *")])
    with pytest.raises(ParameterError, match=r"'dya' \(did you mean 'day'\?\)"):
        register(store, make_flow(schedule))
    assert auto_runs(store) == []


def test_a_required_parameter_without_a_value_from_the_clock_is_refused_at_registration(
        store):
    from orchestrator.exceptions import ParameterError

    with Flow("needs", schedule=CronSchedule("0 * * * *")) as flow:
        greet(Parameter("day"))
    with pytest.raises(ParameterError, match="required parameter 'day'"):
        register(store, flow)


def test_a_flow_whose_stored_schedule_is_damaged_does_not_stop_the_others(
        store, scheduler, log_records, clock):
    broken = register(store, make_flow(CronSchedule("0 * * * *"), name="broken"))
    register(store, make_flow(CronSchedule("0 * * * *")))
    store.db.execute_sql("UPDATE flow SET schedule = ? WHERE id = ?",
                         ('{"clocks": [{"type": "MoonClock"}]}', broken["id"]))
    assert scheduler.run_once(now=clock.now)["created"] == 10
    scheduler.run_once(now=clock.advance(1))
    errors = [m for m in log_records.messages("orchestrator.daemons.scheduler")
              if "etl/broken" in m]
    assert errors == ["Scheduler: flow etl/broken: its stored schedule cannot be read (Stored "
                      "clock {'type': 'MoonClock'} is not one of CronClock, DatesClock, "
                      "IntervalClock; register the flow again)"]


def test_run_loops_over_ticks_until_stopped_and_then_gives_the_lock_up(store, home):
    import threading

    class StopAfterOneTick(threading.Event):
        def wait(self, timeout=None):  # called between ticks: stop instead of waiting
            self.set()
            return True

    register(store, make_flow(CronSchedule("0 * * * *")))
    looping = Scheduler(store)
    looping.run(StopAfterOneTick())
    assert len(auto_runs(store)) == 10
    other = Scheduler(store)
    assert other.is_leader() is True
    other.release()


# -- a bad schedule fails early ------------------------------------------------------------
def test_a_bad_cron_fails_when_the_flow_is_built_naming_the_field():
    with pytest.raises(ScheduleError, match=r"CronClock cron '61 \* \* \* \*': minute field 61 "
                                            "is out of range 0-59"):
        make_flow(CronSchedule("61 * * * *"))


def test_registering_a_file_with_a_bad_cron_exits_2_with_the_message_and_no_traceback(
        store, tmp_path):
    path = tmp_path / "bad_schedule.py"
    path.write_text(textwrap.dedent("""
        from orchestrator import Flow, task
        from orchestrator.schedules import CronSchedule

        @task
        def hello():
            return 1

        with Flow("bad", schedule=CronSchedule("0 25 * * *")) as flow:
            hello()
    """))
    result = cli("register", "-p", "etl", str(path))
    assert result.returncode == 2
    assert "hour field 25 is out of range 0-23" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert store.list_flows() == []


# -- pausing and resuming --------------------------------------------------------------------
def test_pausing_deletes_the_future_runs_and_resuming_recreates_them(store, scheduler, clock):
    flow = register(store, make_flow(CronSchedule("0 * * * *")))
    scheduler.run_once(now=clock.now)
    assert len(auto_runs(store)) == 10  # 06:00 (due now) .. 15:00
    manual = store.create_flow_run(flow["id"], scheduled_start_time=NOW + 5 * HOUR)["id"]

    paused, deleted = store.set_schedule_active("daily", False, now=clock.now)
    assert deleted == 9 and paused["schedule_active"] is False
    assert times(auto_runs(store)) == [NOW]  # the due one stays: it is not in the future
    assert store.get_flow_run(manual)["state"] == "Scheduled"  # not auto-scheduled
    clock.advance(60)
    assert scheduler.run_once(now=clock.now)["created"] == 0
    assert store.scheduled_flows() == []

    _, deleted = store.set_schedule_active("etl/daily", True, now=clock.now)
    assert deleted == 0
    assert scheduler.run_once(now=clock.now)["created"] == 10
    assert times(auto_runs(store)) == [NOW + i * HOUR for i in range(11)]


def test_schedule_pause_and_resume_from_the_command_line(store, scheduler):
    register(store, make_flow(CronSchedule("0 * * * *")))
    scheduler.run_once()  # real time: the CLI deletes runs after the real now
    assert len(auto_runs(store)) == 10

    paused = cli("schedule", "pause", "daily", "-p", "etl")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("Paused the schedule of etl/daily; deleted 10 future runs.")
    assert auto_runs(store) == []
    assert scheduler.run_once()["created"] == 0

    resumed = cli("schedule", "resume", "etl/daily")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("Resumed the schedule of etl/daily")
    assert scheduler.run_once()["created"] == 10


def test_schedule_pause_of_an_unknown_or_unscheduled_flow_exits_2_saying_why(store):
    with Flow("plain") as flow:
        greet("x")
    register(store, flow)
    unknown = cli("schedule", "pause", "plian")
    assert unknown.returncode == 2 and "No flow named 'plian'. Did you mean 'plain'?" in \
        unknown.stderr
    plain = cli("schedule", "resume", "plain")
    assert plain.returncode == 2
    assert "Flow etl/plain has no schedule to resume" in plain.stderr
    assert "Traceback" not in unknown.stderr + plain.stderr


# -- new versions -------------------------------------------------------------------------------
def test_registering_a_changed_version_does_not_duplicate_future_runs(store, scheduler, clock):
    v1 = register(store, make_flow(CronSchedule("0 * * * *")))
    scheduler.run_once(now=clock.now)
    v2 = register(store, make_flow(CronSchedule("0 * * * *"), changed=True))
    assert v2["version"] == 2

    summary = scheduler.run_once(now=clock.advance(MINUTE))
    runs = auto_runs(store)
    assert times(runs) == [NOW + i * HOUR for i in range(11)]  # 06:00 (due) .. 16:00, once each
    assert {r["flow_id"] for r in runs} == {v2["id"]}  # the due 06:00 run now runs version 2
    assert (summary["adopted"], summary["deleted"]) == (1, 9)
    # A scheduler that starts afresh (another process) finds nothing to do.
    again = Scheduler(store, lock_path=Path(store.db.database).parent / "other.lock")
    assert again.run_once(now=clock.now) == dict(summary, created=0, adopted=0, deleted=0,
                                                   skipped=0)
    assert auto_runs(store) == runs
    assert v1["id"] != v2["id"]


def test_a_new_version_with_another_schedule_replaces_the_future_runs(store, scheduler, clock):
    register(store, make_flow(CronSchedule("0 * * * *")))
    scheduler.run_once(now=clock.advance(1))
    register(store, make_flow(CronSchedule("30 * * * *")))
    scheduler.run_once(now=clock.advance(1))
    assert times(auto_runs(store)) == [NOW + 30 * MINUTE + i * HOUR for i in range(10)]


def test_a_run_that_already_ran_is_not_created_again_by_a_new_version(store, scheduler):
    register(store, make_flow(CronSchedule("0 * * * *")))
    scheduler.run_once(now=NOW - HOUR)
    ran = auto_runs(store)[1]  # 06:00
    end_run(store, ran["id"], "Success")
    store.set_schedule_active("daily", False, now=NOW - 30 * MINUTE)
    store.set_schedule_active("daily", True)
    register(store, make_flow(CronSchedule("0 * * * *"), changed=True))
    scheduler.run_once(now=NOW - 30 * MINUTE)  # a tick from before 06:00 comes late
    at_six = [r for r in auto_runs(store, state=None) if r["scheduled_start_time"] == NOW]
    assert [r["state"] for r in at_six] == ["Success"]


def test_auto_run_keys_name_the_version_group_and_the_time():
    assert auto_run_key("etl", "daily", NOW) == "auto:etl/daily:2024-05-01T06:00:00Z"
    assert auto_run_key("etl", "daily", NOW + 0.25) == "auto:etl/daily:2024-05-01T06:00:00.250000Z"
    with_values = auto_run_key("etl", "daily", NOW, [{"day": "x"}, []])
    assert with_values.startswith("auto:etl/daily:2024-05-01T06:00:00Z:")
    assert with_values != auto_run_key("etl", "daily", NOW, [{"day": "y"}, []])
    # "a/b" + "c" and "a" + "b/c" are different flows; long names still fit the column.
    assert auto_run_key("a/b", "c", NOW) != auto_run_key("a", "b/c", NOW)
    assert len(auto_run_key("p" * 200, "n" * 200, NOW, [{"x": 1}, ["gpu"]])) < 100


# -- two schedulers ---------------------------------------------------------------------------
SCHEDULER_PROCESS = """
import sys
from orchestrator.store import Store
from orchestrator.daemons.scheduler import Scheduler

store = Store.open()
scheduler = Scheduler(store, lock_path=sys.argv[1])
start, ticks = float(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # all processes start ticking together
created = 0
for i in range(ticks):
    created += scheduler.run_once(now=start + i * 60)["created"]
print(created, flush=True)
"""


def test_schedulers_in_three_processes_at_once_create_no_duplicate_run(store, tmp_path, home):
    register(store, make_flow(CronSchedule("* * * * *")))
    script = tmp_path / "scheduler_process.py"
    script.write_text(SCHEDULER_PROCESS)
    ticks = 150
    processes = [subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / f"lock-{i}"), str(NOW), str(ticks)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env=_env()) for i in range(3)]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err for _, err in outputs]
    assert all("locked" not in err for _, err in outputs)

    runs = auto_runs(store)
    expected = [NOW + i * MINUTE for i in range(ticks - 1 + 61)]  # up to the last tick + 1 h
    assert times(runs) == expected  # each minute once: no duplicate, none missing
    assert sum(int(out.split()[-1]) for out, _ in outputs) == len(expected)
    assert count(store, "SELECT COUNT(*) FROM state_event") == len(expected)


def test_one_scheduler_per_database_holds_the_lock_until_it_stops(store, home, tmp_path):
    script = tmp_path / "leader.py"
    script.write_text(textwrap.dedent("""
        import sys
        from orchestrator.store import Store
        from orchestrator.daemons.scheduler import Scheduler
        scheduler = Scheduler(Store.open())  # the lock lives as long as the scheduler
        print(scheduler.is_leader(), flush=True)
        sys.stdin.readline()
    """))
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
    try:
        assert child.stdout.readline().strip() == "True"
        here = Scheduler(store)
        # Beside the database file: every process opening it shares the lock.
        assert here.leadership.where == f"{home / 'orchestrator.db'}.scheduler.lock"
        assert here.is_leader() is False
        assert here.is_leader() is False
    finally:
        child.communicate("stop\n", timeout=30)
    assert here.is_leader() is True
    second = Scheduler(store)
    assert second.is_leader() is False  # one per database, even within a process
    here.release()
    assert second.is_leader() is True
    second.release()


# -- late runs ---------------------------------------------------------------------------------
def downtime(store, scheduler, clock, policy, max_lateness=None, hours=3):
    """Runs of a 10-minute schedule made at 06:00 (the clock's start), then a tick
    `hours` later, where the clock is left: the runs of 06:00 .. 07:30 were never
    claimed."""
    flow = register(store, make_flow(CronSchedule("*/10 * * * *"), late_runs=policy,
                                     max_lateness=max_lateness))
    scheduler.run_once(now=clock.now)
    summary = scheduler.run_once(now=clock.advance(hours * HOUR))
    late = [r for r in auto_runs(store, state=None) if r["scheduled_start_time"] < NOW + 2 * HOUR]
    return flow, summary, late


def test_run_all_leaves_late_runs_to_run(store, scheduler, clock):
    _, summary, late = downtime(store, scheduler, clock, "run_all")
    assert summary["skipped"] == 0
    assert [r["state"] for r in late] == ["Scheduled"] * 10


def test_run_all_skips_runs_later_than_max_lateness_saying_so(store, scheduler, clock):
    _, summary, late = downtime(store, scheduler, clock, "run_all",
                                max_lateness=timedelta(hours=2))
    # At 09:00, runs before 07:00 are more than 2 hours late.
    assert [r["state"] for r in late] == ["Skipped"] * 6 + ["Scheduled"] * 4
    assert summary["skipped"] == 6
    assert late[0]["message"] == (
        "Skipped: it would have started 10800 s late, more than max_lateness 7200 s of flow "
        "etl/daily; raise max_lateness to run such runs")
    assert late[5]["message"].startswith("Skipped: it would have started 7800 s late")
    events = store.state_events(late[0]["id"])
    assert [(e["state"], e["message"]) for e in events] == [
        ("Scheduled", "Scheduled by the flow's schedule"), ("Skipped", late[0]["message"])]
    assert late[0]["end_time"] == NOW + 3 * HOUR


def test_run_latest_keeps_only_the_latest_late_run(store, scheduler, clock):
    _, summary, late = downtime(store, scheduler, clock, "run_latest")
    assert [r["state"] for r in late] == ["Skipped"] * 9 + ["Scheduled"]
    assert summary["skipped"] == 9
    kept = late[-1]["id"]
    assert {r["message"] for r in late[:-1]} == {
        f"Skipped: a later run of flow etl/daily (run {kept}) was late too, and "
        "late_runs='run_latest' runs only the latest late run"}
    # Still down an hour later: the newer late runs replace the one kept before.
    scheduler.run_once(now=clock.advance(HOUR))
    scheduled = [r for r in auto_runs(store) if r["scheduled_start_time"] < NOW + 4 * HOUR]
    assert len(scheduled) == 1 and scheduled[0]["scheduled_start_time"] > late[-1][
        "scheduled_start_time"]


def test_skip_skips_every_late_run_but_not_one_just_due(store, scheduler, clock):
    _, summary, late = downtime(store, scheduler, clock, "skip")
    assert [r["state"] for r in late] == ["Skipped"] * 10 and summary["skipped"] == 10
    assert late[0]["message"] == ("Skipped: it was 10800 s late and flow etl/daily has "
                                  "late_runs='skip'; use late_runs='run_all' to run late runs")
    # The 09:00 run, created by the tick at 09:00, is due then.
    clock.advance(30)  # 30 s late: within late_after
    assert scheduler.run_once(now=clock.now)["skipped"] == 0
    clock.advance(60)  # 90 s late
    assert scheduler.run_once(now=clock.now)["skipped"] == 1


def test_late_policies_touch_only_auto_runs_still_scheduled(store, scheduler, clock):
    flow = register(store, make_flow(CronSchedule("*/10 * * * *"), late_runs="skip"))
    scheduler.run_once(now=clock.now)
    claimed = auto_runs(store)[0]["id"]
    assert claim(store, "agent-1", flow["labels"], limit=1, now=clock.now) == [claimed]
    manual = store.create_flow_run(flow["id"], scheduled_start_time=NOW)["id"]
    scheduler.run_once(now=clock.advance(3 * HOUR))
    assert store.get_flow_run(claimed)["state"] == "Submitted"
    assert store.get_flow_run(manual)["state"] == "Scheduled"


def test_an_agent_claims_only_the_latest_late_run_under_run_latest(store, scheduler, clock):
    # Back after downtime, an agent may look before the scheduler's next tick:
    # it must not start an older late run that the tick would skip.
    flow = register(store, make_flow(CronSchedule("*/10 * * * *"), late_runs="run_latest"))
    scheduler.run_once(now=clock.now)
    later = clock.advance(3 * HOUR)
    due = [r for r in auto_runs(store) if r["scheduled_start_time"] <= later]
    claimed = claim(store, "agent-1", flow["labels"], limit=20, now=later)
    assert claimed == [due[-1]["id"]]


def test_explain_says_why_a_late_run_waits_for_the_scheduler_to_skip_it(store, scheduler, clock):
    from orchestrator.service.explain import explain_flow_run

    register(store, make_flow(CronSchedule("*/10 * * * *"), late_runs="run_latest"))
    register(store, make_flow(CronSchedule("*/10 * * * *"), name="strict",
                              max_lateness=timedelta(minutes=30)))
    scheduler.run_once(now=clock.now)
    runs = auto_runs(store)
    daily = [r["id"] for r in runs if r["flow_id"] == runs[0]["flow_id"]]
    strict = [r["id"] for r in runs if r["flow_id"] != runs[0]["flow_id"]]
    later = clock.advance(3 * HOUR)
    assert any("late_runs='run_latest' only the newest runs" in reason
               for reason in explain_flow_run(store, daily[0], now=later))
    assert not any("run_latest" in reason
                   for reason in explain_flow_run(store, daily[-1], now=later))
    assert any("10800 s late, more than its flow allows (max_lateness 1800 s)" in reason
               for reason in explain_flow_run(store, strict[0], now=later))


def test_under_run_latest_a_run_seconds_behind_is_claimed_as_usual(store, scheduler, clock):
    flow = register(store, make_flow(CronSchedule("* * * * *"), late_runs="run_latest"))
    scheduler.run_once(now=clock.now)
    runs = auto_runs(store)
    # At 06:01:30 the 06:00 run is 90 s late with a newer one due: only the newer
    # one starts. At 06:00:50 with 06:00 alone due, it starts (50 s is not late).
    clock.advance(50)  # 06:00:50
    assert claim(store, "agent-1", flow["labels"], limit=5, now=clock.now) == [runs[0]["id"]]
    clock.advance(100)  # 06:02:30
    assert claim(store, "agent-1", flow["labels"], limit=5, now=clock.now) == [runs[2]["id"]]


def test_late_runs_of_an_older_version_follow_the_new_versions_policy(store, scheduler, clock):
    register(store, make_flow(CronSchedule("*/10 * * * *")))  # run_all
    scheduler.run_once(now=clock.now)
    v2 = register(store, make_flow(CronSchedule("*/10 * * * *"), changed=True,
                                   late_runs="skip"))
    scheduler.run_once(now=clock.advance(3 * HOUR))
    late = [r for r in auto_runs(store, state=None) if r["scheduled_start_time"] < NOW + 2 * HOUR]
    assert [(r["state"], r["flow_id"]) for r in late] == [("Skipped", v2["id"])] * 10


def seed_late_runs(store, flow_id, number, first, step=1.0):
    """Insert `number` late auto-scheduled runs in one transaction (as after a downtime)."""
    rows = [(flow_id, f"seeded-{i}", "{}", "[]", "Scheduled", first + i * step,
             auto_run_key("etl", "daily", first + i * step), 1, 0, first, first)
            for i in range(number)]
    with store.db.atomic():
        store.db.cursor().executemany(
            "INSERT INTO flow_run (flow_id, name, parameters, labels, state, "
            "scheduled_start_time, idempotency_key, auto_scheduled, restarts, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def work_off(scheduler, clock, ticks):
    """Tick once a second from the clock's time until a tick skips nothing;
    returns [(seconds, skipped)] per tick."""
    done = []
    for _ in range(ticks):
        started = time.perf_counter()
        skipped = scheduler.run_once(now=clock.now)["skipped"]
        clock.advance(1)
        done.append((time.perf_counter() - started, skipped))
        if skipped == 0:
            return done
    pytest.fail(f"late runs were still being skipped after {ticks} ticks: {done}")


def test_100000_late_runs_are_skipped_in_bounded_ticks(store, scheduler, clock):
    flow = register(store, make_flow(CronSchedule("*/10 * * * *"), late_runs="skip"))
    seed_late_runs(store, flow["id"], 100_000, first=NOW - 200_000, step=1.5)
    ticks = work_off(scheduler, clock, ticks=15)
    assert [skipped for _, skipped in ticks] == [10_000] * 10 + [0]
    assert max(seconds for seconds, _ in ticks) < 5.0, ticks  # bounded work per tick
    assert count(store, "SELECT COUNT(*) FROM flow_run WHERE state = 'Skipped'") == 100_000
    assert count(store, "SELECT COUNT(*) FROM state_event WHERE state = 'Skipped'") == 100_000
    assert count(store, "SELECT COUNT(*) FROM flow_run WHERE state = 'Scheduled' AND "
                        "scheduled_start_time < ?", NOW - 60) == 0
    # The schedule itself carried on: 06:00 (due at the first tick) and the next 10.
    assert times(auto_runs(store)) == [NOW + i * 10 * MINUTE for i in range(11)]


def test_10000_late_runs_under_run_latest_end_with_one_kept(store, scheduler, clock):
    flow = register(store, make_flow(CronSchedule("0 0 1 1 *"), late_runs="run_latest"))
    seed_late_runs(store, flow["id"], 10_000, first=NOW - 20_000)
    work_off(scheduler, clock, ticks=5)
    left = [r for r in auto_runs(store) if r["scheduled_start_time"] < NOW]
    assert times(left) == [NOW - 20_000 + 9_999]
    assert count(store, "SELECT COUNT(*) FROM flow_run WHERE state = 'Skipped'") == 9_999


def test_a_tick_with_100000_late_runs_left_to_run_is_quick(store, scheduler):
    flow = register(store, make_flow(CronSchedule("*/10 * * * *")))  # run_all
    seed_late_runs(store, flow["id"], 100_000, first=NOW - 200_000, step=1.5)
    scheduler.run_once(now=NOW)
    started = time.perf_counter()
    assert scheduler.run_once(now=NOW) == {"flows": 1, "created": 0, "skipped": 0,
                                               "adopted": 0, "deleted": 0}
    assert time.perf_counter() - started < 0.5


# -- queries use indexes -----------------------------------------------------------------------
def _traced(store, action):
    statements = []

    def trace(sql):
        head = sql.lstrip().upper()
        if head.startswith(("SELECT", "UPDATE", "DELETE", "INSERT")) and \
                "sqlite_master" not in sql and "EXPLAIN" not in head:
            statements.append(sql)

    store.db.connection().set_trace_callback(trace)
    try:
        action()
    finally:
        store.db.connection().set_trace_callback(None)
    return statements


SCHEDULING_QUERIES = {
    "summary of a flow's auto runs": lambda s, f: s.auto_run_summary(f, NOW),
    "latest auto run": lambda s, f: s.latest_auto_scheduled_time(f),
    "future auto runs": lambda s, f: s.count_future_auto_runs(f, NOW),
    "create auto runs": lambda s, f: s.create_auto_runs(
        f, [{"scheduled_start_time": NOW + i} for i in range(3)], now=NOW),
    "late auto runs": lambda s, f: s.late_auto_runs(f, NOW + 10 * HOUR, limit=5),
    "skip late runs": lambda s, f: s.skip_late_auto_runs(f, NOW + 2 * HOUR, "late {late}",
                                                         now=NOW, limit=3),
    "skip all but the latest": lambda s, f: s.skip_late_auto_runs(
        f, NOW + 2 * HOUR, "run {latest}", now=NOW, limit=3, keep_latest=True),
    "pause": lambda s, f: s.set_schedule_active(f, False, now=NOW),
    "delete future runs": lambda s, f: s.delete_future_auto_runs(f, NOW),
    "adopt older versions' runs": lambda s, f: s.adopt_auto_runs_of_other_versions(f, NOW),
    "scheduled flows": lambda s, f: s.scheduled_flows(),
}


@pytest.mark.parametrize("name", sorted(SCHEDULING_QUERIES))
def test_scheduling_queries_use_an_index(store, scheduler, name):
    register(store, make_flow(CronSchedule("*/10 * * * *")))
    flow = register(store, make_flow(CronSchedule("*/10 * * * *"), changed=True))
    scheduler.run_once(now=NOW)
    statements = _traced(store, lambda: SCHEDULING_QUERIES[name](store, flow["id"]))
    assert statements, "no query was traced"
    raw = sqlite3.connect(store.db.database)
    try:
        for sql in statements:
            detail = " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql))
            # SCAN of CONSTANT ROW(S) is reading the VALUES or the SELECT list itself.
            bad = [part for part in detail.split(" | ")
                   if "TEMP B-TREE" in part or (part.startswith("SCAN") and "USING" not in part
                                                and "CONSTANT ROW" not in part)]
            assert not bad, f"{name}: {sql}\n  plan: {detail}"
    finally:
        raw.close()


# -- the same store queries on PostgreSQL --------------------------------------------------------
def test_the_scheduling_queries_work_on_both_databases(any_store, home, clock):
    store = any_store
    store.create_project("etl")
    flow = register(store, make_flow(CronSchedule("*/10 * * * *"), late_runs="skip"))
    scheduler = Scheduler(store, lock_path=home / "any.lock")
    assert scheduler.run_once(now=clock.now)["created"] == 10
    twice = store.create_auto_runs(flow["id"], [{"scheduled_start_time": NOW}], now=clock.now)
    assert twice == []  # ON CONFLICT DO NOTHING on either database
    assert scheduler.run_once(now=clock.advance(3 * HOUR))["skipped"] == 10
    skipped = store.list_flow_runs(state="Skipped", limit=100)
    assert len(skipped) == 10
    assert skipped[-1]["message"].startswith("Skipped: it was 10800 s late")
    v2 = register(store, make_flow(CronSchedule("*/10 * * * *"), changed=True))
    summary = scheduler.run_once(now=clock.advance(1))
    assert (summary["adopted"], summary["deleted"]) == (1, 9)
    assert {r["flow_id"] for r in store.list_flow_runs(state="Scheduled", limit=100)} == {
        v2["id"]}
    _, deleted = store.set_schedule_active("daily", False, now=clock.now)
    assert deleted == 10


# -- helpers --------------------------------------------------------------------------------------
def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, cwd=ROOT, env=_env(), timeout=120)


def test_a_run_restarted_after_its_process_died_runs_again_under_late_runs_skip(store,
                                                                               scheduler):
    # It was claimed on time and ran; restarted 5 minutes later it is "late", but it
    # was not missed: the late policy is for runs never claimed, and it keeps its time.
    from orchestrator.daemons.reaper import Reaper

    flow = register(store, make_flow(CronSchedule("0 * * * *"), late_runs="skip",
                                     max_restarts=1))
    scheduler.run_once(now=NOW - MINUTE)
    (due,) = [r["id"] for r in auto_runs(store) if r["scheduled_start_time"] == NOW]
    ((run_id, attempt),) = store.claim_runs("agent-1", flow["labels"], 1, now=NOW)
    assert run_id == due
    store.start_flow_run(run_id, 999_999_999, attempt=attempt)  # on no host we know
    later = NOW + 5 * MINUTE

    reaper = Reaper(store, heartbeat_timeout=60)  # (it judges by the real clock)
    assert reaper.run_once(now=time.time() + 120) == [run_id]
    assert store.get_flow_run(run_id)["state"] == "Scheduled"
    assert scheduler.run_once(now=later)["skipped"] == 0
    assert claim(store, "agent-1", flow["labels"], 5, now=later) == [run_id]
    run = store.get_flow_run(run_id)
    assert (run["scheduled_start_time"], run["attempt"], run["restarts"]) == (NOW, 2, 1)
