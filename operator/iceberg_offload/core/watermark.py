"""Watermarks and windows: positions in a table's timestamp order.

Pure logic: no engine, catalog or network imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

SEQUENCE_MAX = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class WindowError(ValueError):
    """A window that cannot be offloaded as asked (reversed, or leaving a gap)."""


def utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp ('Z' or an offset; naive means UTC)."""
    try:
        return utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}") from exc


def format_timestamp(value: datetime) -> str:
    """ISO-8601 UTC with microseconds and a 'Z', the form stored in snapshot summaries."""
    value = utc(value)
    return f"{value.year:04d}-{value.strftime('%m-%dT%H:%M:%S.%f')}Z"


@dataclass(frozen=True)
class Watermark:
    """A position in a table's timestamp order: the rows it covers are offloaded.

    A watermark committed by this protocol has no sequence and covers every row with a
    timestamp before `timestamp` (half-open: rows at `timestamp` are not covered). A watermark
    committed by the first protocol version carries a sequence and covers every row at or before
    (timestamp, sequence), ties at one timestamp ordered by the sequence column; such a
    watermark is only ever read, as the lower bound of a table's first window after an upgrade.
    """

    timestamp: datetime
    sequence: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "timestamp", utc(self.timestamp))
        if self.sequence is not None and not 0 <= self.sequence <= SEQUENCE_MAX:
            raise ValueError(f"sequence {self.sequence} is outside 0..{SEQUENCE_MAX}")

    @property
    def key(self) -> tuple[datetime, int]:
        """Orders watermarks by what they cover: before T < through (T, 0) < through (T, 1) ..."""
        return (self.timestamp, -1 if self.sequence is None else self.sequence)

    def __lt__(self, other: Watermark) -> bool:
        return self.key < other.key

    def __le__(self, other: Watermark) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Watermark) -> bool:
        return self.key > other.key

    def __ge__(self, other: Watermark) -> bool:
        return self.key >= other.key

    def covers(self, timestamp: datetime, sequence: int = 0) -> bool:
        """Whether a row at (timestamp, sequence) is offloaded under this watermark."""
        if self.sequence is None:
            return utc(timestamp) < self.timestamp
        if self.sequence == SEQUENCE_MAX:  # the first version's end of a timestamp: every row at it
            return utc(timestamp) <= self.timestamp
        return (utc(timestamp), sequence) <= (self.timestamp, self.sequence)

    @property
    def legacy(self) -> bool:
        """Committed by the first protocol version: a position within a timestamp."""
        return self.sequence is not None

    def __str__(self) -> str:
        stamp = format_timestamp(self.timestamp)
        return stamp if self.sequence is None else f"{stamp}#{self.sequence}"


INITIAL_WATERMARK = Watermark(EPOCH)


def parse_position(text: str, what: str) -> Watermark:
    """A window bound or reset target as written on a command line: an ISO-8601 timestamp."""
    if "#" in text:
        raise ValueError(
            f"{what} {text!r} names a position within a timestamp (TIMESTAMP#SEQUENCE): windows and "
            "watermarks are timestamps only, give the timestamp"
        )
    return Watermark(parse_timestamp(text))


@dataclass(frozen=True)
class Window:
    """The rows covered by `upper` and not by `lower`: for this protocol's watermarks, the rows
    with lower <= timestamp < upper. The upper bound is always a timestamp (no sequence)."""

    lower: Watermark
    upper: Watermark

    def __post_init__(self) -> None:
        if self.upper.sequence is not None:
            raise WindowError(f"window upper bound {self.upper} must be a timestamp, not a position within one")
        if self.upper < self.lower:
            raise WindowError(f"window lower bound {self.lower} is after its upper bound {self.upper}")

    @property
    def is_empty(self) -> bool:
        return self.lower.timestamp >= self.upper.timestamp

    def holds(self, timestamp: datetime, sequence: int = 0) -> bool:
        return self.upper.covers(timestamp, sequence) and not self.lower.covers(timestamp, sequence)

    def __str__(self) -> str:
        return f"[{self.lower}, {self.upper})"
