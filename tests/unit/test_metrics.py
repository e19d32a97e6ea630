"""The operator's Prometheus metrics (iceberg_offload.operator.metrics), fed by decisions."""

from __future__ import annotations

from decide_kit import N1, N2, R1_OK, R2, at, failed, observe, running_status
from iceberg_offload.operator.decide import decide
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
