"""Exactly once at the edges of a window (issue 8), on the real engines.

Three ways the (timestamp, sequence) protocol lost or duplicated rows, each reproduced here:

1. Silver's sequence is ``exchange_code << 56 | exchange sequence``. A window ending at a millisecond T
   that holds rows of both exchanges: a Binance row at T that reaches silver after the run (still on
   time, within the buffer) sorted below a watermark (T, <Kraken's sequence>) and was never read.
2. Two runs of one window whose rows all lie at the previous watermark's millisecond: an overwrite
   filter ``ts > lower`` does not cover them, so both runs committed them.
3. ``reset --to T``: the rows at T stayed in Iceberg and were offloaded once more.

The invariant every test asserts, in the protocol's own words: the committed watermark W (the newest
snapshot of the current lineage that carries one) means "every source row with ts < W is in Iceberg",
and Iceberg holds each of those rows exactly once and nothing else. (A snapshot of the older protocol
carries (T, seq), meaning "every row with (ts, sequence) <= (T, seq)"; the oracle honours both forms.)

The oracle (:func:`compare`) shares no code with the package: it reads ClickHouse with the
clickhouse_connect client, Iceberg's snapshots and rows with pyiceberg, and compares by key with
multiplicity. The runs go through the package (conftest's ``make_env``), as the operator runs them.

Background trades and the number of rows at each edge come from ``EDGES_SEED`` (random unless set;
printed, and named in every failure message).
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from iceberg_offload.cli import main as cli_main
from iceberg_offload.core.result import OffloadResult
from iceberg_offload.core.settings import to_env
from iceberg_offload.job.errors import OffloadError
from iceberg_offload.job.run import RunRequest, run_offload
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUFFER = timedelta(minutes=5)  # the runbook tables' safety buffer
BINANCE, KRAKEN, SILVER = "bronze_trades_binance", "bronze_trades_kraken", "silver_trades"
KEY = ("exchange_timestamp", "sequence")
# Snapshot summary keys, written out from the protocol (not imported from the package).
BEFORE = "offload.watermark.before"  # every row with ts < this is offloaded
THROUGH_TIMESTAMP = "offload.watermark.timestamp"  # older commits: every row <= (timestamp, sequence)
THROUGH_SEQUENCE = "offload.watermark.sequence"

Key = tuple[int, int]  # (exchange_timestamp in epoch microseconds, sequence)


# --- the oracle: ClickHouse by clickhouse_connect, Iceberg by pyiceberg, nothing of the package ----------


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ch_param(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class Mark:
    """A committed watermark: rows with ts < timestamp (sequence None), or rows <= (timestamp, sequence)."""

    timestamp: datetime
    sequence: int | None = None

    def __str__(self) -> str:
        return (
            f"ts < {iso(self.timestamp)}" if self.sequence is None else f"<= ({iso(self.timestamp)}, {self.sequence})"
        )


def lineage(table: Table) -> Iterator[Snapshot]:
    """The current snapshot and its ancestors, newest first (staged snapshots are not in it)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        yield snapshot
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None


def committed_mark(table: Table) -> Mark | None:
    for snapshot in lineage(table):
        summary = snapshot.summary.additional_properties if snapshot.summary is not None else {}
        if BEFORE in summary:
            return Mark(datetime.fromisoformat(summary[BEFORE]).astimezone(UTC))
        if THROUGH_TIMESTAMP in summary:
            stamp = datetime.fromisoformat(summary[THROUGH_TIMESTAMP]).astimezone(UTC)
            return Mark(stamp, int(summary.get(THROUGH_SEQUENCE) or 0))
    return None


