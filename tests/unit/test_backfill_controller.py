"""One reconcile of an OffloadBackfill against a Kubernetes API in memory
(iceberg_offload.operator.backfill_controller): what is read when, what is created, and that the
ClickHouse password never reaches a status or an event."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from iceberg_offload.adapters import clickhouse_io
from iceberg_offload.core.settings import Settings
from iceberg_offload.operator.backfill_controller import BackfillController, TableLocks
from iceberg_offload.operator.kube import Kube
from iceberg_offload.operator.reconciler import Controller
from test_reconciler import FakeKube

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
CH_PASSWORD = "ch-Pa55-word-7f3a"
TABLE = {
    "metadata": {"name": "bronze-trades", "namespace": "market-data", "uid": "uid-t", "generation": 1},
    "spec": {
        "layer": "bronze",
        "source": {
            "table": "trades",
            "timestampColumn": "ts",
            "connection": {"host": "clickhouse", "passwordSecretRef": {"name": "ch", "key": "password"}},
        },
        "target": {"catalogRef": {"name": "iceberg-catalog"}, "table": "trades"},
    },
    "status": {"watermark": {"timestamp": "2024-03-10T11:00:00Z"}},
}


def backfill(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "fix", "namespace": "market-data", "uid": "0123abcd-0000", "generation": 1},
        "spec": {"table": "bronze-trades", "from": "2024-03-09T00:00:00Z", "to": "2024-03-10T00:00:00Z"},
        "status": status or {},
    }


@dataclass
class Kube2(FakeKube):
    tables: dict[str, dict[str, Any]] = field(default_factory=lambda: {"bronze-trades": TABLE})
    table_reads: int = 0

    def get_table(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.table_reads += 1
        return self.tables.get(name)


@dataclass
class Tick:
    kube: Kube2 = field(default_factory=Kube2)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    def run(self, body: dict[str, Any]) -> Any:
        controller = BackfillController(Controller(Settings(mirror=False), cast(Kube, self.kube)))
        return controller.reconcile(
            body=body,
            now=NOW,
            emit=lambda *event: self.events.append(event),
            patch_status=lambda status: self.statuses.append(status.to_dict()),
        )


class FakeClient:
    def close(self) -> None:
        pass


def test_an_unreadable_password_secret_is_retried_not_guessed() -> None:
    tick = Tick()
    tick.run(backfill())
    (status,) = tick.statuses
    assert status["phase"] == "Pending" and "Secret market-data/ch" in status["message"]
    assert tick.kube.created == [] and tick.events == []


def test_starts_with_the_ttl_read_and_never_shows_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    tick = Tick()
    tick.kube.secrets["ch"] = {"password": base64.b64encode(CH_PASSWORD.encode()).decode()}
    monkeypatch.setattr(clickhouse_io, "connect", lambda settings: FakeClient())
    monkeypatch.setattr(clickhouse_io, "retention", lambda client, source: timedelta(days=7))
    decision = tick.run(backfill())
    assert decision.create is not None
    (app,) = tick.kube.created
    assert app["metadata"]["labels"]["offload.k2.io/backfill-of"] == "bronze-trades"
    assert "--backfill" in app["spec"]["arguments"] and CH_PASSWORD not in str(app)
    assert tick.statuses[-1]["phase"] == "Running" and [e[1] for e in tick.events] == ["Started"]

    def failing(client: Any, source: Any) -> timedelta:
        raise RuntimeError(f"authentication failed for password {CH_PASSWORD}")

    monkeypatch.setattr(clickhouse_io, "retention", failing)
    again = Tick(kube=tick.kube)
    again.run(backfill())
    assert again.statuses[-1]["phase"] == "Pending"
    assert CH_PASSWORD not in str(again.statuses) and "***" in again.statuses[-1]["message"]


def test_a_finished_backfill_reads_nothing() -> None:
    tick = Tick()
    tick.run(backfill({"phase": "Succeeded", "commits": 2}))
    assert tick.kube.table_reads == 0 and tick.statuses == [] and tick.events == []


def test_table_locks_serialize_one_table_only() -> None:
    locks = TableLocks()
    inside: list[str] = []
    entered = threading.Event()

    def hold() -> None:
        with locks.hold("ns", "t"):
            entered.set()
            time.sleep(0.2)
            inside.append("first")

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait()
    with locks.hold("ns", "other"):
        inside.append("other")  # another table does not wait
    with locks.hold("ns", "t"):
        inside.append("second")
    thread.join()
    assert inside == ["other", "first", "second"]
