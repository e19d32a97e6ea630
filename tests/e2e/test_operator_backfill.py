"""OffloadBackfill end to end: a committed range made equal to ClickHouse again, the lease with the
table's runs, and the backfills that are refused.

Real kube-apiserver, the operator as ``kopf run``, the Spark Operator stand-in executing the real
job in its backfill mode against the embedded ClickHouse and the Iceberg catalog. The table has a
far-away schedule: every run here is one the test asked for. Runs in flight are made observable
by the stand-in's hold (a held SparkApplication stays RUNNING until released), never by sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from iceberg_offload.adapters.audit import audit_range
from iceberg_offload.core.audit import AuditReport
from iceberg_offload.core.watermark import format_timestamp
from iceberg_offload.operator.spec import parse_spec
from standin.harness import (
    FAR_AWAY,
    GROUP_VERSION,
    RUN_TIMEOUT,
    Scenario,
    bronze_table,
    condition,
    feed_trades,
    parse_time,
    utc_now,
)

TRIGGER = "offload.k2.io/trigger"
TABLE = "binance"
HOUR = timedelta(hours=1)


def state(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("applicationState") or {}).get("state") or "")


def offloaded_table(make: Callable[..., Scenario], label: str) -> tuple[Scenario, Any]:
    """One bronze table with 30 minutes of trades, offloaded once by a manual run."""
    s = make(label)
    clickhouse = s.create_sources()
    now = utc_now()
    feed_trades(clickhouse, now - timedelta(minutes=30), now)
    s.apply_connections()
    s.apply(
        [bronze_table(s.standin, TABLE, schedule=FAR_AWAY, database=s.database, target_namespace=s.iceberg_namespace)]
    )
    s.start_operator()
    s.annotate(TABLE, TRIGGER, "first")
    s.wait(
        lambda: (s.status(TABLE).get("lastRun") or {}).get("outcome") == "Succeeded",
        timeout=RUN_TIMEOUT,
        what="the first offload recorded as Succeeded",
        table=TABLE,
    )
    return s, clickhouse


def watermark(s: Scenario) -> datetime:
    return parse_time(s.status(TABLE)["watermark"]["timestamp"])


def backfill(s: Scenario, name: str, lower: datetime, upper: datetime, table: str = TABLE, **spec: Any) -> None:
    doc = {
        "apiVersion": GROUP_VERSION,
        "kind": "OffloadBackfill",
        "metadata": {"name": name},
        "spec": {"table": table, "from": format_timestamp(lower), "to": format_timestamp(upper), **spec},
    }
    s.apply([doc])


def backfill_status(s: Scenario, name: str) -> dict[str, Any]:
    got = s.cluster.request("GET", f"/apis/{GROUP_VERSION}/namespaces/{s.namespace}/offloadbackfills/{name}")
    assert got.ok, got.text[:300]
    return dict((got.body or {}).get("status") or {})


def wait_phase(s: Scenario, name: str, *phases: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = backfill_status(s, name)
        return status if status.get("phase") in phases else None

    return s.wait(reached, timeout=timeout, what=f"OffloadBackfill {name} {'/'.join(phases)}", table=TABLE)


def complete_reason(status: dict[str, Any]) -> str:
    return next(str(c.get("reason")) for c in status["conditions"] if c["type"] == "Complete")


def backfill_apps(s: Scenario) -> list[dict[str, Any]]:
    return [a for a in s.apps(TABLE) if "offload.k2.io/backfill-of" in a["metadata"]["labels"]]


def audit(s: Scenario, clickhouse: Any, lower: datetime, upper: datetime) -> AuditReport:
    spec = parse_spec(TABLE, s.table(TABLE)["spec"]).table_spec(s.standin.catalog.name)
    table = s.standin.iceberg_table(s.iceberg_namespace, "bronze_trades_binance")
    return audit_range(clickhouse, table, spec, lower, upper, HOUR)


def test_backfill_repairs_late_rows_then_a_second_one_finds_the_range_equal(
    scenario: Callable[..., Scenario],
) -> None:
    s, clickhouse = offloaded_table(scenario, "backfill")
    mark = watermark(s)
    last_run = s.status(TABLE)["lastRun"]["name"]
    lower = mark - timedelta(minutes=25)

    # Late rows: they reach ClickHouse inside the committed range, after their window was offloaded.
    late = sum(feed_trades(clickhouse, mark - timedelta(minutes=20), mark - timedelta(minutes=18), seed=99).values())
    assert late > 0
    assert not audit(s, clickhouse, lower, mark).in_sync, "the late rows should make the range differ"

    backfill(s, "fix-late", lower, mark, reason="late rows from a replayed feed")
    done = wait_phase(s, "fix-late", "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert done["commits"] >= 1 and done["rowsWritten"] > 0, done
    assert done["bucketsTotal"] >= 1 and done["startedAt"] and done["finishedAt"], done
    assert audit(s, clickhouse, lower, mark).in_sync, "the backfilled range still differs from ClickHouse"
    (app,) = backfill_apps(s)
    assert done["sparkApplication"] == app["metadata"]["name"]
    assert app["metadata"]["ownerReferences"][0]["kind"] == "OffloadBackfill"
    reasons = [e["reason"] for e in s.events("fix-late")]
    assert "Started" in reasons and "Succeeded" in reasons, reasons

    # The table's reconciler did not take the backfill's run for one of its own.
    status = s.status(TABLE)
    assert status["lastRun"]["name"] == last_run and not status.get("activeRun"), status
    assert watermark(s) == mark, "a backfill moved the watermark"

    # The same range again: equal, nothing committed.
    backfill(s, "fix-late-again", lower, mark)
    again = wait_phase(s, "fix-late-again", "Succeeded", "Failed")
    assert again["phase"] == "Succeeded" and again["commits"] == 0 and again["rowsWritten"] == 0, again
    listed = s.kubectl("get", "obf", "fix-late-again", "--no-headers")
    assert listed.returncode == 0 and "Succeeded" in listed.stdout and TABLE in listed.stdout, listed


def test_backfill_and_the_tables_runs_take_turns_and_bad_ones_are_refused(
    scenario: Callable[..., Scenario],
) -> None:
    s, _ = offloaded_table(scenario, "backfill-lease")
    mark = watermark(s)
    now = utc_now()

    # Refused at once, with their reason; no SparkApplication is created for them.
    refused = {
        "no-such-table": (mark - HOUR, mark, {"table": "no-such-table"}, "TableNotFound"),
        "inverted": (mark, mark - HOUR, {}, "InvalidRange"),
        "beyond-watermark": (mark - HOUR, now + HOUR, {}, "BeyondWatermark"),
        "before-ttl": (now - timedelta(days=30), mark, {}, "BeforeRetention"),
    }
    for name, (lower, upper, spec, _) in refused.items():
        backfill(s, name, lower, upper, **spec)
    for name, (*_, why) in refused.items():
        status = wait_phase(s, name, "Failed", "Succeeded", timeout=30)
        assert status["phase"] == "Failed" and complete_reason(status) == why, (name, status)
        assert "Refused" in [e["reason"] for e in s.events(name)]
    assert backfill_apps(s) == []

    # The table's run in flight (held by the stand-in): a backfill waits for it.
    s.standin.hold(s.namespace)
    s.annotate(TABLE, TRIGGER, "second")
    s.wait(
        lambda: any(state(a) == "RUNNING" for a in s.apps(TABLE)), timeout=30, what="the table's run held", table=TABLE
    )
    backfill(s, "after-the-run", mark - HOUR / 2, mark)
    waiting = wait_phase(s, "after-the-run", "Waiting", "Running", "Succeeded", "Failed", timeout=30)
    assert waiting["phase"] == "Waiting" and complete_reason(waiting) == "TableRunActive", waiting
    s.holds(lambda: backfill_apps(s) == [], seconds=3, what="no backfill run beside the table's run")
    s.standin.release(s.namespace)
    done = wait_phase(s, "after-the-run", "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done

    # A backfill in flight (held): the table's next run waits for it.
    s.standin.hold(s.namespace)
    mark = watermark(s)
    backfill(s, "before-the-run", mark - HOUR / 2, mark)
    wait_phase(s, "before-the-run", "Running", timeout=30)
    s.wait(lambda: any(state(a) == "RUNNING" for a in backfill_apps(s)), timeout=30, what="the backfill's run held")
    runs_before = len(s.apps(TABLE))
    s.annotate(TABLE, TRIGGER, "third")
    s.wait(
        lambda: "waits for backfill" in condition(s.table(TABLE), "Running").get("message", ""),
        timeout=30,
        what="the table's Running condition to say its next run waits for the backfill",
        table=TABLE,
    )
    s.holds(lambda: len(s.apps(TABLE)) == runs_before, seconds=3, what="no table run beside the backfill's")
    s.standin.release(s.namespace)
    assert wait_phase(s, "before-the-run", "Succeeded", "Failed")["phase"] == "Succeeded"

    def third_recorded() -> bool:
        runs = [a["metadata"]["name"] for a in s.apps(TABLE) if a not in backfill_apps(s)]
        last = s.status(TABLE).get("lastRun") or {}
        # Succeeded, or Skipped when no trade arrived since the run before (an empty window commits nothing).
        return len(runs) == 3 and last.get("name") == runs[-1] and last.get("outcome") in ("Succeeded", "Skipped")

    s.wait(
        third_recorded, timeout=RUN_TIMEOUT, what="the waiting run started after the backfill and recorded", table=TABLE
    )
