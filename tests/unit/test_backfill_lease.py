"""The OffloadTable's side of the backfill lease (operator/observe.py, operator/decide.py): a
backfill's SparkApplication is not one of the table's runs (never recorded, never counted
against the history limits, never stopped), and no run of the table starts while one is in flight."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from decide_kit import R1, SLOT1, SPEC, TRIGGER, at, completed, observe, record, running_status
from iceberg_offload.operator.decide import decide
from iceberg_offload.operator.observe import Reading
from iceberg_offload.operator.observe import observe as observe_reading
from test_observe import CATALOG, table

BACKFILL_RUN = "fix-march-bf-1a2b3c4d"


def app(name: str, state: str, *, backfill: bool, created: str = "2024-03-01T12:15:01Z") -> dict[str, Any]:
    labels = {"offload.k2.io/table": "silver-trades", "offload.k2.io/slot": "backfill" if backfill else "202403011215"}
    if backfill:
        labels["offload.k2.io/backfill-of"] = "silver-trades"
    status: dict[str, Any] = {"applicationState": {"state": state}}
    if state in ("COMPLETED", "FAILED"):
        status["terminationTime"] = "2024-03-01T12:18:00Z"
    return {"metadata": {"name": name, "creationTimestamp": created, "labels": labels}, "status": status}


def test_observe_keeps_backfills_out_of_the_tables_runs() -> None:
    items = [
        app("silver-trades-202403011215-1", "RUNNING", backfill=False),
        app(BACKFILL_RUN, "RUNNING", backfill=True),
        app("older-bf-99999999", "COMPLETED", backfill=True),
    ]
    observed = observe_reading(Reading(body=table(), now=at(12, 20), runs=items, catalog=CATALOG))
    assert [r.name for r in observed.runs] == ["silver-trades-202403011215-1"]
    assert observed.backfills_active == (BACKFILL_RUN,)


def test_finished_backfill_runs_are_neither_recorded_nor_cleaned_up() -> None:
    items = [app(f"b{i}-bf-0000000{i}", "COMPLETED" if i % 2 else "FAILED", backfill=True) for i in range(6)]
    body = table(successfulRunHistoryLimit=0, failedRunHistoryLimit=0)
    observed = observe_reading(Reading(body=body, now=at(12, 20), runs=items, catalog=CATALOG))
    decision = decide(observed)
    assert decision.finished == [] and decision.delete == []
    assert decision.status.last_run is None and observed.backfills_active == ()


def _waits(decision: Any) -> bool:
    running = next(c for c in decision.status.conditions if c.type == "Running")
    return decision.create is None and "waits for backfill" in str(running.message)


def test_a_due_slot_waits_for_the_backfill_then_starts() -> None:
    waiting = decide(observe(SLOT1, spec=SPEC, backfills_active=(BACKFILL_RUN,)))
    assert _waits(waiting)
    assert waiting.status.last_schedule_time is None  # the slot is still due
    assert [e.reason for e in waiting.events] == []
    later = decide(observe(SLOT1 + timedelta(minutes=2), spec=SPEC, status=waiting.status.to_dict()))
    assert later.create is not None and later.create.slot == "202403011215"


def test_a_manual_trigger_and_a_retry_wait_too() -> None:
    manual = decide(observe(at(12, 10), spec=SPEC, trigger=TRIGGER, backfills_active=(BACKFILL_RUN,)))
    assert _waits(manual) and manual.status.last_trigger is None
    failed = {
        "observedGeneration": 1,
        "lastScheduleTime": "2024-03-01T12:15:00Z",
        "lastRun": record(completed(R1, at(12, 16)), "Failed", rows=0, message="boom"),
        "consecutiveFailures": 1,
        "lastError": "boom",
        "lastFailureTime": "2024-03-01T12:16:00Z",
    }
    retry = decide(observe(at(12, 20), spec=SPEC, status=failed, backfills_active=(BACKFILL_RUN,)))
    assert _waits(retry)
    assert decide(observe(at(12, 20), spec=SPEC, status=failed)).create is not None


def test_the_tables_own_run_in_flight_is_still_followed() -> None:
    decision = decide(observe(at(12, 16), spec=SPEC, status=running_status(R1), runs=(R1,), backfills_active=("x",)))
    assert decision.status.active_run is not None and decision.status.active_run.name == R1.name
    assert decision.delete == [] and decision.create is None
