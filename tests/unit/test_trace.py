"""Where the committed watermark is read from (core/trace.py): table-driven cases, and a property
test that runs random histories of commits, idle cycles, compactions and expiries against a
model that keeps the watermark in two plain variables."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iceberg_offload.core.result import TIMESTAMP_COLUMN, WATERMARK_BEFORE
from iceberg_offload.core.trace import (
    CARRIED_FROM,
    CARRIED_WATERMARK,
    SnapshotFacts,
    Source,
    TraceError,
    idle_property,
    read_trace,
    restamp_mark,
)
from iceberg_offload.core.watermark import Watermark, format_timestamp

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def mark(minutes: int) -> Watermark:
    return Watermark(T0 + timedelta(minutes=minutes))


def commit(sid: int, parent: int | None, minutes: int) -> SnapshotFacts:
    summary = {WATERMARK_BEFORE: format_timestamp(mark(minutes).timestamp), TIMESTAMP_COLUMN: "ts"}
    return SnapshotFacts(sid, parent, sid, summary)


def rewrite(sid: int, parent: int | None, carried: int | None = None, carried_from: int | None = None) -> SnapshotFacts:
    summary = {}
    if carried is not None:
        summary = {CARRIED_WATERMARK: str(mark(carried)), CARRIED_FROM: str(carried_from)}
    return SnapshotFacts(sid, parent, sid, summary)


def table(*snapshots: SnapshotFacts) -> dict[int, SnapshotFacts]:
    return {s.snapshot_id: s for s in snapshots}


CASES = [
    # (what, snapshots, current, tag, idle property, expected watermark minutes, source)
    ("empty table", table(), None, None, None, None, Source.NONE),
    ("one commit", table(commit(1, None, 15)), 1, 1, None, 15, Source.COMMIT),
    ("compaction passed over", table(commit(1, None, 15), rewrite(2, 1)), 2, 1, None, 15, Source.COMMIT),
    ("carried by the rewrite", table(rewrite(2, 1, 15, 1)), 2, None, None, 15, Source.CARRIED),
    (
        "rebased rewrite carries nothing",
        table(commit(1, None, 15), commit(3, 1, 30), rewrite(4, 3, 15, 1)),
        4,
        3,
        None,
        30,
        Source.COMMIT,
    ),
    ("expired behind two rewrites: the tag", table(commit(1, None, 15), rewrite(3, 2)), 3, 1, None, 15, Source.TAG),
    ("expired, no tag: lost", table(rewrite(3, 2)), 3, None, None, None, Source.NONE),
    (
        "tag newer than the break is no ancestor",
        table(rewrite(3, 2), commit(5, None, 45)),
        3,
        5,
        None,
        None,
        Source.NONE,
    ),
    ("idle progress on the current snapshot", table(commit(1, None, 15)), 1, 1, ("1", 30), 30, Source.IDLE),
    (
        "idle progress void after a commit",
        table(commit(1, None, 15), rewrite(2, 1)),
        2,
        1,
        ("1", 30),
        15,
        Source.COMMIT,
    ),
    ("idle progress on an empty table", table(), None, None, ("none", 30), 30, Source.IDLE),
]


@pytest.mark.parametrize(
    ("what", "snapshots", "current", "tag", "idle", "minutes", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_read_trace(
    what: str,
    snapshots: dict[int, SnapshotFacts],
    current: int | None,
    tag: int | None,
    idle: tuple[str, int] | None,
    minutes: int | None,
    source: Source,
) -> None:
    prop = None
    if idle is not None:
        on = None if idle[0] == "none" else int(idle[0])
        prop = next(iter(idle_property(on, mark(idle[1]), "ts").values()))
    found = read_trace(snapshots, current, tag=tag, idle=prop)
    assert found.watermark == (mark(minutes) if minutes is not None else None), what
    assert found.source is source, what


def test_keys_of_idle_progress_are_a_watermark_a_repair_can_carry() -> None:
    prop = next(iter(idle_property(1, mark(30), "ts").values()))
    found = read_trace(table(commit(1, None, 15)), 1, tag=1, idle=prop)
    assert found.keys == {WATERMARK_BEFORE: format_timestamp(mark(30).timestamp), TIMESTAMP_COLUMN: "ts"}


def test_unreadable_idle_property_is_an_error() -> None:
    with pytest.raises(TraceError, match=r"offload\.watermark\.idle"):
        read_trace(table(commit(1, None, 15)), 1, idle="{not json")


def test_restamp_is_just_after_the_newest_row() -> None:
    newest = T0 + timedelta(seconds=7, milliseconds=3)
    stamped = restamp_mark(newest)
    assert stamped is not None and stamped.covers(newest) and not stamped.covers(newest + timedelta(microseconds=1))
    assert restamp_mark(None) is None


OPS = st.lists(st.sampled_from(["commit", "idle", "compact", "compact-carry", "expire"]), min_size=1, max_size=40)


@given(OPS, st.integers(min_value=0, max_value=2**32))
def test_watermark_survives_maintenance(ops: list[str], seed: int) -> None:
    """The model: `effective` is what the table has offloaded; `durable` what its snapshots
    carry (a maintenance rewrite carries `effective` and moves the tag onto itself). Idle
    progress is lost (safely: the next window is read again) only when a rewrite that does not
    carry it follows; nothing else ever changes what is read."""
    rng = random.Random(seed)
    snapshots: dict[int, SnapshotFacts] = {}
    current: int | None = None
    tag: int | None = None
    idle: str | None = None
    durable: int | None = None
    effective: int | None = None
    clock = 0
    for op in ops:
        clock += 15
        sid = len(snapshots) + 1000 + clock
        if op == "commit":
            snapshots[sid] = commit(sid, current, clock)
            current = tag = sid
            durable = effective = clock
        elif op == "idle":
            idle = next(iter(idle_property(current, mark(clock), "ts").values()))
            effective = clock
        elif op == "compact" and current is not None:
            snapshots[sid] = rewrite(sid, current)
            current, effective = sid, durable
        elif op == "compact-carry" and current is not None:
            snapshots[sid] = rewrite(sid, current, effective, current)
            current, durable = sid, effective
            tag = sid if effective is not None else tag  # maintenance moves the tag onto its rewrite
        elif op == "expire":
            keep = {current, tag}
            for victim in [s for s in snapshots if s not in keep and rng.random() < 0.7]:
                del snapshots[victim]
        found = read_trace(snapshots, current, tag=tag, idle=idle)
        expected = mark(effective) if effective is not None else None
        assert found.watermark == expected, (ops, seed, found)
