"""Schedules and clocks (orchestrator.schedules): pure, every time injected.

Daylight saving time is tested in America/New_York (2024-03-10 02:00 -> 03:00,
2024-11-03 02:00 -> 01:00) and Europe/Berlin (2024-03-31 02:00 -> 03:00,
2024-10-27 03:00 -> 02:00).
"""

import itertools
import json
import subprocess
import sys
import warnings
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from orchestrator.exceptions import OrchestratorError
from orchestrator.schedules import (ClockEvent, CronClock, CronSchedule, DatesClock,
                                    IntervalClock, IntervalSchedule, Schedule, ScheduleError)

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def in_utc(times):
    return [t.astimezone(UTC) for t in times]


def cron(expression, zone=UTC, **kwargs):
    return CronSchedule(expression, start_date=datetime(2024, 1, 1, tzinfo=zone), **kwargs)


def walls(times, zone):
    """Each time as local wall time with its UTC offset, e.g. '03:00-04:00'."""
    return [t.astimezone(zone).strftime("%m-%d %H:%M%z") for t in times]


# -- interval clocks -----------------------------------------------------------------
def test_an_interval_clock_fires_every_interval_from_its_start_strictly_after_after():
    clock = IntervalClock(timedelta(minutes=15), start_date=utc(2024, 5, 1, 6))
    events = list(_take(clock.events(after=utc(2024, 5, 1, 6, 15)), 3))
    assert [e.start_time for e in events] == [utc(2024, 5, 1, 6, 30), utc(2024, 5, 1, 6, 45),
                                              utc(2024, 5, 1, 7)]
    assert all(isinstance(e, ClockEvent) for e in events)


def test_an_interval_clock_asked_before_its_start_begins_at_the_start():
    clock = IntervalClock(60, start_date=utc(2024, 5, 1, 6))
    assert Schedule([clock]).next(2, after=utc(2020, 1, 1)) == [utc(2024, 5, 1, 6),
                                                                 utc(2024, 5, 1, 6, 1)]


def test_an_interval_clock_without_a_start_lines_up_with_2019_01_01_utc_like_prefect_1():
    schedule = IntervalSchedule(timedelta(hours=7))
    first = schedule.next(1, after=utc(2024, 5, 1))[0]
    assert (first - utc(2019, 1, 1)) % timedelta(hours=7) == timedelta(0)
    assert utc(2024, 5, 1) < first <= utc(2024, 5, 1, 7)


def test_an_interval_clock_stops_at_its_end_date_inclusive():
    clock = IntervalClock(timedelta(hours=1), start_date=utc(2024, 5, 1),
                          end_date=utc(2024, 5, 1, 3))
    assert Schedule([clock]).next(10, after=utc(2024, 4, 1)) == [
        utc(2024, 5, 1), utc(2024, 5, 1, 1), utc(2024, 5, 1, 2), utc(2024, 5, 1, 3)]


def test_an_interval_given_in_seconds_may_have_a_fraction():
    schedule = IntervalSchedule(0.5, start_date=utc(2024, 5, 1))
    assert schedule.next(3, after=utc(2024, 5, 1)) == [
        utc(2024, 5, 1, 0, 0, 0, 500000), utc(2024, 5, 1, 0, 0, 1), utc(2024, 5, 1, 0, 0, 1, 500000)]


def test_a_daily_interval_keeps_its_wall_time_across_both_dst_changes():
    start = datetime(2024, 3, 8, 9, 0, tzinfo=NY)
    spring = IntervalSchedule(timedelta(days=1), start_date=start).next(
        3, after=datetime(2024, 3, 8, 12, tzinfo=NY))
    assert walls(spring, NY) == ["03-09 09:00-0500", "03-10 09:00-0400", "03-11 09:00-0400"]
    autumn = IntervalSchedule(timedelta(days=1), start_date=start).next(
        2, after=datetime(2024, 11, 2, 12, tzinfo=NY))
    assert walls(autumn, NY) == ["11-03 09:00-0500", "11-04 09:00-0500"]
    # Same-zone datetimes subtract as wall times: compare instants.
    assert autumn[0].astimezone(UTC) - datetime(2024, 11, 2, 9, tzinfo=NY).astimezone(UTC) \
        == timedelta(hours=25)


