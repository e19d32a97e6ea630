"""The operator's Prometheus metrics (iceberg_offload.operator.metrics), fed by decisions."""

from __future__ import annotations

import pytest
from decide_kit import N1, N2, R1, R1_OK, R2, at, failed, observe, running_status
from iceberg_offload.core.repair import AuditRecord, LateDataMode
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.decide import Decision, Readback, decide
from iceberg_offload.operator.metrics import OffloadMetrics
from prometheus_client import CollectorRegistry

LABELS = {"namespace": "ns", "table": "trades"}


def test_every_run_finished_in_one_tick_is_recorded_and_counted() -> None:
    """Two runs seen finished at once (the status write of the tick that saw the first was
    lost): both are recorded, oldest first, and both counted."""
    second = failed(R2, at(12, 23), error="second")
    decision = decide(observe(at(12, 24), status=running_status(R1_OK), runs=(R1_OK, second)))
    assert [(done.name, done.outcome) for done in decision.finished] == [(N1, "Succeeded"), (N2, "Failed")]
    assert decision.status.last_run is not None and decision.status.last_run.name == N2

    metrics = OffloadMetrics(CollectorRegistry())
    metrics.observe("ns", "trades", decision)
    runs = {
        outcome: metrics.registry.get_sample_value("iceberg_offload_runs_total", {**LABELS, "outcome": outcome})
        for outcome in ("Succeeded", "Failed")
    }
    assert runs == {"Succeeded": 1.0, "Failed": 1.0}
    assert metrics.registry.get_sample_value("iceberg_offload_run_duration_seconds_count", LABELS) == 2.0
    assert metrics.registry.get_sample_value("iceberg_offload_consecutive_failures", LABELS) == 1.0


def test_gauges_follow_the_status() -> None:
    decision = decide(observe(at(12, 10)))
    metrics = OffloadMetrics(CollectorRegistry())
    metrics.observe("ns", "trades", decision)
    assert metrics.registry.get_sample_value("iceberg_offload_ready", LABELS) == 1.0
    assert metrics.registry.get_sample_value("iceberg_offload_runs_total", {**LABELS, "outcome": "Failed"}) is None


# --- late data ------------------------------------------------------------------------------------

AUDITED = {
    "report": AuditRecord(LateDataMode.REPORT, at(11, 10), at(12, 10), at(12, 16), 2, 2, 120, 0),
    "repaired": AuditRecord(LateDataMode.REPAIR, at(11, 10), at(12, 10), at(12, 16), 2, 2, 120, 1, 2, 5000, 120),
}


def audited_decision(audit: AuditRecord | None) -> Decision:
    readback = Readback(Watermark(at(12, 10)), 10, 100, audit)
    return decide(observe(at(12, 21), status=running_status(R1), runs=(R1_OK,), readback=readback))


@pytest.mark.parametrize(
    ("audit", "gauges", "counters"),
    [
        pytest.param(None, (None, None), (None, None), id="not-audited-no-series"),
        pytest.param("report", (2.0, 120.0), (0.0, 0.0), id="report-still-differing"),
        pytest.param("repaired", (0.0, 0.0), (120.0, 5000.0), id="repaired-nothing-left"),
    ],
)
def test_audit_gauges_say_what_is_still_differing_and_counters_what_was_repaired(
    audit: str | None, gauges: tuple[float | None, float | None], counters: tuple[float | None, float | None]
) -> None:
    metrics = OffloadMetrics(CollectorRegistry())
    metrics.observe("ns", "trades", audited_decision(AUDITED[audit] if audit else None))
    sample = metrics.registry.get_sample_value
    assert (
        sample("iceberg_offload_audit_buckets_differing", LABELS),
        sample("iceberg_offload_audit_rows_missing", LABELS),
    ) == gauges
    assert (
        sample("iceberg_offload_late_rows_total", LABELS),
        sample("iceberg_offload_rows_repaired_total", LABELS),
    ) == (counters)


def test_late_rows_are_counted_once_per_run_and_the_gauges_keep_the_last_audit() -> None:
    metrics = OffloadMetrics(CollectorRegistry())
    first = audited_decision(AUDITED["repaired"])
    metrics.observe("ns", "trades", first)
    # The next ticks record nothing new (the run is recorded): the audit stays, counted once.
    for minute in (22, 23):
        again = decide(observe(at(12, minute), status=first.status.to_dict(), runs=(R1_OK,)))
        assert again.finished == [] and again.status.audit == first.status.audit
        metrics.observe("ns", "trades", again)
    sample = metrics.registry.get_sample_value
    assert sample("iceberg_offload_late_rows_total", LABELS) == 120.0
    assert sample("iceberg_offload_rows_repaired_total", LABELS) == 5000.0
    assert sample("iceberg_offload_audit_buckets_differing", LABELS) == 0.0
    metrics.forget("ns", "trades")
    assert sample("iceberg_offload_audit_buckets_differing", LABELS) is None
