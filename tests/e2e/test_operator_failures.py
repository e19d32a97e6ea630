"""Failures the operator must report clearly: failing runs and their retries, and bad specs.

Real kube-apiserver (schema validation as on a cluster), the operator as ``kopf run``, the Spark
Operator stand-in executing the real offload job. Each test has its own namespace.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cluster import Cluster
from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core.mirror import MirrorRow
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.watermark import INITIAL_WATERMARK, Window
from standin.harness import (
    EXAMPLES,
    FAR_AWAY,
    RUN_TIMEOUT,
    Scenario,
    bronze_table,
    condition,
    feed_trades,
    load_yaml_documents,
    to_yaml,
    utc_now,
)

TRIGGER = "offload.k2.io/trigger"
TABLE = "binance"


def test_failing_run_is_retried_reported_and_recovers_when_the_spec_is_fixed(
    scenario: Callable[..., Scenario],
) -> None:
    s = scenario("retry")
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
        retryPolicy={"maxAttempts": 2, "delaySeconds": 1},
    )
    table["spec"]["source"]["timestampColumn"] = "traded_at"  # no such column
    s.apply([table])
    s.start_operator()
    s.wait(lambda: condition(s.table(TABLE), "Ready"), timeout=30, what="the first status", table=TABLE)
    s.annotate(TABLE, TRIGGER, "first")

    # Two attempts, both failing; then the table is Failing and nothing more is tried.
    s.wait(
        lambda: condition(s.table(TABLE), "Failing").get("status") == "True",
        timeout=2 * RUN_TIMEOUT,
        what="Failing=True after two failed attempts",
        table=TABLE,
    )
    apps = s.apps(TABLE)
    assert [a["metadata"]["labels"]["offload.k2.io/attempt"] for a in apps] == ["1", "2"], s.diagnostics(TABLE)
    states = [((a.get("status") or {}).get("applicationState") or {}).get("state") for a in apps]
    assert states == ["FAILED", "FAILED"], states
    obj = s.table(TABLE)
    status = obj["status"]
    assert status["consecutiveFailures"] == 2, status
    assert "traded_at" in status["lastError"] and "does not exist" in status["lastError"], status["lastError"]
    assert status["lastRun"]["outcome"] == "Failed" and status["lastRun"]["attempt"] == 2, status["lastRun"]
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RetriesExhausted"), ready
    assert "2 failed attempts" in ready["message"] and "traded_at" in ready["message"], ready["message"]
    assert condition(obj, "Failing")["reason"] == "RetriesExhausted"
    warnings = [e for e in s.events(TABLE) if e["type"] == "Warning"]
    reasons = {e["reason"] for e in warnings}
    assert {"RunFailed", "RetriesExhausted"} <= reasons, f"Warning events: {reasons}"
    failed_messages = [e["message"] for e in warnings if e["reason"] == "RunFailed"]
    assert any("attempt 2 of 2" in m and "traded_at" in m for m in failed_messages), failed_messages
    s.holds(lambda: len(s.apps(TABLE)) == 2, seconds=4, what="no third attempt once retries are exhausted")

    # The runbook's offload_watermarks says the same.
    def mirror_row(status: str, failures: int) -> MirrorRow | None:
        row = clickhouse_io.read_mirror(clickhouse, "bronze_trades_binance")
        return row if row is not None and (row.status, row.failure_count) == (status, failures) else None

    mirror = s.wait(
        lambda: mirror_row("failed", 2),
        timeout=20,
        what="offload_watermarks to show 2 failures",
        table=TABLE,
    )
    assert "traded_at" in mirror.last_error_message, mirror

    # Fixing the spec starts a new attempt at once, not at the next slot.
    fixed_at = time.monotonic()
    s.patch_table(TABLE, {"spec": {"source": {"timestampColumn": "exchange_timestamp"}}})
    s.wait(lambda: len(s.apps(TABLE)) == 3, timeout=15, what="a new attempt after the fix", table=TABLE)
    assert time.monotonic() - fixed_at < 10, "the attempt after the fix did not start at once"
    third = s.apps(TABLE)[2]
    assert third["metadata"]["labels"]["offload.k2.io/attempt"] == "3", third["metadata"]["labels"]
    assert third["metadata"]["labels"]["offload.k2.io/generation"] == "2", third["metadata"]["labels"]
    s.wait(
        lambda: (
            (s.status(TABLE).get("lastRun") or {}).get("name") == third["metadata"]["name"]
            and s.status(TABLE)["lastRun"]["outcome"] == "Succeeded"
        ),
        timeout=RUN_TIMEOUT,
        what="the attempt after the fix to succeed",
        table=TABLE,
    )
    obj = s.table(TABLE)
    assert obj["status"]["consecutiveFailures"] == 0, obj["status"]
    assert not obj["status"].get("lastError"), obj["status"]
    assert condition(obj, "Ready")["status"] == "True" and condition(obj, "Failing")["status"] == "False"
    mirror = s.wait(
        lambda: mirror_row("success", 0),
        timeout=20,
        what="offload_watermarks to show the success",
        table=TABLE,
    )
    assert mirror.last_error_message == "", mirror
    # Exactly once after all that: what ClickHouse has up to the watermark is what Iceberg has.
    iceberg = s.standin.iceberg_table(s.iceberg_namespace, "bronze_trades_binance")
    mark = iceberg_io.committed_watermark(iceberg)
    assert mark is not None
    source = SourceSpec(s.database, "bronze_trades_binance", "exchange_timestamp", "sequence")
    expected = clickhouse_io.window_stats(clickhouse, source, Window(INITIAL_WATERMARK, mark)).rows
    assert iceberg_io.row_count(iceberg) == expected > 0


# --- specs the API server rejects -----------------------------------------------------------


def _example() -> dict[str, Any]:
    (doc,) = load_yaml_documents(EXAMPLES / "10-bronze-trades-binance.yaml")
    return doc


def _layer(doc: dict[str, Any]) -> None:
    doc["spec"]["layer"] = "platinum"


def _max_attempts(doc: dict[str, Any]) -> None:
    doc["spec"]["retryPolicy"]["maxAttempts"] = 0


def _concurrency(doc: dict[str, Any]) -> None:
    doc["spec"]["concurrencyPolicy"] = "Allow"


def _no_target(doc: dict[str, Any]) -> None:
    del doc["spec"]["target"]


@pytest.mark.parametrize(
    ("field", "break_spec", "says"),
    [
        ("spec.layer", _layer, 'Unsupported value: "platinum"'),
        ("spec.retryPolicy.maxAttempts", _max_attempts, "greater than or equal to 1"),
        ("spec.concurrencyPolicy", _concurrency, 'Unsupported value: "Allow"'),
        ("spec.target", _no_target, "Required value"),
    ],
)
def test_kubectl_apply_of_an_invalid_spec_fails_naming_the_field(
    control_plane: Cluster,
    offload_crd: str,
    namespace: str,
    field: str,
    break_spec: Callable[[dict[str, Any]], None],
    says: str,
) -> None:
    doc = copy.deepcopy(_example())
    break_spec(doc)
    # The API server itself: 422 Invalid, the field in the causes.
    path = f"/apis/offload.k2.io/v1alpha1/namespaces/{namespace}/offloadtables"
    rejected = control_plane.request("POST", path, doc)
    assert rejected.status == 422 and rejected.reason == "Invalid", f"{field}: {rejected.status} {rejected.text[:300]}"
    causes = [(c.get("field"), c.get("message", "")) for c in rejected.body["details"]["causes"]]
    assert any(f == field and says in m for f, m in causes), f"the 422 does not name {field}: {causes}"
    # kubectl apply fails naming the field (kubectl's own schema check from the server's OpenAPI
    # may word it first, for a missing field: missing required field "target" in ...OffloadTable.spec).
    applied = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=to_yaml([doc]))
    assert applied.returncode != 0, f"kubectl apply accepted an invalid spec ({field}):\n{applied.stdout}"
    parent, _, leaf = field.rpartition(".")
    named = field in applied.stderr or (f'"{leaf}"' in applied.stderr and f"OffloadTable.{parent}" in applied.stderr)
    assert named, f"kubectl's error does not name {field}:\n{applied.stderr}"
    listed = control_plane.request("GET", f"/apis/offload.k2.io/v1alpha1/namespaces/{namespace}/offloadtables")
    assert listed.body["items"] == [], "the invalid OffloadTable was stored"
