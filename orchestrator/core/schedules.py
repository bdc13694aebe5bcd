"""Schedules: when a registered flow runs, with the Prefect 1 API.

    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo
    from orchestrator.schedules import CronClock, DatesClock, IntervalClock, Schedule

    berlin = datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    schedule = Schedule(clocks=[
        CronClock("0 6 * * 1-5", start_date=berlin),                 # 06:00 Berlin time
        IntervalClock(timedelta(hours=1), parameter_defaults={"full": False}),
        DatesClock([datetime(2024, 12, 24, 18, tzinfo=ZoneInfo("Europe/Berlin"))],
                   labels=["gpu"]),
    ])
    schedule.next(3)                        # the next three start times (aware datetimes)
    schedule.next(3, return_events=True)    # ClockEvents: time, parameter defaults, labels
    flow = Flow("etl", schedule=schedule)   # registered with the flow; `orchestrator up`
                                            # creates its runs ahead of time

`IntervalSchedule(timedelta(minutes=5))` and `CronSchedule("0 * * * *")` are
one-clock shorthands. Everything here is pure: no clock is read unless a
caller leaves `after` out, and nothing touches the store.

Time zones and daylight saving time (cron, and intervals of whole days, are
evaluated in the wall time of `start_date`'s zone; UTC by default). A naive
datetime (no tzinfo) given as `start_date`, `end_date`, a date of a
DatesClock or `after` is UTC, as in Prefect 1:

- A wall time that the spring-forward jump skips (02:30 on 2024-03-10 in
  America/New_York) runs once, at the first instant after the gap (03:00).
- A wall time that the autumn fall-back repeats (01:30 on 2024-11-03 in
  America/New_York) runs once, at its first occurrence.
- Except: a cron whose hour field starts with `*` (`0 * * * *`, `*/10 */2 * * *`)
  follows the real clock, as Vixie cron does for such jobs: it runs once per
  matching real instant, so an hourly cron runs in both repeated 1 o'clock
  hours (two distinct UTC instants an hour apart) and skips the wall times
  that do not exist in spring (one run per real hour either way).
- Intervals that are not whole days are plain elapsed time (an hourly
  interval fires every 3,600 s, whatever the wall clock says).

Bad input fails at construction with a `ScheduleError` that names the clock,
the value and the fix, e.g. ``CronClock cron '61 * * * *': minute field 61
is out of range 0-59``. Missed events are not backfilled: a schedule yields
events after the time it is asked about.
"""

import datetime as _dt
import hashlib
import heapq
import json
import zoneinfo

from croniter import croniter
from croniter import CroniterError

from ..exceptions import OrchestratorError
from .labels import check_labels

__all__ = ["ScheduleError", "ClockEvent", "Clock", "IntervalClock", "CronClock",
           "DatesClock", "Schedule", "IntervalSchedule", "CronSchedule", "describe_schedule"]

UTC = _dt.timezone.utc
_DAY = _dt.timedelta(days=1)
# Prefect 1's default start of an interval clock: intervals line up with it.
DEFAULT_INTERVAL_START = _dt.datetime(2019, 1, 1, tzinfo=UTC)


class ScheduleError(OrchestratorError, ValueError):
    """A schedule or clock was given a value it cannot use; the message names it."""


# -- checking inputs -----------------------------------------------------------
def _zone_of(tzinfo, owner, what, value):
    """(tzinfo to compute with, its name for refs) for an aware datetime's tzinfo.

    zoneinfo zones are used as they are; pytz, pendulum and dateutil zones are
    replaced by the zoneinfo zone of the same name; fixed offsets stay fixed.
    """
    if tzinfo is UTC:
        return UTC, "UTC"
    if isinstance(tzinfo, zoneinfo.ZoneInfo) and tzinfo.key:
        return tzinfo, tzinfo.key
    if isinstance(tzinfo, _dt.timezone):
        offset = tzinfo.utcoffset(None)
        return tzinfo, _offset_name(offset)
    name = None
    for attr in ("key", "zone", "name"):
        candidate = getattr(tzinfo, attr, None)
        if isinstance(candidate, str) and candidate:
            name = candidate
            break
    if name is None:
        filename = getattr(tzinfo, "_filename", None)  # dateutil's tzfile
        if isinstance(filename, str) and "zoneinfo/" in filename:
            name = filename.split("zoneinfo/", 1)[1]
    if name in ("UTC", "utc", "Etc/UTC", "Z"):
        return UTC, "UTC"
    if name:
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is not None:
            return zone, name
    raise ScheduleError(
        f"{owner} {what}={value!r}: its time zone {tzinfo!r} has no IANA name this "
        "host knows; give the date a zoneinfo zone, e.g. "
        "datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo('Europe/Berlin'))")