def test_an_hourly_interval_is_elapsed_time_across_the_autumn_change():
    schedule = IntervalSchedule(timedelta(hours=1), start_date=datetime(2024, 1, 1, tzinfo=NY))
    times = schedule.next(4, after=datetime(2024, 11, 3, 0, 30, tzinfo=NY))
    assert walls(times, NY) == ["11-03 01:00-0400", "11-03 01:00-0500", "11-03 02:00-0500",
                                "11-03 03:00-0500"]
    assert all(b - a == timedelta(hours=1) for a, b in zip(in_utc(times), in_utc(times)[1:], strict=False))


# -- cron clocks ------------------------------------------------------------------------
def test_a_cron_clock_is_evaluated_in_its_start_dates_zone_summer_and_winter():
    schedule = cron("0 6 * * *", BERLIN)
    assert schedule.next(1, after=utc(2024, 1, 10)) == [utc(2024, 1, 10, 5)]
    assert schedule.next(1, after=utc(2024, 7, 10)) == [utc(2024, 7, 10, 4)]
    event = schedule.next(1, after=utc(2024, 7, 10), return_events=True)[0]
    assert event.start_time.tzinfo == BERLIN and event.start_time.hour == 6


def test_a_cron_clock_without_start_date_uses_utc():
    assert CronSchedule("30 6 * * 1-5").next(2, after=utc(2024, 5, 3, 7)) == [
        utc(2024, 5, 6, 6, 30), utc(2024, 5, 7, 6, 30)]  # Friday 7:00 -> Monday, Tuesday


def test_a_cron_clocks_start_date_is_inclusive_and_end_date_ends_it():
    schedule = CronSchedule("0 * * * *", start_date=utc(2024, 5, 1, 6),
                            end_date=utc(2024, 5, 1, 8))
    assert schedule.next(10, after=utc(2024, 1, 1)) == [utc(2024, 5, 1, 6), utc(2024, 5, 1, 7),
                                                        utc(2024, 5, 1, 8)]


def test_an_event_at_exactly_after_is_not_repeated():
    assert CronSchedule("0 * * * *").next(1, after=utc(2024, 5, 1, 6)) == [utc(2024, 5, 1, 7)]
    assert CronSchedule("0 * * * *").next(1, after=utc(2024, 5, 1, 6, 0, 0, 1)) == [
        utc(2024, 5, 1, 7)]


def test_cron_aliases_and_day_or():
    assert CronSchedule("@hourly").next(1, after=utc(2024, 5, 1, 6, 5)) == [utc(2024, 5, 1, 7)]
    assert CronSchedule("@daily").next(1, after=utc(2024, 5, 1, 6)) == [utc(2024, 5, 2)]
    # The 13th that is also a Friday (2024-09-13), not every 13th or every Friday.
    friday_13 = CronSchedule("0 0 13 * 5", day_or=False)
    assert friday_13.next(1, after=utc(2024, 5, 1)) == [utc(2024, 9, 13)]
    assert CronSchedule("0 0 13 * 5").next(1, after=utc(2024, 5, 1)) == [utc(2024, 5, 3)]


# -- cron across daylight saving changes ---------------------------------------------------
def test_new_york_a_daily_time_skipped_in_spring_runs_once_right_after_the_jump():
    times = cron("30 2 * * *", NY).next(3, after=datetime(2024, 3, 9, 12, tzinfo=NY))
    assert walls(times, NY) == ["03-10 03:00-0400", "03-11 02:30-0400", "03-12 02:30-0400"]
    assert times[0].astimezone(UTC) == utc(2024, 3, 10, 7)  # the instant of the jump


def test_new_york_a_daily_time_repeated_in_autumn_runs_once():
    times = cron("30 1 * * *", NY).next(3, after=datetime(2024, 11, 2, 12, tzinfo=NY))
    assert walls(times, NY) == ["11-03 01:30-0400", "11-04 01:30-0500", "11-05 01:30-0500"]


