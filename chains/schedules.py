"""Schedule arithmetic, pure: validation, the time slot a firing belongs to, and the next fire
times in the schedule's own timezone (daylight-saving changes included)."""
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import ParseException, crontab_parser

from chains.models import ScheduleKind

CRON_FIELDS = {  # field -> (parser size, minimum)
    "minute": (60, 0), "hour": (24, 0), "day_of_month": (31, 1), "month_of_year": (12, 1),
    "day_of_week": (7, 0),
}
SEARCH_DAYS = 366 * 4
MAX_INTERVAL_SECONDS = 10 * 365 * 24 * 3600
MAX_AHEAD_DAYS = 10 * 365


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def cron_sets(schedule) -> dict[str, set[int]]:
    return {field: crontab_parser(size, low).parse(getattr(schedule, field) or "*")
            for field, (size, low) in CRON_FIELDS.items()}


def schedule_errors(schedule, *, now: datetime | None = None) -> dict[str, list[str]]:
    """Field -> reasons; empty when the schedule can be used. With `now`, a one-off time must
    also lie ahead (checked when it is set, not for a schedule that has fired)."""
    errors: dict[str, list[str]] = {}
    try:
        zone(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = [f"unknown timezone {str(schedule.timezone)[:64]!r}"]
    if schedule.kind == ScheduleKind.INTERVAL and not (
        1 <= (schedule.every_seconds or 0) <= MAX_INTERVAL_SECONDS
    ):
        errors["every_seconds"] = [
            f"an interval schedule needs every_seconds between 1 and {MAX_INTERVAL_SECONDS} "
            "(10 years)"]
    if schedule.kind == ScheduleKind.ONCE:
        errors.update(_run_at_errors(schedule.run_at, now))
    if schedule.kind == ScheduleKind.CRONTAB:
        for field, (size, low) in CRON_FIELDS.items():
            try:
                crontab_parser(size, low).parse(getattr(schedule, field) or "*")
            except (ParseException, ValueError) as exc:
                errors[field] = [f"not a crontab field: {exc}"]
        if not errors and not next_fire_times(schedule, after=datetime.now(UTC), count=1):
            errors["day_of_month"] = [f"the schedule never fires: no such day within "
                                      f"{SEARCH_DAYS // 366} years (e.g. February 30)"]
    return errors


def _run_at_errors(run_at: datetime | None, now: datetime | None) -> dict[str, list[str]]:
    if run_at is None:
        return {"run_at": ["a one-off schedule needs run_at"]}
    if run_at > (now or datetime.now(UTC)) + timedelta(days=MAX_AHEAD_DAYS):
        return {"run_at": [f"must be within {MAX_AHEAD_DAYS // 365} years from now"]}
    if now is not None and run_at <= now:
        return {"run_at": ["must be in the future"]}
    return {}


def slot_for(schedule, now: datetime) -> datetime:
    """The time slot a firing at `now` belongs to: the nearest point of the interval's grid,
    the crontab minute, or the one-off time. Two firings for one slot (two beats, a message
    delivered twice) name the same slot, so the database lets only one of them start a run."""
    if schedule.kind == ScheduleKind.INTERVAL:
        every = timedelta(seconds=schedule.every_seconds)
        anchor = schedule.created_at
        return anchor + round((now - anchor) / every) * every
    if schedule.kind == ScheduleKind.ONCE:
        return schedule.run_at
    return now.replace(second=0, microsecond=0)


def next_fire_times(schedule, *, after: datetime, count: int = 5,
                    last_run_at: datetime | None = None) -> list[datetime]:
    """The next `count` fire times after `after`, in the schedule's timezone."""
    tz = zone(schedule.timezone)
    if schedule.kind == ScheduleKind.ONCE:
        return [schedule.run_at.astimezone(tz)] if schedule.run_at > after else []
    if schedule.kind == ScheduleKind.INTERVAL:
        every = timedelta(seconds=schedule.every_seconds)
        start = last_run_at or after
        first = start + every * max(1, -(-(after - start) // every))
        return [(first + every * i).astimezone(tz) for i in range(count)]
    return _cron_times(cron_sets(schedule), tz, after, count)


def _cron_times(sets: dict[str, set[int]], tz: ZoneInfo, after: datetime,
                count: int) -> list[datetime]:
    found: list[datetime] = []
    day = after.astimezone(tz).date()
    for _ in range(SEARCH_DAYS):
        if _day_matches(sets, day):
            for hour in sorted(sets["hour"]):
                for minute in sorted(sets["minute"]):
                    moment = _local(day, hour, minute, tz)
                    if moment is not None and moment > after:
                        found.append(moment)
                        if len(found) == count:
                            return found
        day += timedelta(days=1)
    return found


def _day_matches(sets: dict[str, set[int]], day: date) -> bool:
    # As Celery's crontab does: month, day of month and day of week must all match.
    return (day.month in sets["month_of_year"] and day.day in sets["day_of_month"]
            and (day.isoweekday() % 7) in sets["day_of_week"])


def _local(day: date, hour: int, minute: int, tz: ZoneInfo) -> datetime | None:
    """The wall-clock time in `tz`, or None when the clocks skip it (spring forward). A time
    that happens twice (autumn) is taken once, at its first occurrence."""
    naive = datetime.combine(day, time(hour, minute))
    aware = naive.replace(tzinfo=tz, fold=0)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        return None
    return aware