def _offset_name(offset):
    if offset == _dt.timedelta(0):
        return "UTC"
    sign = "-" if offset < _dt.timedelta(0) else "+"
    seconds = abs(int(offset.total_seconds()))
    return f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def _zone_from_name(name, owner):
    if name == "UTC":
        return UTC
    if isinstance(name, str) and len(name) == 6 and name[0] in "+-" and name[3] == ":":
        try:
            hours, minutes = int(name[1:3]), int(name[4:6])
        except ValueError:
            hours = minutes = None
        if hours is not None:
            offset = _dt.timedelta(hours=hours, minutes=minutes)
            return _dt.timezone(-offset if name[0] == "-" else offset)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(
            f"{owner}: time zone {name!r} is not known on this host; use an IANA "
            "name such as 'Europe/Berlin' or 'America/New_York' (pip install tzdata "
            "where the system has no zone database)") from None


def _aware(value, owner, what):
    """`value` as an aware datetime in a zone we can compute with and name.

    A naive datetime is UTC, as Prefect 1 (pendulum) reads it."""
    if not isinstance(value, _dt.datetime):
        raise ScheduleError(
            f"{owner} {what}={value!r}: must be a datetime, not "
            f"{type(value).__name__}; e.g. datetime(2024, 1, 1, tzinfo=timezone.utc)")
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    zone, _ = _zone_of(value.tzinfo, owner, what, value)
    return value if zone is value.tzinfo else value.astimezone(zone)


def _after(after, owner):
    """The UTC instant events must come strictly after (now, when None)."""
    if after is None:
        return _dt.datetime.now(UTC)
    return _aware(after, owner, "after").astimezone(UTC)


def _parameter_defaults(value, owner):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScheduleError(
            f"{owner} parameter_defaults={value!r}: must be a dict of parameter names "
            f"to values, not {type(value).__name__}; e.g. parameter_defaults={{'day': "
            "'2024-05-01'}}")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ScheduleError(
                f"{owner} parameter_defaults: key {key!r} is not a parameter name; "
                "use the name of one of the flow's Parameters (a string)")
        try:
            json.dumps(item)
        except (TypeError, ValueError):
            raise ScheduleError(
                f"{owner} parameter_defaults[{key!r}] = {item!r} is not JSON-serializable "
                "(it is stored with the flow); use strings, numbers, lists or dicts") from None
    return {key: value[key] for key in sorted(value)}


def _iso(value):
    return None if value is None else value.isoformat()


def _from_iso(text, zone, owner, what):
    if text is None:
        return None
    try:
        value = _dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ScheduleError(f"{owner}: stored {what} {text!r} is not an ISO 8601 time; "
                            "register the flow again") from None
    if value.tzinfo is None:
        raise ScheduleError(f"{owner}: stored {what} {text!r} has no offset; "
                            "register the flow again")
    return value.astimezone(zone)


def _date_repr(value):
    """A datetime as text that says its instant and its zone, the same in every process."""
    if value is None:
        return "None"
    _, name = _zone_of(value.tzinfo, "", "", value)
    return f"'{value.isoformat()}[{name}]'"


