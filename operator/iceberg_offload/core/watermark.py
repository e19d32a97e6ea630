"""Watermarks and windows: positions in a table's (timestamp, sequence) order.

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


@dataclass(frozen=True, order=True)
class Watermark:
    """Everything at or before (timestamp, sequence) is offloaded.

    Rows are ordered by timestamp, ties by sequence; tables without a sequence column
    use sequence 0 throughout.
    """

    timestamp: datetime
    sequence: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "timestamp", utc(self.timestamp))
        if not 0 <= self.sequence <= SEQUENCE_MAX:
            raise ValueError(f"sequence {self.sequence} is outside 0..{SEQUENCE_MAX}")

    @classmethod
    def end_of(cls, timestamp: datetime) -> Watermark:
        """The position after every row at `timestamp`."""
        return cls(timestamp, SEQUENCE_MAX)

    def __str__(self) -> str:
        return f"{format_timestamp(self.timestamp)}#{self.sequence}"


INITIAL_WATERMARK = Watermark(EPOCH, 0)


def parse_watermark(text: str) -> Watermark:
    """A watermark as written on a command line, TIMESTAMP or TIMESTAMP#SEQUENCE (as printed)."""
    stamp, _, seq = text.partition("#")
    return Watermark(parse_timestamp(stamp), int(seq) if seq else 0)


@dataclass(frozen=True)
class Window:
    """The rows with lower < (timestamp, sequence) <= upper."""

    lower: Watermark
    upper: Watermark

    def __post_init__(self) -> None:
        if self.upper < self.lower:
            raise WindowError(f"window lower bound {self.lower} is after its upper bound {self.upper}")

    @property
    def is_empty(self) -> bool:
        return self.lower == self.upper

    def __str__(self) -> str:
        return f"({self.lower}, {self.upper}]"