def test_new_york_asked_inside_the_repeated_hour_a_daily_time_does_not_run_again():
    second_one_thirty = datetime(2024, 11, 3, 1, 15, tzinfo=NY, fold=1)  # 01:15 EST
    times = cron("30 1 * * *", NY).next(1, after=second_one_thirty)
    assert walls(times, NY) == ["11-04 01:30-0500"]


def test_berlin_a_daily_time_skipped_in_spring_runs_once_right_after_the_jump():
    times = cron("30 2 * * *", BERLIN).next(3, after=datetime(2024, 3, 30, 12, tzinfo=BERLIN))
    assert walls(times, BERLIN) == ["03-31 03:00+0200", "04-01 02:30+0200", "04-02 02:30+0200"]
    assert times[0].astimezone(UTC) == utc(2024, 3, 31, 1)


def test_berlin_a_daily_time_repeated_in_autumn_runs_once():
    times = cron("30 2 * * *", BERLIN).next(3, after=datetime(2024, 10, 26, 12, tzinfo=BERLIN))
    assert walls(times, BERLIN) == ["10-27 02:30+0200", "10-28 02:30+0100", "10-29 02:30+0100"]


def test_every_quarter_hour_of_a_skipped_hour_collapses_into_one_run_after_the_jump():
    times = cron("*/15 2 * * *", NY).next(3, after=datetime(2024, 3, 10, 0, tzinfo=NY))
    assert walls(times, NY) == ["03-10 03:00-0400", "03-11 02:00-0400", "03-11 02:15-0400"]


@pytest.mark.parametrize("zone, after", [
    (NY, datetime(2024, 11, 2, 20, tzinfo=NY)), (BERLIN, datetime(2024, 10, 26, 20, tzinfo=BERLIN)),
    (NY, datetime(2024, 3, 9, 20, tzinfo=NY)), (BERLIN, datetime(2024, 3, 30, 20, tzinfo=BERLIN))])
def test_an_hourly_cron_runs_once_per_real_hour_across_a_dst_change(zone, after):
    times = in_utc(cron("0 * * * *", zone).next(12, after=after))
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(hours=1)] * 11
    assert times[0] - after.astimezone(UTC) == timedelta(hours=1)


def test_new_york_an_hourly_cron_runs_in_both_one_oclock_hours_of_the_autumn_change():
    times = cron("0 * * * *", NY).next(4, after=datetime(2024, 11, 3, 0, 30, tzinfo=NY))
    assert walls(times, NY) == ["11-03 01:00-0400", "11-03 01:00-0500", "11-03 02:00-0500",
                                "11-03 03:00-0500"]


def test_new_york_an_hourly_cron_skips_the_wall_times_that_do_not_exist_in_spring():
    times = cron("30 * * * *", NY).next(3, after=datetime(2024, 3, 10, 1, 0, tzinfo=NY))
    assert walls(times, NY) == ["03-10 01:30-0500", "03-10 03:30-0400", "03-10 04:30-0400"]


@pytest.mark.parametrize("fold, expected", [
    (0, ["11-03 01:40-0400", "11-03 01:00-0500", "11-03 01:20-0500", "11-03 01:40-0500"]),
    (1, ["11-03 01:40-0500", "11-03 02:00-0500", "11-03 02:20-0500", "11-03 02:40-0500"])])
def test_asked_inside_the_repeated_hour_a_frequent_cron_continues_in_real_time(fold, expected):
    after = datetime(2024, 11, 3, 1, 30, tzinfo=NY, fold=fold)
    times = cron("*/20 * * * *", NY).next(4, after=after)
    assert walls(times, NY) == expected
    assert in_utc(times) == sorted(set(in_utc(times)))


def test_a_cron_whose_year_field_has_ended_stops_yielding():
    schedule = CronSchedule("0 0 1 1 * 0 2020")  # seconds and year fields: croniter's extras
    assert schedule.next(5, after=utc(2018, 1, 1)) == [utc(2020, 1, 1)]
    assert schedule.next(5, after=utc(2021, 1, 1)) == []