# -- events --------------------------------------------------------------------
class ClockEvent:
    """One start time of a schedule, with the parameter defaults and labels of
    the clock that produced it.

    Compared by `start_time` as an instant (a ClockEvent also compares with a
    datetime); two events are equal when their time, parameters and labels are.
    """

    __slots__ = ("start_time", "parameter_defaults", "labels")

    def __init__(self, start_time, parameter_defaults=None, labels=None):
        self.start_time = start_time
        self.parameter_defaults = dict(parameter_defaults or {})
        self.labels = list(labels or [])

    @property
    def _instant(self):
        return self.start_time.astimezone(UTC)

    def _identity(self):
        return (self._instant, json.dumps(self.parameter_defaults, sort_keys=True),
                tuple(self.labels))

    def __eq__(self, other):
        if isinstance(other, _dt.datetime):
            return self._instant == other.astimezone(UTC)
        if isinstance(other, ClockEvent):
            return self._identity() == other._identity()
        return NotImplemented

    def __hash__(self):
        return hash(self._identity())

    def _time_of(self, other):
        if isinstance(other, ClockEvent):
            return other._instant
        if isinstance(other, _dt.datetime):
            return other.astimezone(UTC)
        return None

    def __lt__(self, other):
        other_time = self._time_of(other)
        return NotImplemented if other_time is None else self._instant < other_time

    def __gt__(self, other):
        other_time = self._time_of(other)
        return NotImplemented if other_time is None else self._instant > other_time

    def __le__(self, other):
        other_time = self._time_of(other)
        return NotImplemented if other_time is None else self._instant <= other_time

    def __ge__(self, other):
        other_time = self._time_of(other)
        return NotImplemented if other_time is None else self._instant >= other_time

    def __repr__(self):
        return (f"ClockEvent({self.start_time.isoformat()}, parameter_defaults="
                f"{self.parameter_defaults!r}, labels={self.labels!r})")


# -- clocks --------------------------------------------------------------------
class Clock:
    """A source of start times. Subclasses define `events(after)`, `to_ref()`
    and `_from_ref(ref)`; `Clock.from_ref` picks the subclass by "type"."""

    def __init__(self, start_date=None, end_date=None, parameter_defaults=None,
                 labels=None):
        owner = type(self).__name__
        self.start_date = None if start_date is None else _aware(start_date, owner,
                                                                 "start_date")
        self.end_date = None if end_date is None else _aware(end_date, owner, "end_date")
        if self.start_date is not None and self.end_date is not None and \
                self.end_date.astimezone(UTC) < self.start_date.astimezone(UTC):
            raise ScheduleError(
                f"{owner} end_date={self.end_date.isoformat()} is before start_date="
                f"{self.start_date.isoformat()}, so it would never fire; move end_date "
                "later or drop it")
        self.parameter_defaults = _parameter_defaults(parameter_defaults, owner)
        self.labels = check_labels(labels, owner, ScheduleError, stacklevel=4)

    def events(self, after=None):
        """Events strictly after `after` (an aware datetime; now when None), in time order."""
        raise NotImplementedError

    def _event(self, instant):
        return ClockEvent(instant.astimezone(self.zone), self.parameter_defaults, self.labels)

    def _common_ref(self):
        return {"start_date": _iso(self.start_date), "end_date": _iso(self.end_date),
                "timezone": self.zone_name, "parameter_defaults": self.parameter_defaults,
                "labels": self.labels}

    @staticmethod
    def from_ref(ref):
        if not isinstance(ref, dict) or ref.get("type") not in _CLOCKS:
            raise ScheduleError(
                f"Stored clock {ref!r} is not one of {', '.join(sorted(_CLOCKS))}; "
                "register the flow again")
        try:
            return _CLOCKS[ref["type"]]._from_ref(ref)
        except KeyError as exc:
            raise ScheduleError(f"Stored {ref['type']} {ref!r} lacks {exc}; register the "
                                "flow again") from None

    def __eq__(self, other):
        return type(other) is type(self) and other.to_ref() == self.to_ref()

    def __hash__(self):
        return hash(json.dumps(self.to_ref(), sort_keys=True))

    def _extras_repr(self):
        return (f"parameter_defaults={self.parameter_defaults!r}, labels={self.labels!r}")


