"""Cron schedules in a time zone: the newest slot at or before now, and the next one.

Pure logic (croniter computes, nothing else): no Kubernetes, engine or network imports.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from iceberg_offload.core.watermark import utc


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used."""


def _zone(time_zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {time_zone!r}") from None


def check_schedule(expression: str, time_zone: str) -> None:
    """Refuse anything but a valid 5-field cron expression and a known IANA time zone."""
    _zone(time_zone)
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ScheduleError(f"{expression!r} is not a 5-field cron expression")


def last_slot(expression: str, time_zone: str, now: datetime) -> datetime:
    """The newest scheduled time at or before now (UTC)."""
    check_schedule(expression, time_zone)
    local = utc(now).astimezone(_zone(time_zone))
    itr = croniter(expression, local)
    if croniter.match(expression, local.replace(microsecond=0)) and local.second == 0 and local.microsecond == 0:
        return utc(local)
    return utc(itr.get_prev(datetime))


def next_slot(expression: str, time_zone: str, now: datetime) -> datetime:
    """The first scheduled time after now (UTC)."""
    check_schedule(expression, time_zone)
    local = utc(now).astimezone(_zone(time_zone))
    return utc(croniter(expression, local).get_next(datetime))