# -- dates clocks -----------------------------------------------------------------------
def test_a_dates_clock_fires_at_its_dates_in_order_once_each():
    dates = [datetime(2024, 12, 24, 18, tzinfo=BERLIN), utc(2024, 6, 1),
             datetime(2024, 12, 24, 17, tzinfo=UTC)]  # the first and last are one instant
    schedule = Schedule([DatesClock(dates)])
    assert schedule.next(5, after=utc(2024, 1, 1)) == [utc(2024, 6, 1), utc(2024, 12, 24, 17)]
    assert schedule.next(5, after=utc(2024, 6, 1)) == [utc(2024, 12, 24, 17)]
    assert schedule.next(5, after=utc(2025, 1, 1)) == []


# -- schedules ----------------------------------------------------------------------------
def test_a_schedule_merges_its_clocks_in_time_order():
    schedule = Schedule(clocks=[
        CronClock("0 */2 * * *"),
        IntervalClock(timedelta(hours=3), start_date=utc(2024, 5, 1)),
        DatesClock([utc(2024, 5, 1, 1, 30)]),
    ])
    assert schedule.next(6, after=utc(2024, 5, 1)) == [
        utc(2024, 5, 1, 1, 30), utc(2024, 5, 1, 2), utc(2024, 5, 1, 3), utc(2024, 5, 1, 4),
        utc(2024, 5, 1, 6), utc(2024, 5, 1, 8)]  # 06:00 from both clocks: once


def test_events_at_one_instant_with_different_parameters_or_labels_are_kept_apart():
    schedule = Schedule(clocks=[
        CronClock("0 6 * * *", parameter_defaults={"full": True}),
        CronClock("0 6 * * *", parameter_defaults={"full": False}),
        CronClock("0 6 * * *", parameter_defaults={"full": False}),
        CronClock("0 6 * * *", labels=["gpu"]),
    ])
    events = schedule.next(4, after=utc(2024, 5, 1), return_events=True)
    assert [e.start_time for e in events] == [utc(2024, 5, 1, 6)] * 3 + [utc(2024, 5, 2, 6)]
    assert sorted(json.dumps([e.parameter_defaults, e.labels]) for e in events[:3]) == [
        '[{"full": false}, []]', '[{"full": true}, []]', '[{}, ["gpu"]]']


def test_next_after_gives_the_first_time_strictly_after():
    schedule = CronSchedule("0 6 * * *")
    assert schedule.next_after(utc(2024, 5, 1, 6)) == utc(2024, 5, 2, 6)
    assert schedule.next_after(utc(2024, 5, 1, 5)) == utc(2024, 5, 1, 6)
    assert Schedule([DatesClock([utc(2024, 1, 1)])]).next_after(utc(2024, 2, 1)) is None
    assert schedule.next(0, after=utc(2024, 5, 1)) == []


def test_clock_events_compare_with_datetimes_by_instant():
    event = ClockEvent(datetime(2024, 5, 1, 8, tzinfo=BERLIN))
    assert event == utc(2024, 5, 1, 6)
    assert event < utc(2024, 5, 1, 7) and event > utc(2024, 5, 1, 5)
    assert ClockEvent(utc(2024, 5, 1), {"a": 1}) != ClockEvent(utc(2024, 5, 1), {"a": 2})


def test_start_and_end_date_of_a_schedule_span_its_clocks():
    schedule = Schedule([IntervalClock(60, start_date=utc(2024, 2, 1), end_date=utc(2024, 3, 1)),
                         DatesClock([utc(2024, 1, 1), utc(2024, 4, 1)])])
    assert (schedule.start_date, schedule.end_date) == (utc(2024, 1, 1), utc(2024, 4, 1))
    assert CronSchedule("0 * * * *").end_date is None


def test_prefect_1_argument_order_of_interval_schedule_works():
    start = utc(2024, 5, 1)
    assert IntervalSchedule(start, timedelta(hours=1)) == IntervalSchedule(
        timedelta(hours=1), start_date=start)


