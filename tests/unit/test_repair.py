"""Late data and backfills, the pure part: the retention a TTL clause gives, the range a run
audits, the backfills refused, and the audit record that travels in snapshot summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iceberg_offload.core.audit import AuditReport, Bucket, BucketDiff, BucketStats
from iceberg_offload.core.repair import (
    AUDIT_MODE,
    BACKFILL,
    HORIZON_MARGIN,
    REPAIR_OF,
    REPAIR_RANGES,
    AuditRecord,
    LateDataMode,
    LateDataPolicy,
    RepairError,
    audit_record,
    check_backfill,
    kept_watermark,
    lookback_range,
    parse_ttl,
    repair_properties,
    retention_horizon,
)
from iceberg_offload.core.result import (
    RUN_ID,
    TIMESTAMP_COLUMN,
    WATERMARK_BEFORE,
    WATERMARK_SEQUENCE,
    WATERMARK_TIMESTAMP,
    ResultError,
)
from iceberg_offload.core.watermark import Watermark

T = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)


@pytest.mark.parametrize(
    ("engine_full", "ttl"),
    [
        (
            "MergeTree PARTITION BY toYYYYMMDD(exchange_timestamp) ORDER BY (exchange_timestamp, sequence) "
            "TTL toDateTime(exchange_timestamp) + toIntervalDay(7) SETTINGS index_granularity = 8192",
            7 * DAY,
        ),
        ("MergeTree ORDER BY ts TTL ts + INTERVAL 36 HOUR", 36 * HOUR),
        ("MergeTree ORDER BY ts TTL `ts` + toIntervalMonth(1)", 28 * DAY),  # a month may be 28 days
        # Moving rows to another volume keeps them: only the deleting rule counts.
        ("MergeTree ORDER BY ts TTL ts + toIntervalDay(3) TO VOLUME 'cold', ts + toIntervalWeek(2)", 14 * DAY),
        ("MergeTree ORDER BY ts TTL ts + toIntervalDay(3) TO DISK 'a,b', ts + toIntervalDay(9) DELETE", 9 * DAY),
        ("MergeTree ORDER BY ts TTL ts + toIntervalDay(30), ts + toIntervalDay(2)", 2 * DAY),
        ("MergeTree ORDER BY ts TTL ts + toIntervalDay(2) RECOMPRESS CODEC(ZSTD(9))", None),
        ("MergeTree ORDER BY ts SETTINGS index_granularity = 8192", None),
        ("", None),  # a view
    ],
)
def test_the_retention_of_a_ttl_clause(engine_full: str, ttl: timedelta | None) -> None:
    assert parse_ttl(engine_full) == ttl


def test_a_ttl_rule_it_cannot_read_is_never_guessed() -> None:
    with pytest.raises(RepairError, match="cannot tell how long ClickHouse keeps rows"):
        parse_ttl(
            "MergeTree ORDER BY ts TTL toStartOfDay(ts) + toIntervalDay(1) DELETE WHERE x = 1, dateAdd(day, 3, ts)"
        )


def test_the_horizon_stays_inside_the_ttl() -> None:
    assert retention_horizon(T, 7 * DAY) == T - 7 * DAY + HORIZON_MARGIN
    assert retention_horizon(T, None) is None


@pytest.mark.parametrize(
    ("watermark", "lookback", "horizon", "expected"),
    [
        (None, DAY, None, None),
        (Watermark(T), DAY, None, (T - DAY, T)),
        (Watermark(T), DAY, T - HOUR, (T - HOUR, T)),  # never before the horizon
        (Watermark(T), DAY, T, None),  # the horizon at the watermark: nothing ClickHouse surely holds
        (Watermark(T, 41), DAY, None, (T - DAY, T)),  # a first-version watermark: the rows before its timestamp
    ],
)
def test_the_range_a_run_audits(
    watermark: Watermark | None,
    lookback: timedelta,
    horizon: datetime | None,
    expected: tuple[datetime, datetime] | None,
) -> None:
    assert lookback_range(watermark, lookback, horizon) == expected


@given(
    mark=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
    lookback=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=400)),
    horizon_offset=st.one_of(st.none(), st.timedeltas(min_value=-timedelta(days=400), max_value=timedelta(days=400))),
)
def test_an_audited_range_is_inside_the_lookback_and_the_horizon(
    mark: datetime, lookback: timedelta, horizon_offset: timedelta | None
) -> None:
    horizon = None if horizon_offset is None else mark + horizon_offset
    span = lookback_range(Watermark(mark), lookback, horizon)
    if span is None:
        assert horizon is not None and horizon >= mark
        return
    lower, upper = span
    assert upper == mark and mark - lookback <= lower < upper
    assert horizon is None or lower >= horizon


@pytest.mark.parametrize(
    ("lower", "upper", "watermark", "horizon", "allow", "refusal"),
    [
        (T - HOUR, T - 2 * HOUR, Watermark(T), None, False, "empty or inverted"),
        (T - HOUR, T - HOUR, Watermark(T), None, False, "empty or inverted"),
        (T - HOUR, T, None, None, False, "no committed watermark"),
        (T - HOUR, T + timedelta(microseconds=1), Watermark(T), None, False, "beyond the committed watermark"),
        (T - 9 * DAY, T, Watermark(T), T - 6 * DAY, False, "TTL may have dropped rows"),
        (T - 9 * DAY, T, Watermark(T), T - 6 * DAY, True, None),  # allowDeletes: the user said so
        (T - DAY, T, Watermark(T), T - 6 * DAY, False, None),
        (T - DAY, T, Watermark(T), None, False, None),
    ],
)
def test_backfills_refused_and_allowed(
    lower: datetime,
    upper: datetime,
    watermark: Watermark | None,
    horizon: datetime | None,
    allow: bool,
    refusal: str | None,
) -> None:
    if refusal is None:
        check_backfill(lower, upper, watermark, horizon, allow_deletes=allow)
    else:
        with pytest.raises(RepairError, match=refusal):
            check_backfill(lower, upper, watermark, horizon, allow_deletes=allow)


@pytest.mark.parametrize(
    ("policy", "refusal"),
    [
        ({"lookback": timedelta(0)}, "lookback"),
        ({"bucket": timedelta(0)}, "bucket"),
        ({"bucket": timedelta(milliseconds=1500)}, "whole number of seconds"),
    ],
)
def test_a_policy_that_cannot_work(policy: dict[str, timedelta], refusal: str) -> None:
    with pytest.raises(RepairError, match=refusal):
        LateDataPolicy(**policy)  # type: ignore[arg-type]


def _diff(hour: int, ch: int, ice: int) -> BucketDiff:
    start = T + hour * HOUR
    return BucketDiff(Bucket(start, start + HOUR), BucketStats(ch, 1), BucketStats(ice, 2))


def test_an_audit_record_counts_what_differs_and_what_was_repaired() -> None:
    diffs = (_diff(0, 10, 7), _diff(1, 5, 5), _diff(2, 3, 4))
    report = AuditReport(tuple(d.bucket for d in diffs), diffs)
    record = audit_record(LateDataMode.REPAIR, T, T + 3 * HOUR, T, report, diffs[:2], 15)
    assert (record.differing, record.rows_missing, record.rows_extra) == (3, 3, 1)
    assert (record.repaired_buckets, record.rows_repaired, record.late_rows) == (2, 15, 3)
    assert not record.in_sync  # one bucket left differing
    assert audit_record(LateDataMode.REPAIR, T, T, T, report, diffs, 18).in_sync


@given(
    st.builds(
        AuditRecord,
        mode=st.sampled_from(LateDataMode),
        lower=st.datetimes(timezones=st.just(UTC), min_value=datetime(1971, 1, 1)),
        upper=st.datetimes(timezones=st.just(UTC), min_value=datetime(1971, 1, 1)),
        at=st.datetimes(timezones=st.just(UTC), min_value=datetime(1971, 1, 1)),
        buckets=st.integers(0, 10**6),
        differing=st.integers(0, 10**6),
        rows_missing=st.integers(0, 10**12),
        rows_extra=st.integers(0, 10**12),
        repaired_buckets=st.integers(0, 10**6),
        rows_repaired=st.integers(0, 10**12),
        late_rows=st.integers(0, 10**12),
    )
)
def test_an_audit_record_survives_a_snapshot_summary(record: AuditRecord) -> None:
    assert AuditRecord.from_summary(record.properties()) == record


def test_a_summary_without_an_audit_and_one_unreadable() -> None:
    assert AuditRecord.from_summary({RUN_ID: "r"}) is None
    with pytest.raises(ResultError, match="unreadable audit"):
        AuditRecord.from_summary({AUDIT_MODE: "repair"})


def test_a_repair_keeps_the_watermark_in_its_form() -> None:
    new = {WATERMARK_BEFORE: "2026-12-01T12:00:00.000000Z", TIMESTAMP_COLUMN: "ts", RUN_ID: "r", "added-records": "5"}
    assert kept_watermark(new) == {WATERMARK_BEFORE: new[WATERMARK_BEFORE], TIMESTAMP_COLUMN: "ts"}
    old = {WATERMARK_TIMESTAMP: "2026-12-01T12:00:00Z", WATERMARK_SEQUENCE: "41"}
    assert kept_watermark(old) == old
    buckets = [Bucket(T + i * HOUR, T + (i + 1) * HOUR) for i in range(500)]
    properties = repair_properties(kept_watermark(new), "run-7", "late data", buckets, "c1", backfill="fix-1")
    assert properties[REPAIR_OF] == "run-7" and properties[BACKFILL] == "fix-1"
    assert properties[WATERMARK_BEFORE] == new[WATERMARK_BEFORE] and RUN_ID not in properties
    assert len(properties[REPAIR_RANGES]) <= 2000 and properties[REPAIR_RANGES].endswith("...")
