"""Late data on Kubernetes: rows that reach ClickHouse behind the committed watermark.

Real kube-apiserver, the operator as ``kopf run``, the Spark Operator stand-in executing the real
offload job, so each run's audit and repair really happen. Two tables, each in its own namespace
(their waits overlap): one in spec.lateData mode repair, whose next run brings the late rows into
Iceberg and reports InSync True; one in mode report, whose next run only counts them and reports
InSync False. Tables use a far-away schedule: every run here is one the test triggered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from iceberg_offload.core.watermark import parse_timestamp
from iceberg_offload.local.generator import binance_trades
from standin.harness import (
    FAR_AWAY,
    RUN_TIMEOUT,
    Scenario,
    bronze_table,
    condition,
    feed_trades,
    utc_now,
)

TRIGGER = "offload.k2.io/trigger"
TABLE = "binance"
SOURCE = "bronze_trades_binance"
LATE_DATA = {"lookback": "1h", "bucket": "10m"}


@dataclass
class World:
    s: Scenario
    mode: str
    runs: int = 0

    @property
    def iceberg_namespace(self) -> str:
        return self.s.iceberg_namespace

    def trigger(self) -> str:
        """A manual run; the name of its SparkApplication once it exists."""
        self.runs += 1
        self.s.annotate(TABLE, TRIGGER, f"run-{self.runs}")

        def created() -> str | None:
            apps = self.s.apps(TABLE)
            return str(apps[-1]["metadata"]["name"]) if len(apps) == self.runs else None

        return self.s.wait(created, timeout=30, what=f"the SparkApplication of run {self.runs}", table=TABLE)

    def recorded(self, run: str) -> dict[str, Any]:
        """The status once ``run`` is recorded as the last run; the run must have succeeded."""
        status = self.s.wait(
            lambda: (st := self.s.status(TABLE)).get("lastRun", {}).get("name") == run and st,
            timeout=RUN_TIMEOUT,
            what=f"{run} recorded as the last run",
            table=TABLE,
        )
        assert status["lastRun"]["outcome"] in ("Succeeded", "Skipped"), self.s.diagnostics(TABLE)
        return dict(status)

    def sequences_in_iceberg(self, before: datetime | None = None) -> set[int]:
        """The sequences of the Iceberg table's rows (those before ``before``)."""
        table = self.s.standin.iceberg_table(self.iceberg_namespace, SOURCE)
        rows = table.scan(selected_fields=("exchange_timestamp", "sequence")).to_arrow()
        if before is not None:
            column = rows.column("exchange_timestamp")
            rows = rows.filter(pc.less(column, pa.scalar(before, type=column.type)))
        return set(rows.column("sequence").to_pylist())


def started(make: Callable[..., Scenario], mode: str) -> World:
    s = make(f"late-{mode}")
    clickhouse = s.create_sources()
    now = utc_now()
    feed_trades(clickhouse, now - timedelta(minutes=30), now)
    s.apply_connections()
    table = bronze_table(
        s.standin,
        TABLE,
        schedule=FAR_AWAY,
        database=s.database,
        target_namespace=s.iceberg_namespace,
        lateData={**LATE_DATA, "mode": mode},
    )
    s.apply([table])
    s.start_operator()
    return World(s, mode)


def insert_late_rows(s: Scenario, watermark: datetime) -> set[int]:
    """Binance trades a minute long, 20 minutes behind the committed watermark (new sequences):
    rows that arrived after their window was committed. Their sequences."""
    clickhouse = s.clickhouse()
    first = int(clickhouse.query(f"SELECT max(sequence) FROM {SOURCE}").result_rows[0][0] or 0) + 1
    late = binance_trades(
        watermark - timedelta(minutes=20), watermark - timedelta(minutes=19), rate=1.0, first_sequence=first, seed=99
    )
    assert late.num_rows > 10, late.num_rows
    assert pc.max(late.column("exchange_timestamp")).as_py() < watermark
    clickhouse.insert_arrow(SOURCE, late)
    return set(late.column("sequence").to_pylist())