class IntervalClock(Clock):
    """Every `interval` (a timedelta, or seconds) from `start_date` (default
    2019-01-01 00:00 UTC, as in Prefect 1), until `end_date` (inclusive).

    An interval of whole days keeps the wall time of `start_date` in its zone
    across daylight saving changes (a daily 09:00 stays 09:00); any other
    interval is elapsed time.
    """

    def __init__(self, interval, start_date=None, end_date=None, parameter_defaults=None,
                 labels=None):
        owner = "IntervalClock"
        if isinstance(interval, bool) or not isinstance(interval, (_dt.timedelta, int, float)):
            raise ScheduleError(
                f"{owner} interval={interval!r}: must be a timedelta or a number of "
                f"seconds, not {type(interval).__name__}; e.g. timedelta(minutes=5)")
        if not isinstance(interval, _dt.timedelta):
            if interval != interval or interval in (float("inf"), float("-inf")):
                raise ScheduleError(f"{owner} interval={interval!r}: must be a finite number "
                                    "of seconds; e.g. timedelta(minutes=5)")
            interval = _dt.timedelta(seconds=interval)
        if interval <= _dt.timedelta(0):
            raise ScheduleError(
                f"{owner} interval={interval!r} ({interval.total_seconds():g} s): must be "
                "more than 0 seconds; e.g. timedelta(minutes=5)")
        super().__init__(DEFAULT_INTERVAL_START if start_date is None else start_date,
                         end_date, parameter_defaults, labels)
        self.interval = interval
        self.zone, self.zone_name = _zone_of(self.start_date.tzinfo, owner, "start_date",
                                             self.start_date)
        # Whole days in a zone with DST: step the wall clock, not elapsed time.
        self._wall = interval % _DAY == _dt.timedelta(0) and not isinstance(
            self.zone, _dt.timezone)

    def events(self, after=None):
        after = _after(after, "IntervalClock.events")
        start = self.start_date.astimezone(UTC)
        end = None if self.end_date is None else self.end_date.astimezone(UTC)
        if self._wall:
            yield from self._wall_events(after, end)
            return
        k = 0 if after < start else (after - start) // self.interval + 1
        while True:
            instant = start + k * self.interval
            if end is not None and instant > end:
                return
            if instant > after:  # float seconds can round the first one onto `after`
                yield self._event(instant)
            k += 1

    def _wall_events(self, after, end):
        first = self.start_date.replace(tzinfo=None)  # the wall time in its zone
        local_after = after.astimezone(self.zone).replace(tzinfo=None)
        k = max(0, (local_after - first) // self.interval - 1)
        while True:
            instant = _first_instant(first + k * self.interval, self.zone)
            if end is not None and instant > end:
                return
            if instant > after:
                yield self._event(instant)
            k += 1

    def to_ref(self):
        return dict(type="IntervalClock", interval=self.interval.total_seconds(),
                    **self._common_ref())

    @classmethod
    def _from_ref(cls, ref):
        zone = _zone_from_name(ref["timezone"], "IntervalClock")
        return cls(_dt.timedelta(seconds=ref["interval"]),
                   start_date=_from_iso(ref["start_date"], zone, "IntervalClock", "start_date"),
                   end_date=_from_iso(ref["end_date"], zone, "IntervalClock", "end_date"),
                   parameter_defaults=ref["parameter_defaults"], labels=ref["labels"])

    def __repr__(self):
        return (f"IntervalClock({self.interval.total_seconds()!r}, start_date="
                f"{_date_repr(self.start_date)}, end_date={_date_repr(self.end_date)}, "
                f"{self._extras_repr()})")


_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_FIELDS = [  # (name, low, high, names)
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                      "oct", "nov", "dec")),
    ("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
    ("second", 0, 59, None),
    ("year", 1970, 2099, None),
]
_CRON_LAYOUT = "minute hour day-of-month month day-of-week"


