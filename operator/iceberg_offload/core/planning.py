"""Window planning: which rows a run offloads, and the watermark it commits.

Pure logic: no engine, catalog or network imports. Every bound is computed from explicit
inputs (the clock included), so that the same inputs always give the same window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from iceberg_offload.core.watermark import (
    EPOCH,
    INITIAL_WATERMARK,
    Watermark,
    Window,
    WindowError,
    utc,
)


@dataclass(frozen=True)
class UpperBound:
    """The newest timestamp a run may offload through, and what set it."""

    timestamp: datetime
    reason: str


@dataclass(frozen=True)
class WindowPlan:
    """A planned run: `window` is None when there is nothing to offload yet."""

    window: Window | None
    committed: Watermark
    bound: UpperBound

    @property
    def skipped(self) -> bool:
        return self.window is None


def floor_to_interval(value: datetime, interval: timedelta) -> datetime:
    """The start of the interval-aligned bucket (aligned to the Unix epoch, UTC) holding value."""
    if interval <= timedelta(0):
        raise ValueError(f"interval must be positive, got {interval}")
    step = _micros(interval)
    return EPOCH + timedelta(microseconds=(_micros(utc(value) - EPOCH) // step) * step)


def first_open_candle_start(complete_before: datetime, interval: timedelta) -> datetime:
    """The start of the oldest candle not yet closed when every trade before complete_before is known.

    A candle [s, s + interval) is closed once s + interval <= complete_before, so the candles
    before the returned start are exactly the closed ones: it is the upper bound of a window of
    closed candles.
    """
    return floor_to_interval(complete_before, interval)


def upper_bound(
    *,
    now: datetime,
    buffer: timedelta,
    upstream: Mapping[str, Watermark] | None = None,
    candle_interval: timedelta | None = None,
    requested_to: datetime | None = None,
) -> UpperBound:
    """The (exclusive) bound of the next window: now minus the safety buffer, never past an
    upstream table's committed watermark or a requested end, and for candles the start of the
    first candle that is not closed yet."""
    if buffer < timedelta(0):
        raise ValueError(f"safety buffer must not be negative, got {buffer}")
    bound = UpperBound(utc(now) - buffer, "safety buffer")
    for name, mark in sorted((upstream or {}).items()):
        if mark.timestamp < bound.timestamp:
            bound = UpperBound(mark.timestamp, f"upstream {name}")
    if requested_to is not None and utc(requested_to) < bound.timestamp:
        bound = UpperBound(utc(requested_to), "requested end")
    if candle_interval is not None:
        bound = UpperBound(
            first_open_candle_start(bound.timestamp, candle_interval),
            f"first open candle at {bound.reason}",
        )
    return bound


def plan_window(
    committed: Watermark | None,
    bound: UpperBound,
    *,
    requested_from: Watermark | None = None,
) -> WindowPlan:
    """The window from the committed watermark up to (not including) the bound.

    The committed watermark (read from the target table) is always the lower bound: a
    requested start before it is clipped to it (that part is already offloaded), one after
    it is refused because it would leave rows that are never offloaded.
    """
    start = committed if committed is not None else INITIAL_WATERMARK
    if requested_from is not None:
        if requested_from.timestamp > bound.timestamp:
            raise WindowError(
                f"requested window start {requested_from} is after its end "
                f"{bound.timestamp.isoformat()} ({bound.reason})"
            )
        if requested_from > start:
            raise WindowError(
                f"requested window start {requested_from} is after the committed watermark "
                f"{start}: the rows between them would never be offloaded"
            )
    if bound.timestamp <= start.timestamp:
        return WindowPlan(None, start, bound)
    return WindowPlan(Window(start, Watermark(bound.timestamp)), start, bound)


def split_window(window: Window, parts: int, data_from: datetime | None = None) -> list[Window]:
    """Cut a window into at most `parts` contiguous, non-overlapping pieces of equal time span.

    Inner boundaries are timestamps, so the rows at one timestamp always fall in one piece.
    With `data_from` (the earliest row's timestamp) the cuts are spread over the part of the
    window that holds rows: a first window starting at the epoch still scales out.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    start, end = window.lower.timestamp, window.upper.timestamp
    if data_from is not None and utc(data_from) >= end:
        return [window]  # no row in the window
    if data_from is not None and start < utc(data_from):
        start = utc(data_from)  # the first piece [lower, first cut) then holds the earliest row
    span = _micros(end - start)
    parts = max(1, min(parts, span))
    cuts = sorted({start + timedelta(microseconds=span * i // parts) for i in range(1, parts)})
    bounds = [window.lower, *(Watermark(cut) for cut in cuts if start < cut < end), window.upper]
    return [Window(lo, hi) for lo, hi in pairwise(bounds)]


def subwindow_count(
    window: Window, *, target_span: timedelta, max_parts: int, data_from: datetime | None = None
) -> int:
    """How many pieces to read a window in: one per target span of its rows, at most max_parts."""
    start = max(window.lower.timestamp, utc(data_from)) if data_from is not None else window.lower.timestamp
    span = window.upper.timestamp - start
    return max(1, min(max_parts, math.ceil(span / target_span) if span > timedelta(0) else 1))


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
