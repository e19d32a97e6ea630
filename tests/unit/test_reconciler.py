"""One reconcile carried out against a Kubernetes API in memory (iceberg_offload.operator.reconciler).

The decisions are test_reconcile's; here: what is read (and what is not: OffloadTables come from
kopf's index, never from the API), what is written, and what reaches the status and events.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from iceberg_offload.adapters import iceberg_io, iceberg_schema
from iceberg_offload.core.repair import AuditRecord, LateDataMode
from iceberg_offload.core.result import OffloadResult, ResultError, RunOutcome
from iceberg_offload.core.settings import CatalogSettings, Settings
from iceberg_offload.operator.decide import Decision, Readback
from iceberg_offload.operator.kube import Kube, KubeError
from iceberg_offload.operator.observe import index_entry
from iceberg_offload.operator.reconciler import Controller, RetryLater
from iceberg_offload.operator.spec import SecretRef, parse_spec

NAMESPACE = "market-data"
NOW = datetime(2024, 3, 1, 12, 20, tzinfo=UTC)
CATALOG_PASSWORD = "cat-Pa55-word-91be"
MAIN_FILE = "local:///opt/custom/offload.py"
SPEC: dict[str, Any] = {
    "layer": "silver",
    "schedule": "0 0 1 1 *",
    "source": {"table": "trades", "timestampColumn": "ts", "connection": {"host": "clickhouse"}},
    "target": {
        "catalogRef": {"name": "iceberg-catalog"},
        "catalogPasswordSecretRef": {"name": "catalog", "key": "password"},
        "table": "silver_trades",
    },
    "dependsOn": ["bronze-trades"],
}
CATALOG = {
    "ICEBERG_OFFLOAD_CATALOG_NAME": "lake",
    "ICEBERG_OFFLOAD_CATALOG_URI": "jdbc:postgresql://pg:5432/iceberg",
}


@dataclass
class FakeKube:
    """The calls the reconciler makes; listing OffloadTables is not one of them."""

    config_maps: dict[str, dict[str, str]] = field(default_factory=lambda: {"iceberg-catalog": dict(CATALOG)})
    secrets: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"catalog": {"password": base64.b64encode(CATALOG_PASSWORD.encode()).decode()}}
    )
    runs: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def list_runs(self, namespace: str, table: str) -> list[dict[str, Any]]:
        return list(self.runs)

    def create_run(self, manifest: dict[str, Any]) -> bool:
        self.created.append(manifest)
        return True

    def delete_run(self, namespace: str, name: str) -> None:
        self.deleted.append(name)

    def config_map(self, namespace: str, name: str) -> dict[str, str]:
        if name not in self.config_maps:
            raise KubeError(f"ConfigMap {namespace}/{name} cannot be read: Not Found")
        return dict(self.config_maps[name])

    def secret_value(self, namespace: str, ref: SecretRef) -> str:
        if ref.name not in self.secrets:
            raise KubeError(f"Secret {namespace}/{ref.name} cannot be read: Not Found")
        return base64.b64decode(self.secrets[ref.name][ref.key]).decode()

    def log_tail(self, namespace: str, pod: str, lines: int = 200) -> str | None:
        return self.logs.get(pod)


@dataclass
class Tick:
    kube: FakeKube = field(default_factory=FakeKube)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    readbacks: list[str | None] = field(default_factory=list)
    readback: Readback | None = None

    def run(self, body: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]) -> Decision:
        controller = Controller(Settings(mirror=False, main_application_file=MAIN_FILE), cast(Kube, self.kube))

        def readback(catalog: Any, spec: Any, run: str | None) -> Readback:
            self.readbacks.append(run)
            if self.readback is None:
                raise RetryLater("cannot read Iceberg table cold.silver_trades: no such table")
            return self.readback

        controller.readback = readback  # type: ignore[method-assign]
        return controller.reconcile(
            body=body,
            tables=tables,
            now=NOW,
            emit=lambda *event: self.events.append(event),
            patch_status=lambda status: self.statuses.append(status.to_dict()),
        )


def table(name: str = "silver-trades", status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": "2024-03-01T12:00:00Z",
            "annotations": {"offload.k2.io/trigger": "now"},
        },
        "spec": {**SPEC, **spec},
        "status": status or {},
    }


BRONZE = table(
    "bronze-trades",
    status={"watermark": {"timestamp": "2024-03-01T12:10:00Z", "sequence": 1}},
    dependsOn=[],
    target={"catalogRef": {"name": "iceberg-catalog"}, "namespace": "raw", "table": "trades"},
)


def index(*bodies: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["metadata"]["name"]: index_entry(b) for b in bodies}


def test_a_trigger_starts_a_run_with_upstreams_from_the_index_and_the_main_file_from_settings() -> None:
    tick = Tick()
    decision = tick.run(table(), index(table(), BRONZE))
    assert decision.create is not None
    (app,) = tick.kube.created
    assert app["spec"]["mainApplicationFile"] == MAIN_FILE
    arguments = app["spec"]["arguments"]
    assert arguments[arguments.index("--upstream") + 1] == "bronze-trades=lake.raw.trades"
    assert arguments[arguments.index("--target") + 1] == "lake.cold.silver_trades"
    assert "--to" in arguments and arguments[arguments.index("--to") + 1] == "2024-03-01T12:10:00.000000Z"
    assert [e[1] for e in tick.events] == ["RunStarted"]
    (status,) = tick.statuses
    assert status["activeRun"]["name"] == decision.create.name
    assert tick.readbacks == [None], "a table without a watermark looks it up in Iceberg"


def test_an_upstream_missing_from_the_index_is_unknown() -> None:
    tick = Tick()
    tick.run(table(), index(table()))
    assert tick.kube.created == []
    ready = next(c for c in tick.statuses[0]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "UnknownUpstream")


@pytest.mark.parametrize(
    ("config_maps", "message"),
    [
        pytest.param({}, "ConfigMap market-data/iceberg-catalog cannot be read: Not Found", id="missing"),
        pytest.param(
            {"iceberg-catalog": {**CATALOG, "ICEBERG_OFFLOAD_CATALOG_TYPE": "hive"}},
            "ConfigMap iceberg-catalog: ICEBERG_OFFLOAD_CATALOG_TYPE: expected 'jdbc' or 'rest', got 'hive'",
            id="bad-type",
        ),
    ],
)
def test_an_unusable_catalog_configmap_is_an_invalid_spec(config_maps: dict[str, Any], message: str) -> None:
    tick = Tick(FakeKube(config_maps=config_maps))
    tick.run(table(), index(table(), BRONZE))
    assert tick.kube.created == []
    assert tick.readbacks == []
    ready = next(c for c in tick.statuses[0]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", message)
    assert tick.events == [("Warning", "InvalidSpec", message)]


def failed_run() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "silver-trades-mabc-1",
            "creationTimestamp": "2024-03-01T12:15:00Z",
            "labels": {"offload.k2.io/slot": "mabc", "offload.k2.io/attempt": "1", "offload.k2.io/generation": "1"},
            "annotations": {"offload.k2.io/window-to": "2024-03-01T12:10:00.000000Z"},
        },
        "status": {
            "applicationState": {"state": "FAILED", "errorMessage": "driver container failed"},
            "terminationTime": "2024-03-01T12:16:00Z",
            "driverInfo": {"podName": "silver-trades-mabc-1-driver"},
        },
    }


def test_a_failed_run_records_the_jobs_own_error_line_with_the_password_masked() -> None:
    kube = FakeKube(runs=[failed_run()])
    error = f"cannot open catalog with password {CATALOG_PASSWORD}!"
    result = OffloadResult(table="trades", run_id="silver-trades-mabc-1", outcome="failed", error=error)
    kube.logs["silver-trades-mabc-1-driver"] = f"INFO starting\n{result.to_line()}\n"
    tick = Tick(kube)
    body = table(status={"lastTrigger": "now", "watermark": {"timestamp": "2024-03-01T12:00:00Z", "sequence": 0}})
    decision = tick.run(body, index(table(), BRONZE))
    (finished,) = decision.finished
    assert finished.outcome is RunOutcome.FAILED
    (status,) = tick.statuses
    assert status["lastError"] == "cannot open catalog with password ***!"
    assert all(CATALOG_PASSWORD not in message for _, _, message in tick.events)
    assert tick.readbacks == [], "a table with a watermark and no success to record reads no Iceberg"


def test_a_succeeded_run_is_not_recorded_without_its_readback() -> None:
    run = failed_run()
    run["status"]["applicationState"] = {"state": "COMPLETED"}
    tick = Tick(FakeKube(runs=[run]))
    with pytest.raises(RetryLater):
        tick.run(table(status={"lastTrigger": "now"}), index(table(), BRONZE))
    assert tick.readbacks == ["silver-trades-mabc-1"]
    assert tick.statuses == []


def test_a_succeeded_run_is_recorded_with_its_readback() -> None:
    run = failed_run()
    run["status"]["applicationState"] = {"state": "COMPLETED"}
    tick = Tick(FakeKube(runs=[run]))
    tick.readback = Readback(None, 42, 42)
    decision = tick.run(table(status={"lastTrigger": "now"}), index(table(), BRONZE))
    (finished,) = decision.finished
    assert (finished.outcome, finished.rows) == (RunOutcome.SUCCEEDED, 42)
    assert tick.statuses[0]["lastRun"]["rows"] == 42


# --- the readback of a run's late-data audit ---------------------------------------------------

AUDIT = AuditRecord(LateDataMode.REPORT, NOW - timedelta(hours=1), NOW - timedelta(minutes=5), NOW, 2, 1, 7, 0)


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        pytest.param(AUDIT, AUDIT, id="recorded"),
        pytest.param(None, None, id="none-recorded"),
        pytest.param(ResultError("snapshot summary has an unreadable audit: 'x'"), None, id="unreadable"),
    ],
)
def test_the_readback_of_a_run_carries_its_audit(
    monkeypatch: pytest.MonkeyPatch, recorded: AuditRecord | Exception | None, expected: AuditRecord | None
) -> None:
    asked: list[str] = []

    def audit_of_run(table: Any, run: str) -> AuditRecord | None:
        asked.append(run)
        if isinstance(recorded, Exception):
            raise recorded
        return recorded

    monkeypatch.setattr(iceberg_io, "open_catalog", lambda catalog: object())
    monkeypatch.setattr(iceberg_io, "load_table", lambda catalog, identifier: object())
    monkeypatch.setattr(iceberg_io, "commit_of_run", lambda table, run: None)
    monkeypatch.setattr(iceberg_io, "committed_watermark", lambda table: None)
    monkeypatch.setattr(iceberg_io, "row_count", lambda table: 5)
    monkeypatch.setattr(iceberg_io, "audit_of_run", audit_of_run)
    monkeypatch.setattr(iceberg_schema, "last_schema_change", lambda table: None)
    controller = Controller(Settings(mirror=False), cast(Kube, FakeKube()))
    spec = parse_spec("silver-trades", SPEC)
    catalog = CatalogSettings(name="lake", uri="jdbc:postgresql://pg:5432/iceberg")
    assert controller.readback(catalog, spec, "silver-trades-mabc-1") == Readback(None, None, 5, expected)
    assert asked == ["silver-trades-mabc-1"]
    assert controller.readback(catalog, spec, None).audit is None  # no run: no audit asked for
    assert asked == ["silver-trades-mabc-1"]


def test_a_recorded_audit_reaches_the_status_and_the_events() -> None:
    run = failed_run()
    run["status"]["applicationState"] = {"state": "COMPLETED"}
    tick = Tick(FakeKube(runs=[run]))
    tick.readback = Readback(None, 42, 42, AUDIT)
    tick.run(table(status={"lastTrigger": "now"}), index(table(), BRONZE))
    audit = tick.statuses[0]["audit"]
    assert (audit["mode"], audit["bucketsDiffering"], audit["rowsMissing"]) == ("report", 1, 7)
    in_sync = next(c for c in tick.statuses[0]["conditions"] if c["type"] == "InSync")
    assert (in_sync["status"], in_sync["reason"]) == ("False", "BucketsDiffer")
    warnings = [message for type_, reason, message in tick.events if reason == "OutOfSync"]
    assert warnings == ["silver-trades-mabc-1: " + in_sync["message"]]
    assert tick.events[-1][0] == "Warning"


def test_a_schema_evolution_reaches_the_status_and_one_event() -> None:
    run = failed_run()
    run["status"]["applicationState"] = {"state": "COMPLETED"}
    change = "added venue string (at 2024-03-01T12:16:00.000000Z, run silver-trades-mabc-1)"
    tick = Tick(FakeKube(runs=[run]))
    tick.readback = Readback(None, 42, 42, None, change)
    tick.run(table(status={"lastTrigger": "now"}), index(table(), BRONZE))
    assert tick.statuses[0]["lastSchemaChange"] == change
    evolved = [(type_, message) for type_, reason, message in tick.events if reason == "SchemaEvolved"]
    assert evolved == [("Normal", f"schema of the Iceberg table evolved: {change}")]
    # Level-based: the next tick, with the change already in the status, says nothing again.
    again = Tick(FakeKube())
    again.readback = Readback(None, None, 42, None, change)
    again.run(table(status={"lastSchemaChange": change}), index(table(), BRONZE))
    assert [reason for _, reason, _ in again.events if reason == "SchemaEvolved"] == []