class CronClock(Clock):
    """At the times a cron expression names, in `start_date`'s time zone (UTC
    when there is no start_date), from `start_date` (inclusive) to `end_date`.

    Five fields (minute hour day-of-month month day-of-week) or an alias
    (@hourly, @daily, @weekly, @monthly, @yearly); what croniter accepts
    beyond that (`L`, `5#3`, a sixth seconds field) works too. `day_or=False`
    makes a day-of-month and a day-of-week both have to match.
    """

    def __init__(self, cron, start_date=None, end_date=None, parameter_defaults=None,
                 labels=None, day_or=True):
        super().__init__(start_date, end_date, parameter_defaults, labels)
        if not isinstance(day_or, bool):
            raise ScheduleError(f"CronClock day_or={day_or!r}: must be True or False")
        self.day_or = day_or
        self.cron = _check_cron(cron)
        expression = _CRON_ALIASES.get(self.cron.lower(), self.cron)
        self._expression = expression
        # Vixie cron's rule: a job whose hour field is a wildcard follows the
        # real clock across DST changes; a job at fixed hours follows the wall clock.
        self._real_clock = expression.split()[1].startswith("*")
        if self.start_date is not None:
            self.zone, self.zone_name = _zone_of(self.start_date.tzinfo, "CronClock",
                                                 "start_date", self.start_date)
        else:
            self.zone, self.zone_name = UTC, "UTC"
        try:
            croniter(expression, _dt.datetime(2000, 1, 1), day_or=day_or).get_next(
                _dt.datetime)
        except CroniterError:
            raise ScheduleError(
                f"CronClock cron {self.cron!r}: matches no date at all (e.g. February "
                "30th); fix the day-of-month and month fields") from None

    def events(self, after=None):
        after = _after(after, "CronClock.events")
        if self.start_date is not None:
            start = self.start_date.astimezone(UTC)
            if start > after:
                after = start - _dt.timedelta(microseconds=1)  # start_date is inclusive
        end = None if self.end_date is None else self.end_date.astimezone(UTC)
        zone = self.zone
        local = after.astimezone(zone).replace(tzinfo=None)
        if after.astimezone(zone).utcoffset() != (after + _SHIFT_WINDOW).astimezone(
                zone).utcoffset():
            # A clock change is near: wall times a little before `after` may
            # occur again after it (the repeated autumn hour), so look back.
            local -= _SHIFT_WINDOW
        walls = croniter(self._expression, local, day_or=self.day_or)
        pending = []  # second occurrences of repeated wall times, in instant order
        last = after
        while True:
            try:
                wall = walls.get_next(_dt.datetime)
            except CroniterError:  # no later date matches (a year field has ended)
                wall = None
            if wall is None:
                for instant in sorted(pending):
                    if instant > last and (end is None or instant <= end):
                        yield self._event(instant)
                return
            first, second = _instants(wall, zone)
            if first is None:  # a wall time the spring jump skips
                if self._real_clock:
                    continue
                first = _gap_end(wall, zone)
            elif second is not None and self._real_clock:
                heapq.heappush(pending, second)
            while pending and pending[0] < first:
                instant = heapq.heappop(pending)
                if end is not None and instant > end:
                    return
                if instant > last:
                    last = instant
                    yield self._event(instant)
            if end is not None and first > end:
                return
            if first > last:
                last = first
                yield self._event(first)

    def to_ref(self):
        return dict(type="CronClock", cron=self.cron, day_or=self.day_or, **self._common_ref())

    @classmethod
    def _from_ref(cls, ref):
        zone = _zone_from_name(ref["timezone"], "CronClock")
        return cls(ref["cron"],
                   start_date=_from_iso(ref["start_date"], zone, "CronClock", "start_date"),
                   end_date=_from_iso(ref["end_date"], zone, "CronClock", "end_date"),
                   parameter_defaults=ref["parameter_defaults"], labels=ref["labels"],
                   day_or=ref.get("day_or", True))

    def __repr__(self):
        return (f"CronClock({self.cron!r}, start_date={_date_repr(self.start_date)}, "
                f"end_date={_date_repr(self.end_date)}, timezone={self.zone_name!r}, "
                f"{self._extras_repr()}, day_or={self.day_or!r})")


