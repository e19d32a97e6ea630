"""Upstream tables (iceberg_offload.operator.upstream): what an upstream OffloadTable read from
the API tells a table that depends on it, and a story of two tables over many ticks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from decide_kit import SLOT1, SLOT2, Cluster, at, make_spec, record, srun, ts
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.decide import Decision
from iceberg_offload.operator.upstream import Upstream, upstream_of

RUN = srun(SLOT1)
DONE = record(RUN, "Succeeded", completionTime=ts(at(12, 16)), rows=3)
FAILED = record(RUN, "Failed", completionTime=ts(at(12, 16)), rows=0)
MARK = {"timestamp": "2024-03-01T12:05:00.000000Z", "sequence": 4}
FAILING_TRUE = [{"type": "Failing", "status": "True", "reason": "RetriesExhausted"}]
FAILING_FALSE = [{"type": "Failing", "status": "False", "reason": "NotFailing"}]


def table(status: dict[str, Any] | None) -> dict[str, Any]:
    return {"metadata": {"name": "bronze-trades"}, "spec": {}, **({"status": status} if status is not None else {})}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(None, Upstream(False), id="no-such-table"),
        pytest.param(table(None), Upstream(True), id="never-reconciled"),
        pytest.param(
            table({"watermark": MARK, "lastScheduleTime": ts(SLOT1), "activeRun": None, "lastRun": DONE}),
            Upstream(True, Watermark(at(12, 5), 4), SLOT1),
            id="slot-done-settled",
        ),
        pytest.param(
            table({"watermark": MARK, "lastScheduleTime": ts(SLOT2), "activeRun": record(srun(SLOT2), "Running")}),
            Upstream(True, Watermark(at(12, 5), 4)),
            id="run-in-flight-not-settled",
        ),
        pytest.param(
            table({"lastScheduleTime": ts(SLOT1), "lastRun": FAILED, "conditions": FAILING_FALSE}),
            Upstream(True),
            id="failed-retry-to-come-not-settled",
        ),
        pytest.param(
            table({"watermark": MARK, "lastScheduleTime": ts(SLOT1), "lastRun": FAILED, "conditions": FAILING_TRUE}),
            Upstream(True, Watermark(at(12, 5), 4), SLOT1),
            id="failed-for-good-settled",
        ),
        pytest.param(table({"watermark": MARK}), Upstream(True, Watermark(at(12, 5), 4)), id="no-slot-started-yet"),
    ],
)
def test_upstream_of_an_offloadtable(obj: dict[str, Any] | None, expected: Upstream) -> None:
    assert upstream_of(obj) == expected


def started_window(decision: Decision) -> datetime | None:
    return decision.create.window_to if decision.create else None


def test_a_smaller_buffer_runs_once_its_upstream_settled_its_slot() -> None:
    """Same schedule, upstream buffer 10m, downstream 2m: the upstream's watermark never reaches
    the downstream's window end, so the downstream runs as far as the upstream got, once the
    upstream is done with the slot, instead of waiting (and showing Ready) for ever."""
    up = Cluster(spec=make_spec(safetyBuffer="10m"))
    down = Cluster(spec=make_spec(safetyBuffer="2m", dependsOn=["bronze-trades"]))
    started: list[tuple[datetime, datetime | None]] = []

    def tick(now: datetime) -> None:
        up.tick(now)
        down.upstream = {"bronze-trades": upstream_of(table(up.status))}
        decision = down.tick(now)
        if decision.create is not None:
            started.append((now, decision.create.window_to))

    for slot in (SLOT1, SLOT2):
        tick(slot + timedelta(seconds=5))  # the upstream's run of the slot is in flight
        assert down.condition("Blocked") == ("True", "WaitingForUpstream")
        [upstream_run] = up.active()
        up.finish(upstream_run, "COMPLETED", slot + timedelta(minutes=1))
        tick(slot + timedelta(minutes=1, seconds=5))
        for name in down.active():
            down.finish(name, "COMPLETED", slot + timedelta(minutes=2))
        tick(slot + timedelta(minutes=2, seconds=5))
    assert started == [
        (SLOT1 + timedelta(minutes=1, seconds=5), SLOT1 - timedelta(minutes=10)),
        (SLOT2 + timedelta(minutes=1, seconds=5), SLOT2 - timedelta(minutes=10)),
    ]
    assert down.status["watermark"]["timestamp"] == "2024-03-01T12:20:00.000000Z"