# -- refs and repr ------------------------------------------------------------------------
def _every_kind():
    return Schedule(clocks=[
        CronClock("0 6 * * 1-5", start_date=datetime(2024, 1, 1, tzinfo=BERLIN),
                  end_date=datetime(2025, 1, 1, tzinfo=BERLIN),
                  parameter_defaults={"b": [1, 2], "a": "x"}, labels=["gpu", "eu"],
                  day_or=False),
        IntervalClock(timedelta(days=1), start_date=datetime(2024, 3, 8, 9, tzinfo=NY)),
        IntervalClock(90.5, start_date=datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5,
                                                                                       minutes=30)))),
        DatesClock([utc(2024, 6, 1), datetime(2024, 7, 1, tzinfo=NY)], labels=["once"]),
    ])


def test_a_schedule_round_trips_through_its_json_ref():
    schedule = _every_kind()
    ref = json.loads(json.dumps(schedule.to_ref()))
    again = Schedule.from_ref(ref)
    assert again == schedule and again.to_ref() == schedule.to_ref()
    assert repr(again) == repr(schedule)
    after = utc(2024, 3, 1)
    assert again.next(50, after=after, return_events=True) == schedule.next(
        50, after=after, return_events=True)
    assert [e.start_time.utcoffset() for e in again.next(50, after=after, return_events=True)] \
        == [e.start_time.utcoffset() for e in schedule.next(50, after=after, return_events=True)]


def test_the_repr_says_everything_that_matters_in_a_fixed_order():
    text = repr(_every_kind())
    assert text.startswith("Schedule(clocks=[CronClock('0 6 * * 1-5', start_date="
                           "'2024-01-01T00:00:00+01:00[Europe/Berlin]'")
    assert "parameter_defaults={'a': 'x', 'b': [1, 2]}, labels=['eu', 'gpu']" in text
    assert "day_or=False" in text and "IntervalClock(86400.0" in text and "[+05:30]" in text
    assert " at 0x" not in text
    same = CronClock("0 6 * * 1-5", start_date=datetime(2024, 1, 1, tzinfo=BERLIN),
                     end_date=datetime(2025, 1, 1, tzinfo=BERLIN),
                     parameter_defaults={"a": "x", "b": [1, 2]}, labels=["eu", "gpu"],
                     day_or=False)
    assert repr(same) == repr(_every_kind().clocks[0])
    assert repr(CronSchedule("0 7 * * *")) != repr(CronSchedule("0 6 * * *"))


def test_the_repr_is_the_same_in_another_process_with_another_hash_seed():
    code = ("from tests.test_schedules import _every_kind; print(repr(_every_kind()))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin"},
                              cwd=_root()).stdout for seed in ("1", "2")}
    assert outputs == {repr(_every_kind()) + "\n"}


def test_a_flows_fingerprint_follows_its_schedule():
    from orchestrator import Flow
    from orchestrator.storage import flow_fingerprint

    def build(expression):
        return flow_fingerprint(Flow("etl", schedule=CronSchedule(expression)))

    assert build("0 6 * * *") == build("0 6 * * *")
    assert build("0 6 * * *") != build("0 7 * * *")


