"""The fault suite's oracle: ClickHouse against Iceberg, key by key, through the committed watermark.

It shares no code with the offload job (no ``iceberg_offload`` import): ClickHouse is read over
its HTTP interface with urllib, Iceberg with pyiceberg, and the watermark from the snapshot
summaries with the spec's own words:

* the committed watermark is that of the newest snapshot in the main lineage whose summary
  carries one: ``offload.watermark.before`` = W (every row with timestamp < W is offloaded), or
  the older ``offload.watermark.timestamp`` = T with ``offload.watermark.sequence`` = S (every
  row with (timestamp, sequence) <= (T, S)), or a maintenance rewrite's carried one; unless
  the idle-progress property names the current snapshot, and with the watermark tag's snapshot
  where expiry cut the lineage short (committed_position);
* duplicates: a key more than once in Iceberg; gaps: a ClickHouse row the watermark covers that
  Iceberg lacks; extra: an Iceberg row that ClickHouse lacks or the watermark does not cover;
  regressions: the watermark moving back (or vanishing) other than by a reset to exactly there;
* a late row, one that appeared in ClickHouse when the committed watermark already covered it,
  may be missing until the final check (after a repairing cycle): then it is a gap like any.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BEFORE = "offload.watermark.before"
OLD_TIMESTAMP = "offload.watermark.timestamp"
OLD_SEQUENCE = "offload.watermark.sequence"
IDLE = "offload.watermark.idle"
CARRIED = "offload.maintenance.watermark"
CARRIED_FROM = "offload.maintenance.parent"
TAG = "offload-watermark"
# Per table: the third column of its identity (with timestamp and sequence), and whether the
# key is (third, sequence) (silver: exchange, sequence) or (timestamp, sequence, third) (bronze).
TABLES: dict[str, tuple[str, bool]] = {
    "bronze_trades_binance": ("trade_id", False),
    "bronze_trades_kraken": ("trade_id", False),
    "silver_trades": ("exchange", True),
}

Key = tuple[Any, ...]
Row = tuple[int, int, str]  # (timestamp in epoch microseconds, sequence, third column as text)


def micros_of(text: str) -> int:
    """An ISO-8601 timestamp as epoch microseconds (naive means UTC)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return (value - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, order=True)
class Position:
    """A committed watermark as a point in (timestamp, sequence) order: the new form (sequence -1)
    is before every row at `micros`, the old form after (micros, sequence)."""

    micros: int
    sequence: int = -1  # -1: the new form (sequences are >= 0, so it sorts before any row at micros)

    def covers(self, micros: int, sequence: int) -> bool:
        if self.sequence < 0:
            return micros < self.micros
        return (micros, sequence) <= (self.micros, self.sequence)

    def __str__(self) -> str:
        stamp = (EPOCH + timedelta(microseconds=self.micros)).isoformat()
        return f"before {stamp}" if self.sequence < 0 else f"through {stamp}#{self.sequence}"


def position_of(summary: Mapping[str, str]) -> Position | None:
    if BEFORE in summary:
        return Position(micros_of(summary[BEFORE]))
    if OLD_TIMESTAMP in summary:
        return Position(micros_of(summary[OLD_TIMESTAMP]), int(summary.get(OLD_SEQUENCE, "0")))
    return None


def committed_position(table: Table) -> Position | None:
    """The committed watermark, in the protocol's words: the idle-progress property when it
    names the current snapshot; else the newest snapshot of the main lineage that carries one
    (its own, or a maintenance rewrite's carried one whose recorded parent is its parent); else,
    when the lineage ends at a snapshot no longer in the metadata, the snapshot the
    `offload-watermark` tag holds."""
    current = table.metadata.current_snapshot_id
    idle = table.properties.get(IDLE)
    if idle:
        data = json.loads(idle)
        if data["snapshot"] == current:
            return Position(micros_of(data["before"]))
    snapshot = table.current_snapshot()
    while snapshot is not None:
        found = _carried(snapshot)
        if found is not None:
            return found
        parent = snapshot.parent_snapshot_id
        if parent is None:
            return None
        snapshot = table.snapshot_by_id(parent)
    ref = table.metadata.refs.get(TAG)
    tagged = table.snapshot_by_id(ref.snapshot_id) if ref is not None and current is not None else None
    return _carried(tagged) if tagged is not None else None


def _carried(snapshot: Any) -> Position | None:
    summary = snapshot.summary
    props = {str(k): str(v) for k, v in summary.additional_properties.items()} if summary else {}
    found = position_of(props)
    if found is None and props.get(CARRIED_FROM) == str(snapshot.parent_snapshot_id) and CARRIED in props:
        stamp, _, sequence = props[CARRIED].partition("#")
        found = Position(micros_of(stamp), int(sequence) if sequence else -1)
    return found


def key_of(table: str, row: Row) -> Key:
    _, by_third = TABLES[table]
    return (row[2], row[1]) if by_third else row