def iceberg_keys(table: Table) -> list[Key]:
    data = table.scan(selected_fields=KEY).to_arrow()
    ts = data.column("exchange_timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    return list(zip(ts, data.column("sequence").to_pylist(), strict=True))


def clickhouse_keys(clickhouse: Any, database: str, table: str, mark: Mark) -> list[Key]:
    select = f"SELECT toUnixTimestamp64Micro(exchange_timestamp), toInt64(sequence) FROM `{database}`.`{table}` WHERE "
    parameters: dict[str, Any] = {"w": ch_param(mark.timestamp), "s": mark.sequence}
    if mark.sequence is None:
        where = "exchange_timestamp < {w:DateTime64(6, 'UTC')}"
    else:
        where = "(exchange_timestamp, toInt64(sequence)) <= ({w:DateTime64(6, 'UTC')}, {s:Int64})"
    return [(int(t), int(s)) for t, s in clickhouse.query(select + where, parameters=parameters).result_rows]


@dataclass(frozen=True)
class Comparison:
    table: str
    mark: Mark | None
    source: Counter[Key] = field(repr=False)
    iceberg: Counter[Key] = field(repr=False)

    @property
    def duplicated(self) -> dict[Key, int]:
        return {k: n for k, n in self.iceberg.items() if n > 1}

    @property
    def missing(self) -> list[Key]:
        return sorted(set(self.source) - set(self.iceberg))

    @property
    def extra(self) -> list[Key]:
        return sorted(set(self.iceberg) - set(self.source))

    @property
    def ok(self) -> bool:
        return self.mark is not None and not (self.duplicated or self.missing or self.extra)

    def __str__(self) -> str:
        dup = self.duplicated
        return (
            f"{self.table}, rows {self.mark}: ClickHouse {self.source.total()} rows, Iceberg {self.iceberg.total()}; "
            f"{len(self.missing)} missing {self.missing[:3]}, {len(dup)} keys duplicated "
            f"({sum(dup.values()) - len(dup)} extra copies) {sorted(dup)[:3]}, "
            f"{len(self.extra)} not in the source window {self.extra[:3]}"
        )


def compare(clickhouse: Any, database: str, catalog: Catalog, namespace: str, table: str) -> Comparison:
    """Iceberg's rows against ClickHouse's rows below Iceberg's committed watermark, by key."""
    iceberg = catalog.load_table(f"{namespace}.{table}")
    mark = committed_mark(iceberg)
    source = Counter(clickhouse_keys(clickhouse, database, table, mark)) if mark is not None else Counter[Key]()
    return Comparison(table, mark, source, Counter(iceberg_keys(iceberg)))


# --- the scenarios' plumbing ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("EDGES_SEED") or random.randrange(2**31))
    print(f"EDGES_SEED={value}")
    return value


def compared(env: Any, table: str) -> Comparison:
    return compare(env.clickhouse, env.name, env.catalog, env.name, table)


def assert_exactly_once(env: Any, table: str, seed: int) -> Comparison:
    comparison = compared(env, table)
    assert comparison.ok, f"EDGES_SEED={seed}: {comparison}"
    return comparison


def lineage_ids(env: Any, table: str) -> list[int]:
    return [s.snapshot_id for s in lineage(env.catalog.load_table(f"{env.name}.{table}"))]


def next_sequence(env: Any, table: str) -> int:
    rows = env.clickhouse.query(f"SELECT toInt64(max(sequence)) FROM `{env.name}`.`{table}`").result_rows
    return int(rows[0][0] or 0) + 1


def insert_binance(env: Any, ts: datetime, count: int) -> list[int]:
    """`count` Binance trades at `ts` with the next sequences; returns them."""
    first = next_sequence(env, BINANCE)
    sequences = list(range(first, first + count))
    rows = [
        [ts, s, "BTCUSDT", 7_000_000_000 + s, Decimal("91000.12345678"), Decimal("0.01"), "buy", False]
        for s in sequences
    ]
    columns = ["exchange_timestamp", "sequence", "symbol", "trade_id", "price", "quantity", "side", "is_buyer_maker"]
    env.clickhouse.insert(BINANCE, rows, column_names=columns, database=env.name)
    return sequences


def insert_kraken(env: Any, ts: datetime, count: int) -> list[int]:
    first = next_sequence(env, KRAKEN)
    sequences = list(range(first, first + count))
    rows = [
        [ts, s, "XBT/USD", 900_000_000 + s, Decimal("90950.5"), Decimal("0.02"), "sell", "limit", None]
        for s in sequences
    ]
    columns = ["exchange_timestamp", "sequence", "pair", "trade_id", "price", "volume", "side", "order_type", "misc"]
    env.clickhouse.insert(KRAKEN, rows, column_names=columns, database=env.name)
    return sequences


def committed(env: Any, table: str, now: datetime) -> OffloadResult:
    result: OffloadResult = env.run(table, now)
    assert result.outcome == "committed", f"{table} at {now}: {result}"
    return result


# --- 1. rows of both exchanges at the window's end ------------------------------------------------------


def test_a_late_row_at_the_window_end_of_two_sources_reaches_silver_once(
    make_env: Any, base: datetime, seed: int
) -> None:
    names = (BINANCE, KRAKEN, SILVER)
    env = make_env("two_sources_at_the_end", tables=names)
    rng = random.Random(seed)
    end = base + timedelta(minutes=20)  # T, a whole millisecond: the end of the first windows
    env.feed(end - timedelta(minutes=20), end + timedelta(minutes=10), seed=seed)
    insert_binance(env, end, rng.randint(1, 3))
    insert_kraken(env, end, rng.randint(1, 3))
    first = end + BUFFER  # now - buffer = T: every first window ends at T
    for table in names:  # silver waits for the bronze watermarks, so bronze runs first
        committed(env, table, first)
    for table in names:
        assert_exactly_once(env, table, seed)

    # A Binance row at T reaches silver after silver's run: on time (within the buffer), merely late.
    (late,) = insert_binance(env, end, 1)
    late_key = (micros(end), 1 << 56 | late)
    in_silver = env.clickhouse.query(
        f"SELECT count() FROM `{env.name}`.{SILVER} WHERE exchange_timestamp = {{t:DateTime64(6, 'UTC')}} "
        "AND sequence = {s:UInt64}",
        parameters={"t": ch_param(end), "s": late_key[1]},
    ).result_rows[0][0]
    assert in_silver == 1, "the materialized view did not carry the late Binance row into silver"

    second = first + timedelta(minutes=5)
    for table in names:
        committed(env, table, second)
    for table in names:
        comparison = assert_exactly_once(env, table, seed)
        assert comparison.mark is not None and comparison.mark.timestamp > end, f"{table}: {comparison.mark}"
    assert late_key in compared(env, SILVER).iceberg


# --- 2. two runs of one window, interleaved ---------------------------------------------------------------


def run_two_together(env: Any, table: str, now: datetime) -> dict[str, OffloadResult | Exception]:
    """Two runs of `table` at `now` in two threads, each on its own Spark session; both plan their window
    before either goes on."""
    planned = threading.Barrier(2)
    results: dict[str, OffloadResult | Exception] = {}

    def hook(phase: str) -> None:
        if phase == "planned":
            planned.wait()

    def run(run_id: str) -> None:
        request = RunRequest(spec=env.spec(table), now=now, run_id=run_id, on_phase=hook)
        try:
            results[run_id] = run_offload(env.spark.newSession(), env.settings, request)
        except Exception as exc:  # the run that loses the race must fail: judged by the caller
            results[run_id] = exc
            planned.abort()  # never leave the other run waiting for this one

    threads = [threading.Thread(target=run, args=(f"together-{i}",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_runs_of_a_window_at_the_watermark_millisecond_commit_it_once(
    make_env: Any, base: datetime, seed: int
) -> None:
    env = make_env("same_window_twice", tables=[BINANCE])
    rng = random.Random(seed)
    mark = base + timedelta(minutes=20)  # T: the first run's watermark
    env.feed(base, mark - timedelta(minutes=1), seed=seed)
    insert_binance(env, mark, rng.randint(2, 4))
    committed(env, BINANCE, mark + BUFFER)
    assert_exactly_once(env, BINANCE, seed)
    # Late rows at T, and nothing after T: the next window holds only rows at the watermark's millisecond.
    insert_binance(env, mark, rng.randint(2, 4))
    lineage_before = lineage_ids(env, BINANCE)

    results = run_two_together(env, BINANCE, mark + BUFFER + timedelta(minutes=1))

    comparison = compared(env, BINANCE)
    won = [r for r in results.values() if isinstance(r, OffloadResult) and r.outcome == "committed"]
    lost = [
        r
        for r in results.values()
        if isinstance(r, OffloadError) or (isinstance(r, OffloadResult) and r.outcome == "failed")
    ]
    assert comparison.ok and len(won) == 1 and len(lost) == 1, (
        f"EDGES_SEED={seed}: {comparison}; {len(won)} runs committed, {len(lost)} failed: {results}"
    )
    assert len(lineage_ids(env, BINANCE)) == len(lineage_before) + 1, "the losing run made a snapshot visible"
    every = {s.snapshot_id for s in env.catalog.load_table(f"{env.name}.{BINANCE}").snapshots()}
    assert every == set(lineage_ids(env, BINANCE)), "the losing run's staged snapshot was left in the metadata"
    assert comparison.mark is not None and comparison.mark.timestamp > mark, comparison.mark


# --- 3. reset to a millisecond ------------------------------------------------------------------------------


def reset(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`iceberg-offload reset ...` in-process: (exit code, stdout and stderr)."""
    capsys.readouterr()
    try:
        code = cli_main(["reset", *argv])
    except SystemExit as exc:  # argparse refusing the arguments
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out + err


def test_reset_to_a_millisecond_offloads_its_rows_once(
    make_env: Any, base: datetime, seed: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env("reset_millisecond", tables=[BINANCE])
    rng = random.Random(seed)
    point = base + timedelta(minutes=20)  # T: several rows here, inside the committed windows
    env.feed(base, point + timedelta(minutes=20), seed=seed)
    insert_binance(env, point, rng.randint(3, 6))
    later = point + BUFFER + timedelta(minutes=10)
    for now in (point + BUFFER + timedelta(minutes=5), later):
        committed(env, BINANCE, now)
    before = assert_exactly_once(env, BINANCE, seed)
    for name, value in to_env(env.settings).items():  # the CLI reads its settings from the environment
        monkeypatch.setenv(name, value)
    table = f"{env.name}.{BINANCE}"
    snapshots = lineage_ids(env, BINANCE)
    doomed = sum(n for (ts, _), n in before.iceberg.items() if ts >= micros(point))
    assert doomed > 100, f"EDGES_SEED={seed}: too few rows from T on ({doomed}) to tell the count apart"

    # The dry run changes nothing and says how many rows it would delete.
    code, out = reset(capsys, "--table", table, "--to", iso(point))
    assert code == 0, f"the dry run failed ({code}):\n{out}"
    assert lineage_ids(env, BINANCE) == snapshots, "the dry run changed the table"
    assert re.search(rf"(?<![\d.:]){doomed}(?![\d.:])", out), (
        f"the dry run does not say it would delete {doomed}:\n{out}"
    )
    # A forward move is refused, in the dry run too.
    assert before.mark is not None
    code, out = reset(capsys, "--table", table, "--to", iso(before.mark.timestamp + timedelta(minutes=1)))
    assert code != 0 and "usage:" not in out, f"a forward reset was not refused ({code}):\n{out}"
    assert lineage_ids(env, BINANCE) == snapshots, "the refused reset changed the table"

    code, out = reset(capsys, "--table", table, "--to", iso(point), "--yes")
    assert code == 0, f"the reset failed ({code}):\n{out}"
    after = assert_exactly_once(env, BINANCE, seed)
    assert after.mark is not None and after.mark.timestamp == point, f"watermark after the reset: {after.mark}"

    committed(env, BINANCE, later)
    again = assert_exactly_once(env, BINANCE, seed)
    assert again.mark is not None and again.mark.timestamp > point, again.mark
    # The same clock as before the reset: the same rows, each once.
    assert again.iceberg == before.iceberg, f"EDGES_SEED={seed}: the rows differ from those before the reset"


# --- 4. a table committed by the first protocol version continues exactly ---------------------------


def test_a_table_committed_by_the_first_protocol_continues_where_it_stopped(
    make_env: Any, base: datetime, seed: int
) -> None:
    """The first version's last commit said (T, s): every row at or before (T, s) is offloaded.
    The state is made here as that version left it (rows through (T, s), that watermark in the
    newest commit's summary); the next run of this version must
    add the rows at T after s and those after T, each once."""
    env = make_env("first_protocol", tables=[BINANCE])
    rng = random.Random(seed)
    point = base + timedelta(minutes=20)
    env.feed(base, point + timedelta(minutes=20), seed=seed)
    at_point = insert_binance(env, point, rng.randint(3, 6))
    cut = at_point[rng.randrange(len(at_point) - 1)]  # the first version's sequence at T: rows after it wait
    # Offload through T (all rows at T), then delete those at T after `cut` in a commit that carries
    # only the first version's summary keys: exactly the state that version left behind.
    env.run(BINANCE, point + BUFFER + timedelta(microseconds=1))
    iceberg = env.catalog.load_table(f"{env.name}.{BINANCE}")
    stamp = point.isoformat()
    legacy = {THROUGH_TIMESTAMP: point.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), THROUGH_SEQUENCE: str(cut)}
    iceberg.delete(f"exchange_timestamp = '{stamp}' AND sequence > {cut}", snapshot_properties=legacy)
    assert committed_mark(env.catalog.load_table(f"{env.name}.{BINANCE}")) == Mark(point, cut)
    assert_exactly_once(env, BINANCE, seed)  # the oracle reads the first version's watermark too

    result = committed(env, BINANCE, point + BUFFER + timedelta(minutes=10))
    after = assert_exactly_once(env, BINANCE, seed)
    assert after.mark is not None and after.mark.timestamp == point + timedelta(minutes=10), after.mark
    held = Counter(seq for ts, seq in after.iceberg.elements() if ts == micros(point))
    assert all(held[s] == 1 for s in at_point), f"EDGES_SEED={seed}: rows at T after the upgrade: {held}"
    assert result.window_from == f"{iso(point)}#{cut}", f"the window did not continue from (T, s): {result}"
