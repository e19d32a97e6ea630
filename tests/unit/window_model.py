"""The window model the tests check the package against, in plain comparisons on microseconds.

It restates the protocol and shares no code with iceberg_offload.core.watermark (it reads only a
watermark's two fields): a watermark without a sequence, "before T", covers the rows with a
timestamp before T; one of the first protocol version, (T, s), covers the rows at or before
(T, s), ties at one timestamp ordered by the sequence. A window holds the rows its upper bound
covers and its lower bound does not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


class Mark(Protocol):
    @property
    def timestamp(self) -> datetime: ...
    @property
    def sequence(self) -> int | None: ...


class Bounds(Protocol):
    @property
    def lower(self) -> Mark: ...
    @property
    def upper(self) -> Mark: ...


def micros(value: datetime) -> int:
    """Microseconds since the epoch; a naive value is UTC."""
    return (value.replace(tzinfo=value.tzinfo or UTC) - EPOCH) // US


def rank(mark: Mark) -> tuple[int, int, int]:
    """The order of watermarks: before T, then through (T, 0), (T, 1), ... then before T + 1us."""
    if mark.sequence is None:
        return (micros(mark.timestamp), 0, 0)
    return (micros(mark.timestamp), 1, mark.sequence)


def covered(mark: Mark, ts: datetime, seq: int = 0) -> bool:
    """Whether the row (ts, seq) is offloaded once `mark` is committed."""
    at, row = micros(mark.timestamp), micros(ts)
    if mark.sequence is None:
        return row < at
    return row < at or (row == at and seq <= mark.sequence)


def held(window: Bounds, ts: datetime, seq: int = 0) -> bool:
    """Whether the row (ts, seq) is one the window offloads."""
    return covered(window.upper, ts, seq) and not covered(window.lower, ts, seq)
