"""Prometheus metrics of the operator, per OffloadTable and operator-wide.

The runbook's alerts are written against these names (helm chart: PrometheusRule):
consecutive failures > 3, lag beyond the candle interval > 30 minutes, Iceberg rows decreasing,
audit buckets still differing from ClickHouse for 30 minutes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from iceberg_offload.operator.conditions import READY
from iceberg_offload.operator.decide import Decision
from iceberg_offload.operator.status import StatusAudit

LABELS = ("namespace", "table")


@dataclass
class _TableState:
    watermark: float | None = None
    candle_seconds: float = 0.0
    failures: int = 0
    rows: int | None = None
    ready: bool = False
    audit: StatusAudit | None = None  # the newest late-data audit (status.audit)
    snapshots: int | None = None  # after the newest maintenance run (status.maintenance)
    data_files: int | None = None


class OffloadMetrics(Collector):
    """Counters and histograms updated per reconcile; gauges computed at scrape time, so that
    the lag keeps growing when nothing reconciles."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], _TableState] = {}
        self.rows_offloaded = Counter(
            "iceberg_offload_rows_offloaded",
            "Rows committed to Iceberg by finished runs",
            LABELS,
            registry=self.registry,
        )
        self.runs = Counter(
            "iceberg_offload_runs", "Finished runs by outcome", (*LABELS, "outcome"), registry=self.registry
        )
        self.run_duration = Histogram(
            "iceberg_offload_run_duration_seconds",
            "Duration of finished runs, submission to termination",
            LABELS,
            buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
            registry=self.registry,
        )
        self.late_rows = Counter(
            "iceberg_offload_late_rows",
            "Late rows (missing from Iceberg, behind the watermark) that runs' repairs brought in",
            LABELS,
            registry=self.registry,
        )
        self.rows_repaired = Counter(
            "iceberg_offload_rows_repaired",
            "Rows written by runs' repairs (every row of each replaced audit bucket)",
            LABELS,
            registry=self.registry,
        )
        self.maintenance_runs = Counter(
            "iceberg_offload_maintenance_runs",
            "Finished maintenance runs (compaction, snapshot expiry, orphan removal) by outcome",
            (*LABELS, "outcome"),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "iceberg_offload_reconcile_errors", "Reconciles that failed and will be retried", registry=self.registry
        )
        self.registry.register(self)

    def observe(self, namespace: str, table: str, decision: Decision, candle_seconds: float = 0.0) -> None:
        status = decision.status
        ready = status.condition(READY)
        with self._lock:
            state = self._tables.setdefault((namespace, table), _TableState())
            state.watermark = status.watermark.timestamp.timestamp() if status.watermark else None
            state.candle_seconds = candle_seconds
            state.failures = status.failures
            state.rows = status.row_count
            state.ready = ready is not None and ready.status == "True"
            state.audit = status.audit
            maintained = status.maintenance
            state.snapshots = maintained.snapshots_after if maintained else None
            state.data_files = maintained.data_files_after if maintained else None
        for done in decision.finished:  # each run once, in the decision that records it
            self.runs.labels(namespace, table, done.outcome.value).inc()
            self.run_duration.labels(namespace, table).observe(done.duration_seconds)
            self.rows_offloaded.labels(namespace, table).inc(done.rows)
            if done.audit is not None:
                self.late_rows.labels(namespace, table).inc(done.audit.late_rows)
                self.rows_repaired.labels(namespace, table).inc(done.audit.rows_repaired)
        for maintenance in decision.maintenance.finished if decision.maintenance else ():
            self.maintenance_runs.labels(namespace, table, maintenance.outcome.value).inc()

    def forget(self, namespace: str, table: str) -> None:
        with self._lock:
            self._tables.pop((namespace, table), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        watermark = GaugeMetricFamily(
            "iceberg_offload_watermark_timestamp_seconds", "Committed watermark (Unix time)", labels=LABELS
        )
        lag = GaugeMetricFamily(
            "iceberg_offload_lag_seconds",
            "Now minus the watermark: every row (for candles: every candle) before it is offloaded",
            labels=LABELS,
        )
        candle = GaugeMetricFamily(
            "iceberg_offload_candle_interval_seconds", "Candle length of candle tables, else 0", labels=LABELS
        )
        failures = GaugeMetricFamily(
            "iceberg_offload_consecutive_failures", "Failed attempts since the last success", labels=LABELS
        )
        rows = GaugeMetricFamily("iceberg_offload_iceberg_rows", "Rows in the Iceberg table", labels=LABELS)
        ready = GaugeMetricFamily("iceberg_offload_ready", "1 when the Ready condition is True", labels=LABELS)
        differing = GaugeMetricFamily(
            "iceberg_offload_audit_buckets_differing",
            "Audit buckets the last late-data audit left differing from ClickHouse (found minus repaired)",
            labels=LABELS,
        )
        missing = GaugeMetricFamily(
            "iceberg_offload_audit_rows_missing",
            "Rows missing from Iceberg that the last late-data audit found and did not repair",
            labels=LABELS,
        )
        snapshots = GaugeMetricFamily(
            "iceberg_offload_table_snapshots",
            "Snapshots of the Iceberg table after its last maintenance",
            labels=LABELS,
        )
        data_files = GaugeMetricFamily(
            "iceberg_offload_table_data_files",
            "Data files of the Iceberg table after its last maintenance",
            labels=LABELS,
        )
        with self._lock:
            tables = list(self._tables.items())
        for (namespace, table), state in tables:
            key = [namespace, table]
            if state.watermark is not None:
                watermark.add_metric(key, state.watermark)
                lag.add_metric(key, max(0.0, now - state.watermark))
            candle.add_metric(key, state.candle_seconds)
            failures.add_metric(key, state.failures)
            if state.rows is not None:
                rows.add_metric(key, state.rows)
            ready.add_metric(key, 1.0 if state.ready else 0.0)
            if state.audit is not None:  # none before a table's first audit
                differing.add_metric(key, state.audit.buckets_differing)
                missing.add_metric(key, 0 if state.audit.in_sync else state.audit.rows_missing)
            if state.snapshots is not None:  # none before the table's first maintenance record
                snapshots.add_metric(key, state.snapshots)
            if state.data_files is not None:
                data_files.add_metric(key, state.data_files)
        yield from (watermark, lag, candle, failures, rows, ready, differing, missing, snapshots, data_files)


def serve(metrics: OffloadMetrics, address: str, port: int) -> None:
    """Expose /metrics on address:port (a daemon thread)."""
    start_http_server(port, addr=address, registry=metrics.registry)