def in_sync_of(s: Scenario) -> dict[str, Any]:
    return condition(s.table(TABLE), "InSync")


def reasons(s: Scenario) -> set[str]:
    return {e.get("reason", "") for e in s.events(TABLE)}


def test_late_rows_are_repaired_in_mode_repair_and_reported_in_mode_report(
    scenario: Callable[..., Scenario],
) -> None:
    worlds = [started(scenario, "repair"), started(scenario, "report")]
    repair, report = worlds
    for w in worlds:
        in_sync = w.s.wait(partial(in_sync_of, w.s), timeout=30, what="a first status", table=TABLE)
        assert (in_sync["status"], in_sync["reason"]) == ("Unknown", "NotAudited"), in_sync

    # The first run offloads everything; there is no watermark before it, so nothing to audit.
    first = {w.mode: w.trigger() for w in worlds}
    watermarks = {}
    for w in worlds:
        status = w.recorded(first[w.mode])
        assert "audit" not in status, status
        watermarks[w.mode] = parse_timestamp(status["watermark"]["timestamp"])

    # Late rows behind each watermark; and rows after it, so that the next run commits a window.
    late = {w.mode: insert_late_rows(w.s, watermarks[w.mode]) for w in worlds}
    audited_before = report.sequences_in_iceberg(watermarks["report"])
    for w in worlds:
        assert not late[w.mode] & w.sequences_in_iceberg()
        feed_trades(w.s.clickhouse(), watermarks[w.mode], utc_now())
    time.sleep(max(0.0, (max(watermarks.values()) + timedelta(seconds=25) - utc_now()).total_seconds()))
    second = {w.mode: w.trigger() for w in worlds}

    status = repair.recorded(second["repair"])
    audit = status["audit"]
    count = len(late["repair"])
    assert audit["mode"] == "repair"
    assert (audit["lateRows"], audit["rowsMissing"], audit["rowsExtra"]) == (count, count, 0), audit
    assert audit["bucketsDiffering"] == 0 and audit["bucketsRepaired"] >= 1, audit
    # [W - 1h, W) in 10-minute buckets aligned to the epoch: 7, the first and last clipped (6 if W is aligned)
    assert audit["rowsRepaired"] >= count and audit["bucketsChecked"] in (6, 7), audit
    assert parse_timestamp(audit["to"]) == watermarks["repair"], audit
    in_sync = condition(repair.s.table(TABLE), "InSync")
    assert (in_sync["status"], in_sync["reason"]) == ("True", "Equal"), in_sync
    assert late["repair"] <= repair.sequences_in_iceberg(), "the late rows did not reach Iceberg"
    assert "LateDataRepaired" in reasons(repair.s) and "OutOfSync" not in reasons(repair.s)

    status = report.recorded(second["report"])
    audit = status["audit"]
    count = len(late["report"])
    assert audit["mode"] == "report"
    assert (audit["rowsMissing"], audit["lateRows"], audit["bucketsRepaired"]) == (count, 0, 0), audit
    assert audit["bucketsDiffering"] >= 1, audit
    in_sync = condition(report.s.table(TABLE), "InSync")
    assert (in_sync["status"], in_sync["reason"]) == ("False", "BucketsDiffer"), in_sync
    assert f"({count} rows missing, 0 extra)" in in_sync["message"] and "not repaired" in in_sync["message"]
    assert not late["report"] & report.sequences_in_iceberg(), "mode report brought late rows in"
    assert report.sequences_in_iceberg(watermarks["report"]) == audited_before, "mode report changed the range"
    assert "OutOfSync" in reasons(report.s) and "LateDataRepaired" not in reasons(report.s)

    # kubectl get -o wide shows the InSync condition.
    for w, expected in ((repair, "True"), (report, "False")):
        wide = w.s.kubectl("get", "offloadtable", TABLE, "-o", "wide")
        header, row = wide.stdout.splitlines()[:2]
        assert "IN SYNC" in header, wide.stdout
        assert row[header.index("IN SYNC") :].split()[0] == expected, wide.stdout