def test_a_date_in_a_dateutil_zone_is_computed_in_the_zoneinfo_zone_of_that_name():
    from dateutil import tz

    start = datetime(2024, 1, 1, tzinfo=tz.gettz("America/New_York"))
    times = CronSchedule("30 2 * * *", start_date=start).next(
        1, after=datetime(2024, 3, 9, 12, tzinfo=NY))
    assert walls(times, NY) == ["03-10 03:00-0400"]
    assert CronSchedule("30 2 * * *", start_date=start).to_ref()["clocks"][0]["timezone"] \
        == "America/New_York"


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("expression, message", [
    ("61 * * * *", "CronClock cron '61 * * * *': minute field 61 is out of range 0-59"),
    ("* 24 * * *", "hour field 24 is out of range 0-23"),
    ("0 0 32 * *", "day-of-month field 32 is out of range 1-31"),
    ("0 0 0 * *", "day-of-month field 0 is out of range 1-31"),
    ("0 0 * 13 *", "month field 13 is out of range 1-12"),
    ("0 0 * * 8", "day-of-week field 8 is out of range 0-7"),
    ("1-70 * * * *", "minute field 70 is out of range 0-59"),
    ("*/0 * * * *", "minute field step '0'"),
    ("0 0 * FOO *", "month field 'FOO' is not a number (1-12 or JAN-DEC)"),
    ("0 0 * * FUNDAY", "day-of-week field 'FUNDAY' is not a number"),
    ("every day", "has 2 field(s); give five (minute hour day-of-month month day-of-week)"),
    ("* * * *", "has 4 field(s)"),
    ("", "is empty"),
    ("@fortnightly", "'@fortnightly' is not a cron alias; use one of @annually, @daily"),
    ("0 0 31 2 *", "matches no date at all"),
])
def test_a_bad_cron_string_is_refused_naming_the_field_and_value(expression, message):
    with pytest.raises(ScheduleError) as caught:
        CronClock(expression)
    assert message in str(caught.value)
    assert isinstance(caught.value, OrchestratorError) and isinstance(caught.value, ValueError)
    with pytest.raises(ScheduleError, match="CronClock cron"):
        CronSchedule(expression)


def test_a_cron_that_is_not_a_string_is_refused():
    with pytest.raises(ScheduleError, match=r"CronClock cron=5: must be a cron string"):
        CronClock(5)


@pytest.mark.parametrize("interval, message", [
    (0, "IntervalClock interval=datetime.timedelta(0) (0 s): must be more than 0 seconds"),
    (-5, "(-5 s): must be more than 0 seconds"),
    (timedelta(0), "must be more than 0 seconds"),
    (timedelta(minutes=-1), "(-60 s): must be more than 0 seconds"),
    ("5 minutes", "IntervalClock interval='5 minutes': must be a timedelta or a number of "
                  "seconds, not str"),
    (True, "not bool"),
    (None, "not NoneType"),
    (float("nan"), "must be a finite number"),
])
def test_a_bad_interval_is_refused_with_the_value_and_the_fix(interval, message):
    with pytest.raises(ScheduleError) as caught:
        IntervalClock(interval)
    assert message in str(caught.value)
    assert "timedelta(minutes=5)" in str(caught.value)


def test_a_naive_start_or_end_date_is_utc_as_in_prefect_1():
    # Prefect 1.4.1: CronClock("0 6 * * *", start_date=datetime(2024, 1, 1)).start_date
    # is 2024-01-01T00:00:00+00:00, and so are naive end dates and dates.
    assert CronClock("0 6 * * *", start_date=datetime(2024, 1, 1)).start_date == utc(2024, 1, 1)
    assert IntervalClock(60, end_date=datetime(2024, 1, 1)).end_date == utc(2024, 1, 1)
    assert DatesClock([datetime(2024, 1, 1)]).dates == [utc(2024, 1, 1)]
    assert CronSchedule("0 6 * * *", start_date=datetime(2024, 1, 1, 6)).next(
        2, after=datetime(2024, 1, 1, 6)) == [utc(2024, 1, 2, 6), utc(2024, 1, 3, 6)]


def test_a_naive_after_is_utc():
    assert CronSchedule("0 * * * *").next(1, after=datetime(2024, 1, 1)) == \
        [utc(2024, 1, 1, 1)]
    assert CronSchedule("0 * * * *").next_after(datetime(2024, 1, 1)) == utc(2024, 1, 1, 1)


def test_a_time_zone_without_a_known_name_is_refused_naming_the_fix():
    class Nameless(timezone.__base__):
        def utcoffset(self, dt):
            return timedelta(hours=1)

        def dst(self, dt):
            return timedelta(0)

        def tzname(self, dt):
            return "XYZ"

    with pytest.raises(ScheduleError, match=r"has no IANA name this host knows; give the date "
                                            r"a zoneinfo zone"):
        CronClock("0 6 * * *", start_date=datetime(2024, 1, 1, tzinfo=Nameless()))


