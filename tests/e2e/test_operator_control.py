"""The operator driven by hand: manual triggers, concurrency, and a crash in the middle of a run.

Real kube-apiserver, the operator as ``kopf run`` (as in its container), the Spark Operator
stand-in executing the real offload job. Each test has its own namespace, ClickHouse database
and Iceberg namespace. Tables use a far-away schedule, so every run here is one the test asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from standin.harness import (
    FAR_AWAY,
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


def app_state(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("applicationState") or {}).get("state") or "")


def started_table(make: Callable[..., Scenario], label: str, *, hold: bool = False) -> Scenario:
    """A scenario with one bronze table (far-away schedule), 30 minutes of trades, its operator."""
    s = make(label)
    clickhouse = s.create_sources()
    now = utc_now()
    feed_trades(clickhouse, now - timedelta(minutes=30), now)
    if hold:
        s.standin.hold(s.namespace)
    s.apply_connections()
    s.apply(
        [bronze_table(s.standin, TABLE, schedule=FAR_AWAY, database=s.database, target_namespace=s.iceberg_namespace)]
    )
    s.start_operator()
    s.wait(lambda: condition(s.table(TABLE), "Ready"), timeout=30, what="the operator's first status", table=TABLE)
    return s


def last_run(s: Scenario) -> dict[str, Any]:
    return dict(s.status(TABLE).get("lastRun") or {})


def test_manual_trigger_starts_one_run_per_value_and_forbid_waits(scenario: Callable[..., Scenario]) -> None:
    s = started_table(scenario, "trigger", hold=True)
    status = s.status(TABLE)
    assert parse_time(status["nextRun"]) - utc_now() > timedelta(days=1), (
        f"schedule {FAR_AWAY!r}: the next run should be far away, status says {status['nextRun']}"
    )
    assert s.apps() == [], "a table with a far-away schedule started a run by itself"

    # A trigger starts a run within seconds, and the status records the value.
    began = time.monotonic()
    s.annotate(TABLE, TRIGGER, "one")
    (first,) = s.wait(lambda: s.apps(TABLE), timeout=15, what="a SparkApplication for trigger 'one'", table=TABLE)
    assert time.monotonic() - began < 10, "the triggered run took more than 10 s to start"
    s.wait(
        lambda: app_state(s.apps(TABLE)[0]) == "RUNNING" and s.status(TABLE).get("activeRun"),
        timeout=15,
        what="the triggered run RUNNING (held by the stand-in) and shown as activeRun",
        table=TABLE,
    )
    status = s.status(TABLE)
    assert status.get("lastTrigger") == "one", f"status.lastTrigger should record the trigger: {status}"
    assert status["activeRun"]["name"] == first["metadata"]["name"]
    assert condition(s.table(TABLE), "Running")["status"] == "True"

    # concurrencyPolicy Forbid: another trigger while the run is in flight waits for it.
    s.annotate(TABLE, TRIGGER, "two")

    def forbid_waits() -> dict[str, Any] | None:
        running = condition(s.table(TABLE), "Running")
        return running if "Forbid" in running.get("message", "") else None

    running = s.wait(
        forbid_waits,
        timeout=10,
        what="the Running condition to say the next run waits (concurrencyPolicy Forbid)",
        table=TABLE,
    )
    assert running["status"] == "True" and first["metadata"]["name"] in running["message"], running
    s.holds(lambda: len(s.apps(TABLE)) == 1, seconds=3, what="no second run while the first one runs (Forbid)")

    # The first run finishes; the pending trigger then starts its own run.
    s.standin.release(s.namespace)
    s.wait(
        lambda: len(s.apps(TABLE)) == 2 and s.status(TABLE).get("lastTrigger") == "two",
        timeout=RUN_TIMEOUT,
        what="the run of trigger 'two' after the first run finished",
        table=TABLE,
    )
    second = s.apps(TABLE)[1]["metadata"]["name"]
    done = s.wait(
        lambda: (
            (r := last_run(s)).get("name") == second and r.get("outcome") in ("Succeeded", "Skipped", "Failed") and r
        ),
        timeout=RUN_TIMEOUT,
        what=f"{second} recorded as the last run",
        table=TABLE,
    )
    # No trade arrived since the first run: its window holds no row, so it commits none (Skipped).
    assert done["outcome"] in ("Succeeded", "Skipped"), f"the triggered run failed: {done}"
    names = [r.name for r in s.standin.runs(s.namespace)]
    assert names == s.app_names(TABLE), f"the stand-in ran {names}, the API has {s.app_names(TABLE)}"

    # The same value again starts nothing; a new value starts a run.
    s.annotate(TABLE, TRIGGER, "two")
    s.holds(lambda: len(s.apps(TABLE)) == 2, seconds=4, what="no new run for a trigger value already handled")
    s.annotate(TABLE, TRIGGER, "three")
    s.wait(lambda: len(s.apps(TABLE)) == 3, timeout=15, what="a run for trigger 'three'", table=TABLE)
    third = s.apps(TABLE)[2]["metadata"]["name"]
    s.wait(
        lambda: (r := last_run(s)).get("name") == third and r.get("outcome") in ("Succeeded", "Skipped"),
        timeout=RUN_TIMEOUT,
        what=f"{third} succeeded",
        table=TABLE,
    )
    assert s.status(TABLE)["lastTrigger"] == "three"


def test_operator_killed_mid_run_follows_the_run_after_restart(scenario: Callable[..., Scenario]) -> None:
    s = started_table(scenario, "restart", hold=True)
    s.annotate(TABLE, TRIGGER, "before-crash")
    (app,) = s.wait(lambda: s.apps(TABLE), timeout=15, what="the triggered run", table=TABLE)
    name = app["metadata"]["name"]
    s.wait(
        lambda: (
            app_state(s.apps(TABLE)[0]) == "RUNNING" and (s.status(TABLE).get("activeRun") or {}).get("name") == name
        ),
        timeout=15,
        what=f"{name} RUNNING (held) and recorded as the active run",
        table=TABLE,
    )
    (record,) = s.standin.runs(s.namespace)
    assert record.state == "HELD", record

    crashed = s.operators[-1]
    crashed.kill()
    assert not crashed.running
    s.start_operator()
    # The new operator follows the run in flight: no second SparkApplication, still active.
    s.holds(
        lambda: s.app_names(TABLE) == [name] and (s.status(TABLE).get("activeRun") or {}).get("name") == name,
        seconds=4,
        what=f"the restarted operator to keep following {name} and start nothing else",
        table=TABLE,
    )

    s.standin.release(s.namespace)
    done = s.wait(
        lambda: (r := s.status(TABLE).get("lastRun") or {}).get("name") == name and r.get("outcome") and r,
        timeout=RUN_TIMEOUT,
        what=f"{name} recorded by the restarted operator",
        table=TABLE,
    )
    status = s.status(TABLE)
    assert done["outcome"] == "Succeeded", done
    assert not status.get("activeRun"), f"activeRun not cleared: {status.get('activeRun')}"
    assert s.app_names(TABLE) == [name], f"more than one SparkApplication for the slot: {s.app_names(TABLE)}"
    assert [(r.name, r.state) for r in s.standin.runs(s.namespace)] == [(name, "COMPLETED")]
    window_to = parse_time(app["metadata"]["annotations"]["offload.k2.io/window-to"])
    assert parse_time(status["watermark"]["timestamp"]) == window_to, (status["watermark"], window_to)
    assert status["rowCount"] > 0 and done["rows"] == status["rowCount"], status