class DatesClock(Clock):
    """At each of `dates` (datetimes; a naive one is UTC)."""

    def __init__(self, dates, parameter_defaults=None, labels=None):
        owner = "DatesClock"
        if isinstance(dates, (str, _dt.datetime)) or not isinstance(
                dates, (list, tuple, set, frozenset)):
            raise ScheduleError(
                f"{owner} dates={dates!r}: must be a list of datetimes; "
                "e.g. dates=[datetime(2024, 12, 24, 18, tzinfo=timezone.utc)]")
        if not dates:
            raise ScheduleError(f"{owner} dates=[]: give at least one datetime, or drop "
                                "the clock")
        checked = [_aware(d, owner, "dates") for d in dates]
        unique = {d.astimezone(UTC): d for d in checked}
        self.dates = [unique[k] for k in sorted(unique)]
        super().__init__(self.dates[0], self.dates[-1], parameter_defaults, labels)

    def events(self, after=None):
        after = _after(after, "DatesClock.events")
        for date in self.dates:
            if date.astimezone(UTC) > after:
                yield ClockEvent(date, self.parameter_defaults, self.labels)

    def to_ref(self):
        # Each date with its zone, RFC 9557 style: 2024-07-01T00:00:00-04:00[America/New_York]
        return {"type": "DatesClock", "dates": [_date_repr(d)[1:-1] for d in self.dates],
                "parameter_defaults": self.parameter_defaults, "labels": self.labels}

    @classmethod
    def _from_ref(cls, ref):
        dates = []
        for text in ref["dates"]:
            stamp, _, zone = str(text).partition("[")
            zone = _zone_from_name(zone.rstrip("]"), "DatesClock") if zone else UTC
            dates.append(_from_iso(stamp, zone, "DatesClock", "date"))
        return cls(dates, parameter_defaults=ref["parameter_defaults"], labels=ref["labels"])

    def __repr__(self):
        return (f"DatesClock([{', '.join(_date_repr(d) for d in self.dates)}], "
                f"{self._extras_repr()})")


_CLOCKS = {"IntervalClock": IntervalClock, "CronClock": CronClock, "DatesClock": DatesClock}


# -- wall time to instants -------------------------------------------------------
# Longest clock change to look back over (real zones move by at most 2 hours).
_SHIFT_WINDOW = _dt.timedelta(hours=4)


