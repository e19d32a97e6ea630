"""Schema evolution on the real engines: a column added to the ClickHouse source between two runs
appears in Iceberg (optional: the rows offloaded before read NULL, the new ones carry values) and
the watermark continues with no row twice; a widened source column widens its Iceberg column; a
narrowed one, and in `fail` mode an added one, is refused before anything is written; and the
schema's one catalog commit is safe against another run's.

Expectations are read with plain SQL and pyiceberg scans, not through the package's diff."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from iceberg_offload.adapters.iceberg_schema import SchemaMoved, apply_change, columns_of
from iceberg_offload.core.schema_change import SCHEMA_CHANGE_PROPERTY, SchemaChange, diff
from iceberg_offload.job.errors import OffloadError
from pyiceberg.types import IntegerType, LongType, StringType

BINANCE = "bronze_trades_binance"
HOUR = timedelta(hours=1)
KEY = ["exchange_timestamp", "sequence"]


def alter(env: Any, clause: str) -> None:
    env.clickhouse.command(f"ALTER TABLE `{env.name}`.`{BINANCE}` {clause}")


def written(env: Any) -> tuple[list[int], int, int]:
    """What a refused run must leave alone: the snapshots, the schema and the row count."""
    table = env.iceberg(BINANCE)
    return [s.snapshot_id for s in table.snapshots()], table.metadata.current_schema_id, env.iceberg_count(BINANCE)


def no_duplicates_up_to_the_watermark(env: Any) -> None:
    keys = env.iceberg_rows(BINANCE, KEY)
    assert len(keys) == len(set(keys))
    mark = env.watermark(BINANCE)
    assert mark is not None
    assert len(keys) == env.ch_count_through(BINANCE, mark)


def test_added_widened_and_refused_columns(make_env: Any, base: datetime) -> None:
    env = make_env("schema_evolution", [BINANCE])
    env.feed(base, base + HOUR)
    # Each run's clock is its feed's end plus the 5-minute buffer: the watermark lands on the end
    # of the feed, so the next feed's rows are none of them late.
    first = env.run(BINANCE, base + HOUR + timedelta(minutes=5), run_id="first")
    assert first.outcome == "committed" and first.schema_change is None
    before_add = env.iceberg_count(BINANCE)

    # A new column between two runs: the feed's rows take its default, so they carry values.
    alter(env, "ADD COLUMN venue LowCardinality(String) DEFAULT 'spot', ADD COLUMN lot Int32 DEFAULT 7")
    env.feed(base + HOUR, base + 2 * HOUR, seed=8)
    added = env.run(BINANCE, base + 2 * HOUR + timedelta(minutes=5), run_id="added")
    assert added.outcome == "committed" and added.rows > 0
    assert added.schema_change == "added venue string; added lot int"
    table = env.iceberg(BINANCE)
    venue, lot = table.schema().find_field("venue"), table.schema().find_field("lot")
    assert (venue.field_type, venue.required, lot.field_type, lot.required) == (
        StringType(),
        False,
        IntegerType(),
        False,
    )
    assert table.properties[SCHEMA_CHANGE_PROPERTY].startswith("added venue string; added lot int (at ")
    rows = env.iceberg_rows(BINANCE, ["exchange_timestamp", "venue", "lot"])
    old = [r for r in rows if r[1] is None]
    assert len(old) == before_add and all(r[2] is None for r in old)
    new = [r for r in rows if r[1] is not None]
    assert len(new) == added.rows and {(r[1], r[2]) for r in new} == {("spot", 7)}
    no_duplicates_up_to_the_watermark(env)

    # A widening: Int32 -> Int64 in ClickHouse makes the Iceberg column a long.
    alter(env, "MODIFY COLUMN lot Int64 DEFAULT 7")
    env.feed(base + 2 * HOUR, base + 3 * HOUR, seed=9)
    widened = env.run(BINANCE, base + 3 * HOUR + timedelta(minutes=5), run_id="widened")
    assert widened.outcome == "committed" and widened.schema_change == "widened lot int->long"
    assert env.iceberg(BINANCE).schema().find_field("lot").field_type == LongType()
    lots = [r[0] for r in env.iceberg_rows(BINANCE, ["lot"])]
    assert lots.count(7) == added.rows + widened.rows and lots.count(None) == before_add
    no_duplicates_up_to_the_watermark(env)

    # A narrowing back to Int32 is refused with its reason, and nothing is written.
    alter(env, "MODIFY COLUMN lot Int32 DEFAULT 7")
    env.feed(base + 3 * HOUR, base + 4 * HOUR, seed=10)
    untouched = written(env)
    with pytest.raises(OffloadError, match=r"column 'lot' of ClickHouse .* is now Int32 .* a narrowing") as refused:
        env.run(BINANCE, base + 4 * HOUR + timedelta(minutes=5), run_id="narrowed")
    assert "\n" not in str(refused.value)
    assert written(env) == untouched

    # In fail mode an added column is refused the same way; evolve mode then goes on.
    alter(env, "MODIFY COLUMN lot Int64 DEFAULT 7")
    alter(env, "ADD COLUMN note Nullable(String)")
    with pytest.raises(OffloadError, match=r"column 'note' \(Nullable\(String\)\) was added .*schemaEvolution is fail"):
        env.run(BINANCE, base + 4 * HOUR + timedelta(minutes=5), run_id="fail-mode", schema_evolution="fail")
    assert written(env) == untouched
    after = env.run(BINANCE, base + 4 * HOUR + timedelta(minutes=5), run_id="evolved-again")
    assert after.outcome == "committed" and after.schema_change == "added note string"
    no_duplicates_up_to_the_watermark(env)


def test_the_schema_commit_requires_the_schema_it_was_computed_from(make_env: Any) -> None:
    env = make_env("schema_race", [BINANCE])
    names = [c.name for c in columns_of(env.iceberg(BINANCE))]
    wanted = [*zip(names, _ch_types(env), strict=True), ("venue", "String")]
    assert diff(wanted[:-1], columns_of(env.iceberg(BINANCE))).empty  # the source's types match the target's

    def recompute(columns: Any) -> SchemaChange:
        return diff(wanted, columns)

    mine, theirs = env.iceberg(BINANCE), env.iceberg(BINANCE)  # two runs read the same schema
    change = recompute(columns_of(mine))
    assert change.summary() == "added venue string"
    assert apply_change(theirs, change, recompute, "theirs").summary == "added venue string"
    # The same change made by the other run: nothing left to do, and no second schema.
    schema_id = env.iceberg(BINANCE).metadata.current_schema_id
    again = apply_change(mine, change, recompute, "mine")
    assert again.summary is None and again.table.metadata.current_schema_id == schema_id
    assert env.iceberg(BINANCE).properties[SCHEMA_CHANGE_PROPERTY] == "theirs"

    # The schema moved to something else: refused, nothing written.
    stale, other = env.iceberg(BINANCE), env.iceberg(BINANCE)
    more = [*wanted, ("lot", "Int32")]
    change = diff(more, columns_of(stale))
    apply_change(other, diff([*wanted, ("other", "Int64")], columns_of(other)), recompute, "other")
    moved = env.iceberg(BINANCE).metadata.current_schema_id
    with pytest.raises(SchemaMoved, match="changed while this run evolved it") as raised:
        apply_change(stale, change, lambda columns: diff(more, columns), "stale")
    assert "\n" not in str(raised.value)
    table = env.iceberg(BINANCE)
    assert table.metadata.current_schema_id == moved and table.properties[SCHEMA_CHANGE_PROPERTY] == "other"


def _ch_types(env: Any) -> list[str]:
    """The ClickHouse types of the Iceberg table's columns, as the source declares them."""
    rows = env.ch_rows(f"SELECT name, type FROM system.columns WHERE database = '{env.name}' AND table = '{BINANCE}'")
    by_name = dict(rows)
    return [str(by_name[c.name]) for c in columns_of(env.iceberg(BINANCE))]