@dataclass(frozen=True)
class ClickHouseHttp:
    """ClickHouse's HTTP interface, read with urllib (TabSeparated)."""

    url: str  # http://127.0.0.1:PORT
    user: str = "default"
    password: str = ""

    def rows(self, sql: str) -> list[list[str]]:
        request = urllib.request.Request(
            f"{self.url}/?{urllib.parse.urlencode({'default_format': 'TabSeparated'})}",
            data=sql.encode(),
            headers={"X-ClickHouse-User": self.user, "X-ClickHouse-Key": self.password},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read().decode()
        return [line.split("\t") for line in text.splitlines() if line]


def open_iceberg(name: str, jdbc_uri: str, warehouse: str) -> Catalog:
    """The SQLite catalog the job uses (its name and JDBC URI), opened by pyiceberg directly: a SQL
    catalog keeps its tables under its name, so the name must be the job's."""
    if not jdbc_uri.startswith("jdbc:sqlite:"):
        raise ValueError(f"the oracle reads a SQLite catalog only, not {jdbc_uri}")
    return load_catalog(name, type="sql", uri=f"sqlite:///{jdbc_uri.removeprefix('jdbc:sqlite:')}", warehouse=warehouse)


@dataclass
class Findings:
    """What went wrong in one schedule, each finding once (keys are (table, key))."""

    duplicates: set[tuple[str, Key]] = field(default_factory=set)
    gaps: set[tuple[str, Key]] = field(default_factory=set)
    extra: set[tuple[str, Key]] = field(default_factory=set)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the first sighting of each kind, by step

    def counts(self) -> tuple[int, int, int, int]:
        return len(self.duplicates), len(self.gaps), len(self.extra), len(self.regressions)

    @property
    def clean(self) -> bool:
        return not any(self.counts())


@dataclass
class Oracle:
    """Compares one schedule's tables after each step, and remembers each committed watermark."""

    clickhouse: ClickHouseHttp
    catalog: Catalog
    database: str
    namespace: str
    findings: Findings = field(default_factory=Findings)
    marks: dict[str, Position | None] = field(default_factory=dict)
    seen: dict[str, set[Key]] = field(default_factory=dict)  # ClickHouse's keys at the last check
    late: dict[str, set[Key]] = field(default_factory=dict)

    def clickhouse_rows(self, table: str) -> list[Row]:
        third, _ = TABLES[table]
        sql = (
            f"SELECT toUnixTimestamp64Micro(exchange_timestamp), toInt64(sequence), toString({third}) "
            f"FROM `{self.database}`.`{table}`"
        )
        return [(int(t), int(s), x) for t, s, x in self.clickhouse.rows(sql)]

    def iceberg(self, table: str) -> tuple[list[Row], Position | None]:
        loaded = self.catalog.load_table(f"{self.namespace}.{table}")
        third, _ = TABLES[table]
        data = loaded.scan(selected_fields=("exchange_timestamp", "sequence", third)).to_arrow()
        stamps = data.column("exchange_timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        rows = list(
            zip(stamps, data.column("sequence").to_pylist(), map(str, data.column(third).to_pylist()), strict=True)
        )
        return rows, committed_position(loaded)

    def check(self, step: int, resets: Mapping[str, Position] | None = None, *, final: bool = False) -> Findings:
        """Every table after step `step`; `resets`: the tables a reset in this step moved back, and
        where to; `final`: late rows must be there too."""
        for table in TABLES:
            self._check_table(step, table, (resets or {}).get(table), final)
        return self.findings

    def _check_table(self, step: int, table: str, reset_to: Position | None, final: bool) -> None:
        rows, mark = self.iceberg(table)
        source = {key_of(table, r): r for r in self.clickhouse_rows(table)}
        before = self.marks.get(table)
        arrived = set(source) - self.seen.get(table, set())
        late = self.late.setdefault(table, set())
        late |= {k for k in arrived if before is not None and before.covers(source[k][0], source[k][1])}
        self.seen[table] = set(source)
        counted = Counter(key_of(table, r) for r in rows)
        found = self.findings
        self._note(step, table, "duplicates", found.duplicates, {k for k, n in counted.items() if n > 1})
        covered = {k for k, r in source.items() if mark is not None and mark.covers(r[0], r[1])}
        self._note(step, table, "gaps", found.gaps, covered - set(counted) - (set() if final else late))
        self._note(step, table, "extra", found.extra, set(counted) - covered)
        previous = self.marks.get(table)
        if previous is not None and (mark is None or mark < previous) and mark != reset_to:
            found.regressions.append(f"step {step}: {table} watermark moved back from {previous} to {mark}")
        self.marks[table] = mark

    def _note(self, step: int, table: str, kind: str, into: set[tuple[str, Key]], keys: set[Key]) -> None:
        new = {(table, k) for k in keys} - into
        if new:
            into |= new
            sample = sorted(k for _, k in new)[:3]
            self.findings.notes.append(f"step {step}: {table}: {len(new)} new {kind}, e.g. {sample}")
