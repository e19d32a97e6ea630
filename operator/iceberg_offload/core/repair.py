"""Late data and backfills: which range a run audits, which buckets it may replace, and what the
commits that replace them record.

Pure logic: no engine, catalog or network imports.

A run audits the last `lookback` before its table's committed watermark (never before the
retention horizon: what ClickHouse's TTL may already have dropped) and, in `repair` mode,
replaces every differing bucket with ClickHouse's rows in one commit that keeps the watermark.
The audit's outcome travels in the snapshot summary of the run's commits (AUDIT_* keys), where
the operator reads it back into the OffloadTable's status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from iceberg_offload.core.audit import AuditReport, Bucket, BucketDiff
from iceberg_offload.core.result import (
    TIMESTAMP_COLUMN,
    WATERMARK_BEFORE,
    WATERMARK_SEQUENCE,
    WATERMARK_TIMESTAMP,
    ResultError,
)
from iceberg_offload.core.watermark import Watermark, format_timestamp, parse_timestamp

# A repair's or backfill's commit: which run or backfill made it, and why.
REPAIR_OF = "offload.repair.run-id"
REPAIR_REASON = "offload.repair.reason"
REPAIR_RANGES = "offload.repair.ranges"
# One replacement's id: its commit may hold two snapshots (the rows deleted, the rows added).
REPAIR_COMMIT = "offload.repair.commit-id"
BACKFILL = "offload.backfill"
# The audit a run made, recorded in each commit of the run (its repair and its window).
AUDIT_MODE = "offload.audit.mode"
AUDIT_RUN = "offload.audit.run-id"  # on a commit that only records a run's audit
AUDIT_FROM = "offload.audit.from"
AUDIT_TO = "offload.audit.to"
AUDIT_AT = "offload.audit.at"
AUDIT_BUCKETS = "offload.audit.buckets"
AUDIT_DIFFERING = "offload.audit.buckets-differing"
AUDIT_MISSING = "offload.audit.rows-missing"
AUDIT_EXTRA = "offload.audit.rows-extra"
AUDIT_REPAIRED_BUCKETS = "offload.audit.buckets-repaired"
AUDIT_REPAIRED_ROWS = "offload.audit.rows-repaired"
AUDIT_LATE_ROWS = "offload.audit.late-rows"
_RANGES_MAX = 2000  # characters of REPAIR_RANGES: a summary is metadata, not a log

# A TTL merge may be dropping rows right at the horizon while a repair reads: stay this far inside.
HORIZON_MARGIN = timedelta(hours=1)


class RepairError(ValueError):
    """A repair or backfill that must not run as asked; nothing was changed."""


class LateDataMode(StrEnum):
    REPAIR = "repair"  # audit, and replace differing buckets
    REPORT = "report"  # audit and count only


@dataclass(frozen=True)
class LateDataPolicy:
    mode: LateDataMode = LateDataMode.REPAIR
    lookback: timedelta = timedelta(hours=24)
    bucket: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.lookback <= timedelta(0):
            raise RepairError(f"late-data lookback {self.lookback} must be positive")
        if self.bucket <= timedelta(0) or self.bucket % timedelta(seconds=1):
            raise RepairError(f"audit bucket {self.bucket} must be a positive whole number of seconds")


DEFAULT_POLICY = LateDataPolicy()

# --- retention ---------------------------------------------------------------------------

_TTL_CLAUSE = re.compile(r"\bTTL\s+(?P<body>.*?)(?:\s+SETTINGS\s|$)", re.IGNORECASE | re.DOTALL)
_TTL_SPAN = re.compile(
    r"\+\s*(?:toInterval(?P<unit>Second|Minute|Hour|Day|Week|Month|Quarter|Year)\((?P<count>\d+)\)"
    r"|INTERVAL\s+(?P<count2>\d+)\s+(?P<unit2>SECOND|MINUTE|HOUR|DAY|WEEK|MONTH|QUARTER|YEAR))",
    re.IGNORECASE,
)
# TTL rules that keep the rows (move them, recompress or roll them up) rather than delete them.
_KEEPS_ROWS = re.compile(r"\bTO\s+(?:VOLUME|DISK)\b|\bRECOMPRESS\b|\bGROUP\s+BY\b", re.IGNORECASE)
# The shortest span of each unit: a month's TTL may drop rows after 28 days.
_UNIT = {
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
    "month": timedelta(days=28),
    "quarter": timedelta(days=89),
    "year": timedelta(days=365),
}


def parse_ttl(engine_full: str) -> timedelta | None:
    """How long a ClickHouse table keeps a row, from its `system.tables.engine_full`: the
    shortest of its deleting TTL rules (moves to another volume keep the row), None if it has
    none (a view, a table that keeps every row). RepairError for a deleting rule whose span it
    cannot read: a retention is never guessed."""
    clause = _TTL_CLAUSE.search(engine_full)
    if clause is None:
        return None
    spans = []
    for rule in _top_level(clause.group("body")):
        if _KEEPS_ROWS.search(rule):
            continue
        match = _TTL_SPAN.search(rule)
        if match is None:
            raise RepairError(
                f"cannot tell how long ClickHouse keeps rows from the TTL rule {rule.strip()!r}: repairs and "
                "backfills that could reach before it are refused"
            )
        unit = (match.group("unit") or match.group("unit2")).lower()
        spans.append(int(match.group("count") or match.group("count2")) * _UNIT[unit])
    return min(spans) if spans else None


def _top_level(text: str) -> list[str]:
    """`text` split at its commas outside parentheses and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and char == ",":
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def retention_horizon(now: datetime, ttl: timedelta | None) -> datetime | None:
    """The oldest instant whose rows ClickHouse surely still holds, or None if it keeps all."""
    if ttl is None:
        return None
    return now - ttl + HORIZON_MARGIN