def test_an_unknown_time_zone_in_a_stored_schedule_is_refused():
    ref = CronSchedule("0 6 * * *", start_date=datetime(2024, 1, 1, tzinfo=NY)).to_ref()
    ref["clocks"][0]["timezone"] = "Mars/Olympus_Mons"
    with pytest.raises(ScheduleError, match="time zone 'Mars/Olympus_Mons' is not known"):
        Schedule.from_ref(ref)


@pytest.mark.parametrize("ref, message", [
    (None, "has no list of clocks"),
    ({"clocks": "x"}, "has no list of clocks"),
    ({"clocks": [{"type": "MoonClock"}]}, "is not one of CronClock, DatesClock, IntervalClock"),
    ({"clocks": [{"type": "CronClock"}]}, "lacks 'timezone'"),
    ({"clocks": [{"type": "DatesClock", "dates": ["yesterday"], "parameter_defaults": {},
                  "labels": []}]}, "'yesterday' is not an ISO 8601 time"),
])
def test_a_damaged_stored_schedule_says_to_register_again(ref, message):
    with pytest.raises(ScheduleError, match="register the flow again") as caught:
        Schedule.from_ref(ref)
    assert message in str(caught.value)


def test_an_end_before_the_start_is_refused():
    with pytest.raises(ScheduleError, match="end_date=2024-01-01T00:00:00\\+00:00 is before "
                                            "start_date=2024-02-01"):
        CronClock("0 * * * *", start_date=utc(2024, 2, 1), end_date=utc(2024, 1, 1))


@pytest.mark.parametrize("value, message", [
    ("day=1", "parameter_defaults='day=1': must be a dict of parameter names to values"),
    ({1: "x"}, "key 1 is not a parameter name"),
    ({"day": object}, "parameter_defaults['day'] = <class 'object'> is not JSON-serializable"),
])
def test_bad_parameter_defaults_are_refused(value, message):
    with pytest.raises(ScheduleError) as caught:
        CronClock("0 * * * *", parameter_defaults=value)
    assert message in str(caught.value)


def test_labels_must_be_strings_and_one_string_is_one_label_with_a_warning():
    with pytest.raises(ScheduleError, match=r"labels=\['a', 3\]\): label 3 is a int, not a"):
        IntervalClock(60, labels=["a", 3])
    with pytest.raises(ScheduleError, match=r"labels=5\): labels must be a list of strings"):
        IntervalClock(60, labels=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clock = IntervalClock(60, labels="prod")
    assert clock.labels == ["prod"]
    assert "taken as one label ['prod']" in str(caught[0].message)


@pytest.mark.parametrize("dates, message", [
    ([], "give at least one datetime"),
    (utc(2024, 1, 1), "must be a list of datetimes"),
    (["2024-01-01"], "must be a datetime, not str"),
])
def test_bad_dates_are_refused(dates, message):
    with pytest.raises(ScheduleError, match="DatesClock") as caught:
        DatesClock(dates)
    assert message in str(caught.value)


def test_a_bad_schedule_is_refused():
    with pytest.raises(ScheduleError, match=r"Schedule\(clocks=\[\]\): give a list of one or "
                                            "more clocks"):
        Schedule(clocks=[])
    with pytest.raises(ScheduleError, match="'0 6 \\* \\* \\*' is a str, not a clock; use "
                                            "IntervalClock, CronClock or DatesClock"):
        Schedule(clocks=["0 6 * * *"])
    with pytest.raises(ScheduleError, match=r"Schedule\(filters=...\): filters are not "
                                            "supported"):
        Schedule(clocks=[CronClock("0 6 * * *")], filters=[lambda dt: True])
    with pytest.raises(ScheduleError, match=r"Schedule.next\(n=-1\)"):
        CronSchedule("0 6 * * *").next(-1)
    with pytest.raises(ScheduleError, match="IntervalSchedule needs an interval"):
        IntervalSchedule()
    with pytest.raises(ScheduleError, match="day_or='no': must be True or False"):
        CronClock("0 6 * * *", day_or="no")


def _take(iterator, n):
    return itertools.islice(iterator, n)


def _root():
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent)