def _instants(wall, zone):
    """The UTC instants a naive wall time names in `zone`: (first, second).

    (t, None) for an ordinary time, (t0, t1) for a time the autumn change
    repeats, (None, None) for a time the spring change skips.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return first, None
    if first < second:
        return first, second
    # In a gap, fold=0 reads the wall time with the offset before the jump
    # and fold=1 with the one after: the round trip does not come back.
    return None, None


def _gap_end(wall, zone):
    """The first real instant after the gap that skipped `wall`: the jump itself."""
    after_jump = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)   # later than the jump
    before_jump = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)  # earlier than it
    offset = after_jump.astimezone(zone).utcoffset()
    low, high = before_jump, after_jump  # offset(low) differs; offset(high) is the new one
    while high - low > _dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    # Transitions fall on whole seconds: the instant the new offset starts.
    whole = high.replace(microsecond=0)
    return whole if whole.astimezone(zone).utcoffset() == offset else high


def _first_instant(wall, zone):
    """A wall time as one instant: its first occurrence, or the end of its gap."""
    first, _ = _instants(wall, zone)
    return _gap_end(wall, zone) if first is None else first


# -- cron checking -----------------------------------------------------------------
def _check_cron(cron):
    if not isinstance(cron, str):
        raise ScheduleError(
            f"CronClock cron={cron!r}: must be a cron string such as '0 6 * * 1-5', "
            f"not {type(cron).__name__}")
    text = " ".join(cron.split())
    if not text:
        raise ScheduleError(f"CronClock cron {cron!r}: is empty; give five fields "
                            f"({_CRON_LAYOUT}), e.g. '0 6 * * *'")
    if text.startswith("@"):
        if text.lower() not in _CRON_ALIASES:
            raise ScheduleError(
                f"CronClock cron {cron!r}: {text!r} is not a cron alias; use one of "
                f"{', '.join(sorted(_CRON_ALIASES))} or five fields ({_CRON_LAYOUT})")
        return text
    fields = text.split(" ")
    if len(fields) not in (5, 6, 7):
        raise ScheduleError(
            f"CronClock cron {cron!r}: has {len(fields)} field(s); give five "
            f"({_CRON_LAYOUT}), e.g. '30 6 * * 1-5' for 06:30 on weekdays")
    try:
        croniter(text)
    except CroniterError as exc:
        problem = _diagnose_cron(fields)
        raise ScheduleError(
            f"CronClock cron {cron!r}: {problem or exc}. Fields are: {_CRON_LAYOUT}"
            + (" second" if len(fields) > 5 else "") + (" year" if len(fields) > 6 else "")
        ) from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ScheduleError(f"CronClock cron {cron!r}: not a valid cron expression ({exc}); "
                            f"fields are: {_CRON_LAYOUT}") from None
    return text


def _diagnose_cron(fields):
    """Which field of a cron expression croniter refused, and why (or None)."""
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=False):
        for item in text.split(","):
            problem = _diagnose_cron_item(item, name, low, high, names)
            if problem:
                return problem
    return None


def _diagnose_cron_item(item, name, low, high, names):
    where = f"{name} field"
    if not item:
        return f"{where} has an empty item (two commas, or a trailing comma)"
    base, slash, step = item.partition("/")
    if slash:
        if not step.isdigit() or int(step) == 0:
            return f"{where} step {step!r} in {item!r} must be a whole number of 1 or more"
    if base in ("*", "?") or (name == "day-of-month" and base.upper() == "L"):
        return None
    if name == "day-of-week" and "#" in base:
        base = base.split("#", 1)[0]
    bounds = base.split("-")
    if len(bounds) > 2:
        return f"{where} {item!r} is not a value or a range like 1-5"
    values = []
    for bound in bounds:
        if bound.isdigit():
            value = int(bound)
        elif names and bound.lower() in names:
            value = names.index(bound.lower()) + (1 if name == "month" else 0)
        else:
            allowed = f"{low}-{high}" + (f" or {names[0].upper()}-{names[-1].upper()}"
                                         if names else "")
            return f"{where} {bound!r} is not a number ({allowed}) or *"
        if not low <= value <= high:
            return f"{where} {value} is out of range {low}-{high}"
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        return (f"{where} range {base!r} runs backwards; write it low-high, e.g. "
                f"{values[1]}-{values[0]}")
    return None


# -- schedules ------------------------------------------------------------------
class Schedule:
    """The start times of a flow: the clocks' events merged in time order.

    Two clocks firing at the same instant with the same parameter defaults
    and labels give one event; with different ones, one event each.
    """

    def __init__(self, clocks, filters=None, or_filters=None, not_filters=None,
                 adjustments=None):
        for what, value in (("filters", filters), ("or_filters", or_filters),
                            ("not_filters", not_filters), ("adjustments", adjustments)):
            if value:
                raise ScheduleError(
                    f"Schedule({what}=...): {what} are not supported; express the times "
                    "in the clock instead (a cron expression can name weekdays, hours "
                    "and days of the month), or use several clocks")
        if isinstance(clocks, Clock):
            clocks = [clocks]
        if not isinstance(clocks, (list, tuple)) or not clocks:
            raise ScheduleError(
                f"Schedule(clocks={clocks!r}): give a list of one or more clocks, e.g. "
                "Schedule(clocks=[CronClock('0 6 * * *')])")
        for clock in clocks:
            if not isinstance(clock, Clock):
                raise ScheduleError(
                    f"Schedule clocks: {clock!r} is a {type(clock).__name__}, not a clock; "
                    "use IntervalClock, CronClock or DatesClock")
        self.clocks = list(clocks)

    @property
    def start_date(self):
        starts = [c.start_date for c in self.clocks]
        return None if any(s is None for s in starts) else min(
            starts, key=lambda d: d.astimezone(UTC))

    @property
    def end_date(self):
        ends = [c.end_date for c in self.clocks]
        return None if any(e is None for e in ends) else max(
            ends, key=lambda d: d.astimezone(UTC))

    def events(self, after=None):
        """ClockEvents strictly after `after` (now when None), merged in time order."""
        after = _after(after, "Schedule")
        merged = heapq.merge(*(clock.events(after) for clock in self.clocks),
                             key=lambda event: event._instant)
        current, seen = None, set()
        for event in merged:
            instant = event._instant
            if instant != current:
                current, seen = instant, set()
            identity = event._identity()
            if identity not in seen:
                seen.add(identity)
                yield event

    def next(self, n, after=None, return_events=False):
        """The next `n` start times after `after` (now when None), as aware
        datetimes, or as ClockEvents with `return_events=True`."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ScheduleError(f"Schedule.next(n={n!r}): n must be a whole number >= 0")
        found = []
        for event in self.events(after):
            if len(found) >= n:
                break
            found.append(event if return_events else event.start_time)
        return found

    def next_after(self, dt, return_events=False):
        """The first start time strictly after `dt`, or None when there is none."""
        found = self.next(1, after=_aware(dt, "Schedule.next_after", "dt"),
                          return_events=return_events)
        return found[0] if found else None

    def to_ref(self):
        return {"type": "Schedule", "clocks": [clock.to_ref() for clock in self.clocks]}

    @classmethod
    def from_ref(cls, ref):
        if not isinstance(ref, dict) or not isinstance(ref.get("clocks"), list):
            raise ScheduleError(f"Stored schedule {ref!r} has no list of clocks; register "
                                "the flow again")
        return cls([Clock.from_ref(clock) for clock in ref["clocks"]])

    def digest(self):
        """A short stable digest of what the schedule is (changes when it does)."""
        text = json.dumps(self.to_ref(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __eq__(self, other):
        return isinstance(other, Schedule) and other.to_ref() == self.to_ref()

    def __hash__(self):
        return hash(self.digest())

    def __repr__(self):
        return f"Schedule(clocks=[{', '.join(repr(clock) for clock in self.clocks)}])"


def IntervalSchedule(interval=None, start_date=None, end_date=None):
    """A schedule of one IntervalClock. Prefect 1's argument order,
    `IntervalSchedule(start_date, interval)`, works too."""
    if isinstance(interval, _dt.datetime) and not isinstance(start_date, _dt.datetime):
        interval, start_date = start_date, interval
    if interval is None:
        raise ScheduleError("IntervalSchedule needs an interval, e.g. "
                            "IntervalSchedule(interval=timedelta(minutes=5))")
    return Schedule(clocks=[IntervalClock(interval, start_date=start_date, end_date=end_date)])


def CronSchedule(cron, start_date=None, end_date=None, day_or=True):
    """A schedule of one CronClock."""
    return Schedule(clocks=[CronClock(cron, start_date=start_date, end_date=end_date,
                                      day_or=day_or)])


# -- in words ----------------------------------------------------------------------

_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def describe_schedule(ref):
    """A stored schedule (`Schedule.to_ref()`) in words, for people:
    "every weekday at 06:00 Europe/Berlin; every 1 hour"."""
    if not isinstance(ref, dict):
        return None
    clocks = ref.get("clocks") or []
    return "; ".join(_describe_clock(c) for c in clocks) or "no clocks"


def _describe_clock(ref):
    kind = ref.get("type")
    if kind == "IntervalClock":
        seconds = float(ref.get("interval") or 0)
        for size, unit in _UNITS:
            if seconds >= size and seconds % size == 0:
                count = int(seconds // size)
                return f"every {count} {unit}{'' if count == 1 else 's'}"
        return f"every {seconds:g} seconds"
    if kind == "CronClock":
        return _describe_cron(ref.get("cron", ""), ref.get("timezone") or "UTC")
    if kind == "DatesClock":
        dates = ref.get("dates") or []
        if len(dates) == 1:
            return f"once, at {dates[0]}"
        return f"at {len(dates)} set times, the last {dates[-1]}" if dates else "never"
    return f"a {kind} clock"


def _describe_cron(cron, zone):
    expression = _CRON_ALIASES.get(cron.lower(), cron).split()
    fallback = f"cron '{cron}' ({zone})"
    if len(expression) != 5:
        return fallback
    minute, hour, dom, month, dow = expression
    if month != "*" or dom != "*":
        return fallback
    if minute.startswith("*/") and hour == "*" and dow == "*" and minute[2:].isdigit():
        return f"every {int(minute[2:])} minutes"
    if minute == "*" and hour == "*" and dow == "*":
        return "every minute"
    if not minute.isdigit():
        return fallback
    if hour == "*" and dow == "*":
        return f"every hour at :{int(minute):02d}"
    if not hour.isdigit():
        return fallback
    days = _describe_dow(dow)
    if days is None:
        return fallback
    return f"{days} at {int(hour):02d}:{int(minute):02d} {zone}"


def _describe_dow(dow):
    if dow in ("*", "0-6", "1-7"):
        return "every day"
    if dow in ("1-5", "mon-fri", "MON-FRI"):
        return "every weekday"
    if dow in ("0,6", "6,0", "sat,sun", "SAT,SUN"):
        return "every weekend day"
    names = []
    for part in dow.split(","):
        if not part.isdigit() or int(part) > 7:
            return None
        names.append(_DAY_NAMES[int(part) % 7])
    return "every " + ", ".join(names)