# --- the range a run audits ----------------------------------------------------------------


def audited_upper(watermark: Watermark) -> datetime:
    """The end of the range a watermark covers wholly: for the first version's watermark
    (timestamp, sequence), only the rows before its timestamp."""
    return watermark.timestamp


def lookback_range(
    watermark: Watermark | None, lookback: timedelta, horizon: datetime | None
) -> tuple[datetime, datetime] | None:
    """[lower, upper) a run audits: the lookback before the watermark, not before the horizon;
    None when there is nothing committed to audit."""
    if watermark is None:
        return None
    upper = audited_upper(watermark)
    lower = upper - lookback
    if horizon is not None:
        lower = max(lower, horizon)
    return (lower, upper) if lower < upper else None


def check_backfill(
    lower: datetime,
    upper: datetime,
    watermark: Watermark | None,
    horizon: datetime | None,
    *,
    allow_deletes: bool = False,
) -> None:
    """Refuse (RepairError) a backfill that would write past the watermark, or delete rows the
    hot tier no longer holds without the user allowing it."""
    if upper <= lower:
        raise RepairError(
            f"backfill range [{_iso(lower)}, {_iso(upper)}) is empty or inverted: 'to' must be after 'from'"
        )
    if watermark is None:
        raise RepairError("the table has no committed watermark yet: nothing to backfill, let it run first")
    if upper > audited_upper(watermark):
        raise RepairError(
            f"backfill 'to' {_iso(upper)} is beyond the committed watermark {watermark}: scheduled runs offload "
            "that range; end the backfill at or before the watermark"
        )
    if horizon is not None and lower < horizon and not allow_deletes:
        raise RepairError(
            f"backfill 'from' {_iso(lower)} is before {_iso(horizon)}, where ClickHouse's TTL may have dropped rows "
            "the cold tier keeps: start at or after it, or set allowDeletes to replace the range with what "
            "ClickHouse still holds"
        )


def _iso(moment: datetime) -> str:
    return format_timestamp(moment)


