"""Table maintenance on the real engines keeps the watermark, and an idle cycle makes no snapshot.

Many cycles of small windows, then maintenance (the operator's job: compaction, manifest
rewrite, expiry keeping one snapshot, orphan removal; or a user's own Spark procedures), then
more cycles: the fault suite's independent oracle (tests/integration/faults/oracle.py) finds no
duplicate, gap, extra row or regression after every step, and the counts of files and
snapshots drop. Where a user's own expiry removed every trace of the watermark, runs refuse
and `iceberg-offload restamp` recovers without a row twice.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from iceberg_offload.cli import main as cli_main
from iceberg_offload.core.maintenance import MAINTENANCE_RECORD, MaintenanceRecord
from iceberg_offload.core.settings import to_env
from iceberg_offload.job.cli import main as job_main
from iceberg_offload.job.errors import OffloadError

sys.path.insert(0, str(Path(__file__).parent / "faults"))
from oracle import Oracle, Position
from runner import environment, oracle_of

BINANCE = "bronze_trades_binance"
CYCLE = timedelta(minutes=15)


def data_files(table: Any) -> int:
    return sum(1 for _ in table.scan().plan_files())


def cycles(env: Any, oracle: Oracle, start: datetime, count: int, step: int) -> datetime:
    """`count` cycles of one table, each on 15 new minutes of trades; the oracle after each."""
    now = start
    for i in range(count):
        env.feed(now - CYCLE - timedelta(minutes=5), now - timedelta(minutes=5), seed=step + i)
        result = env.run(BINANCE, now)
        assert result.outcome == "committed", result
        assert oracle.check(step + i).clean, oracle.findings
        now += CYCLE
    return now


def compact_and_expire_by_hand(env: Any) -> None:
    """A user's own maintenance in Spark SQL: two compactions (so that expiry cuts the lineage
    short between them), then expiry of everything but the current snapshot."""
    name = f"{env.name}.{BINANCE}"
    for _ in range(2):
        env.spark.sql(f"CALL demo.system.rewrite_data_files(table => '{name}', options => map('rewrite-all', 'true'))")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    env.spark.sql(
        f"CALL demo.system.expire_snapshots(table => '{name}', older_than => TIMESTAMP '{stamp}', retain_last => 1)"
    )


def test_operator_maintenance_keeps_the_watermark_and_drops_files_and_snapshots(
    make_env: Any, base: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_env("maintenance_operator")
    oracle = oracle_of(env)
    now = cycles(env, oracle, base + timedelta(hours=1), 6, 0)
    table = env.iceberg(BINANCE)
    snapshots, files, mark = len(table.snapshots()), data_files(table), env.watermark(BINANCE)
    orphan = Path(table.location().removeprefix("file:")) / "data" / "orphan-left-by-a-killed-run.parquet"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"not referenced by any snapshot")
    three_days_ago = time.time() - 3 * 86400
    os.utime(orphan, (three_days_ago, three_days_ago))

    argv = env.argv(
        BINANCE,
        "--maintain",
        "maint-1",
        "--snapshot-max-age-seconds",
        "0",
        "--retain-last",
        "1",
        "--orphan-age-seconds",
        "86400",
    )
    code = job_main(argv, spark=env.spark, settings=env.settings)
    assert code == 0, capsys.readouterr().err

    table = env.iceberg(BINANCE)
    record = MaintenanceRecord.from_json(table.properties[MAINTENANCE_RECORD])
    print(f"maintenance: snapshots {snapshots} -> {len(table.snapshots())}, data files {files} -> {data_files(table)}")
    assert env.watermark(BINANCE) == mark, "maintenance changed the watermark"
    assert oracle.check(10).clean, oracle.findings  # the oracle reads it in its own words
    assert len(table.snapshots()) < snapshots and len(table.snapshots()) <= 2
    assert data_files(table) < files
    assert not orphan.exists(), "the old orphan file was not removed"
    assert (record.run_id, record.watermark, record.orphans_removed) == ("maint-1", str(mark), 1)
    assert record.data_files_after == data_files(table) and record.data_files_rewritten == files

    cycles(env, oracle, now, 3, 20)
    assert oracle.check(30, final=True).clean, oracle.findings


def test_a_users_own_compaction_and_expiry_keep_the_watermark_through_its_tag(make_env: Any, base: datetime) -> None:
    env = make_env("maintenance_by_hand")
    oracle = oracle_of(env)
    now = cycles(env, oracle, base + timedelta(hours=1), 4, 0)
    mark = env.watermark(BINANCE)
    compact_and_expire_by_hand(env)
    table = env.iceberg(BINANCE)
    parent = table.current_snapshot().parent_snapshot_id
    assert parent is not None and table.snapshot_by_id(parent) is None, "expiry left the compaction's parent"
    assert env.watermark(BINANCE) == mark, "the watermark did not survive the user's own expiry"
    assert oracle.check(10).clean, oracle.findings
    cycles(env, oracle, now, 2, 20)
    assert oracle.check(30, final=True).clean, oracle.findings


def test_every_trace_expired_refuses_runs_until_restamped(
    make_env: Any, base: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_env("maintenance_restamp")
    oracle = oracle_of(env)
    now = cycles(env, oracle, base + timedelta(hours=1), 3, 0)
    name = f"{env.name}.{BINANCE}"
    env.spark.sql(f"ALTER TABLE demo.{name} DROP TAG `offload-watermark`")
    compact_and_expire_by_hand(env)
    assert env.watermark(BINANCE) is None
    snapshots = env.snapshot_ids(BINANCE)
    env.feed(now - CYCLE - timedelta(minutes=5), now - timedelta(minutes=5), seed=99)
    with pytest.raises(OffloadError, match="iceberg-offload restamp --table"):
        env.run(BINANCE, now)
    assert env.snapshot_ids(BINANCE) == snapshots, "a refused run wrote something"

    with environment(to_env(env.settings)):
        assert cli_main(["restamp", "--table", name]) == 0  # a dry run
        assert env.snapshot_ids(BINANCE) == snapshots
        assert cli_main(["restamp", "--table", name, "--yes"]) == 0, capsys.readouterr().err
        assert cli_main(["restamp", "--table", name, "--yes"]) == 1, "a second restamp was not refused"
    stamped = env.watermark(BINANCE)
    assert stamped is not None
    newest = max(ts for ts, _ in env.iceberg_rows(BINANCE, ["exchange_timestamp", "sequence"]))
    assert stamped.timestamp == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=newest + 1)
    # The restamp moves the watermark back to just after the newest row, as a reset to there would.
    assert oracle.check(10, {BINANCE: Position(newest + 1)}).clean, oracle.findings
    assert env.run(BINANCE, now).outcome == "committed"
    assert oracle.check(20, final=True).clean, oracle.findings


def test_an_idle_cycle_commits_no_snapshot_and_keeps_the_watermark_moving(make_env: Any, base: datetime) -> None:
    env = make_env("idle_cycles")
    oracle = oracle_of(env)
    now = cycles(env, oracle, base + timedelta(hours=1), 1, 0)
    snapshots = env.snapshot_ids(BINANCE)
    for i in range(4):  # no new trade
        result = env.run(BINANCE, now)
        assert result.outcome == "skipped" and result.watermark is not None
        assert result.watermark.timestamp == now - timedelta(minutes=5)
        assert env.watermark(BINANCE) == result.watermark and oracle.check(10 + i).clean, oracle.findings
        now += CYCLE
    assert env.snapshot_ids(BINANCE) == snapshots, "an idle cycle made a snapshot"
    cycles(env, oracle, now, 2, 20)  # rows again: committed from the idle watermark, each once
    assert oracle.check(30, final=True).clean, oracle.findings