# --- what the commits record ---------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """A run's audit and what it repaired, as recorded in its commits' summaries."""

    mode: LateDataMode
    lower: datetime
    upper: datetime
    at: datetime
    buckets: int
    differing: int
    rows_missing: int
    rows_extra: int
    repaired_buckets: int = 0
    rows_repaired: int = 0
    late_rows: int = 0

    @property
    def in_sync(self) -> bool:
        """Whether the table is equal over the range once the run's repair is in."""
        return self.differing == self.repaired_buckets

    @property
    def finding(self) -> tuple[LateDataMode, int, int, int]:
        """What the audit found, as the status shows it: the mode, the buckets still differing,
        rows missing and rows extra (two audits with one finding tell the status the same)."""
        return (self.mode, self.differing - self.repaired_buckets, self.rows_missing, self.rows_extra)

    def properties(self) -> dict[str, str]:
        return {
            AUDIT_MODE: self.mode.value,
            AUDIT_FROM: format_timestamp(self.lower),
            AUDIT_TO: format_timestamp(self.upper),
            AUDIT_AT: format_timestamp(self.at),
            AUDIT_BUCKETS: str(self.buckets),
            AUDIT_DIFFERING: str(self.differing),
            AUDIT_MISSING: str(self.rows_missing),
            AUDIT_EXTRA: str(self.rows_extra),
            AUDIT_REPAIRED_BUCKETS: str(self.repaired_buckets),
            AUDIT_REPAIRED_ROWS: str(self.rows_repaired),
            AUDIT_LATE_ROWS: str(self.late_rows),
        }

    @classmethod
    def from_summary(cls, summary: Mapping[str, str]) -> AuditRecord | None:
        """The audit a commit recorded, or None if it recorded none."""
        if AUDIT_MODE not in summary:
            return None
        try:
            return cls(
                mode=LateDataMode(summary[AUDIT_MODE]),
                lower=parse_timestamp(summary[AUDIT_FROM]),
                upper=parse_timestamp(summary[AUDIT_TO]),
                at=parse_timestamp(summary[AUDIT_AT]),
                buckets=int(summary[AUDIT_BUCKETS]),
                differing=int(summary[AUDIT_DIFFERING]),
                rows_missing=int(summary[AUDIT_MISSING]),
                rows_extra=int(summary[AUDIT_EXTRA]),
                repaired_buckets=int(summary.get(AUDIT_REPAIRED_BUCKETS, "0")),
                rows_repaired=int(summary.get(AUDIT_REPAIRED_ROWS, "0")),
                late_rows=int(summary.get(AUDIT_LATE_ROWS, "0")),
            )
        except (KeyError, ValueError) as exc:
            raise ResultError(f"snapshot summary has an unreadable audit: {exc}") from exc


def audit_record(
    mode: LateDataMode,
    lower: datetime,
    upper: datetime,
    at: datetime,
    report: AuditReport,
    repaired: Sequence[BucketDiff],
    rows_written: int,
) -> AuditRecord:
    return AuditRecord(
        mode=mode,
        lower=lower,
        upper=upper,
        at=at,
        buckets=len(report.buckets),
        differing=len(report.differing),
        rows_missing=report.rows_missing,
        rows_extra=report.rows_extra,
        repaired_buckets=len(repaired),
        rows_repaired=rows_written,
        late_rows=sum(d.missing for d in repaired),
    )


def kept_watermark(summary: Mapping[str, str]) -> dict[str, str]:
    """The watermark keys of the commit that made the committed watermark, copied unchanged
    onto a repair's commit (a first-version watermark keeps its form)."""
    keys = (WATERMARK_BEFORE, WATERMARK_TIMESTAMP, WATERMARK_SEQUENCE, TIMESTAMP_COLUMN)
    return {k: summary[k] for k in keys if k in summary}


def repair_properties(
    watermark_keys: Mapping[str, str],
    run_id: str,
    reason: str,
    buckets: Sequence[Bucket],
    commit_id: str,
    *,
    backfill: str | None = None,
) -> dict[str, str]:
    """The snapshot summary of a commit that replaces `buckets`: the watermark unchanged, who
    made it, why, and which ranges it replaced."""
    ranges = ",".join(str(b) for b in buckets)
    if len(ranges) > _RANGES_MAX:
        ranges = ranges[: _RANGES_MAX - 3] + "..."
    properties = {
        **watermark_keys,
        REPAIR_OF: run_id,
        REPAIR_REASON: reason,
        REPAIR_RANGES: ranges,
        REPAIR_COMMIT: commit_id,
    }
    if backfill is not None:
        properties[BACKFILL] = backfill
    return properties


def repair_reason(diffs: Sequence[BucketDiff]) -> str:
    missing = sum(d.missing for d in diffs)
    extra = sum(d.extra for d in diffs)
    changed = sum(1 for d in diffs if d.changed)
    return (
        f"{len(diffs)} buckets differed from ClickHouse: {missing} rows missing, {extra} extra, "
        f"{changed} with changed contents"
    )
