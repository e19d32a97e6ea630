"""The kopf operator: decorators only; each handler delegates to the controller.

kopf run -m iceberg_offload.operator.handlers --namespace <ns>   (or --all-namespaces)
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from iceberg_offload.core.settings import Settings
from iceberg_offload.core.tables import SpecError
from iceberg_offload.operator.backfill import PLURAL as BACKFILL_PLURAL
from iceberg_offload.operator.backfill_controller import BackfillController, TableLocks
from iceberg_offload.operator.backfill_status import BackfillStatus, backfill_status_patch
from iceberg_offload.operator.kube import Kube, KubeError, api_client
from iceberg_offload.operator.metrics import OffloadMetrics, serve
from iceberg_offload.operator.observe import index_entry
from iceberg_offload.operator.reconciler import Controller, RetryLater
from iceberg_offload.operator.spec import GROUP, PLURAL, VERSION, parse_duration
from iceberg_offload.operator.status import OffloadTableStatus, status_patch

SETTINGS = Settings.from_env()
METRICS = OffloadMetrics()
LOCKS = TableLocks()  # a table's reconcile and its backfills' take turns


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf keeps its own bookkeeping in annotations under our prefix, not its default one.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    # Watch only what --namespace / --all-namespaces names: no cluster-wide namespace and CRD
    # scanning, which a namespaced Role does not (and need not) allow.
    settings.scanning.disabled = True
    # With peering, the replica started first stays active; a later one waits as standby.
    settings.peering.priority = 2**31 - int(time.time())
    # A timer tick is routine: log handler outcomes only when they are not.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo.controller = Controller(SETTINGS, Kube(api_client()))
    memo.backfills = BackfillController(memo.controller)
    if SETTINGS.metrics_port:
        serve(METRICS, SETTINGS.metrics_address, SETTINGS.metrics_port)


@kopf.index(GROUP, VERSION, PLURAL)
def offload_tables(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str | None, dict[str, Any]]:
    """Each namespace's OffloadTables as their dependents read them, kept current from kopf's
    watch: a tick reads its upstream tables here instead of listing them from the API."""
    return {namespace: index_entry(body)}


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.reconcile_seconds, sharp=False)
def reconcile_offloadtable(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    def patch_status(status: OffloadTableStatus) -> None:
        patch.status.update(status_patch(body.get("status") or {}, status))

    meta = body["metadata"]
    # kopf passes each index as the keyword named after it. A snapshot: the index changes
    # under this thread as kopf's watch goes on.
    index: kopf.Index[str | None, dict[str, Any]] = kwargs["offload_tables"]
    entries = tuple(index.get(meta["namespace"], ()))
    tables = {entry["metadata"]["name"]: entry for entry in entries}
    try:
        with LOCKS.hold(meta["namespace"], meta["name"]):
            decision = memo.controller.reconcile(
                body=body, tables=tables, now=datetime.now(UTC), emit=emit, patch_status=patch_status
            )
    except (RetryLater, KubeError) as exc:
        METRICS.reconcile_errors.inc()
        raise kopf.TemporaryError(str(exc), delay=SETTINGS.reconcile_seconds) from exc
    except Exception:
        METRICS.reconcile_errors.inc()
        raise
    METRICS.observe(meta["namespace"], meta["name"], decision, _candle_seconds(body))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget_offloadtable(meta: kopf.Meta, **_: Any) -> None:
    METRICS.forget(str(meta["namespace"]), str(meta["name"]))


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return not BackfillStatus.from_dict(status).phase.terminal


@kopf.timer(GROUP, VERSION, BACKFILL_PLURAL, interval=SETTINGS.reconcile_seconds, sharp=False, when=_unfinished)
def reconcile_offloadbackfill(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Until it succeeded or failed; a finished backfill is left alone (its status is final)."""

    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    def patch_status(status: BackfillStatus) -> None:
        patch.status.update(backfill_status_patch(body.get("status") or {}, status))

    table = str((body.get("spec") or {}).get("table") or "")
    try:
        with LOCKS.hold(body["metadata"]["namespace"], table):
            memo.backfills.reconcile(body=body, now=datetime.now(UTC), emit=emit, patch_status=patch_status)
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=SETTINGS.reconcile_seconds) from exc


def _candle_seconds(body: kopf.Body) -> float:
    candle = ((body.get("spec") or {}).get("source") or {}).get("candleInterval")
    try:
        return parse_duration(str(candle), "candleInterval").total_seconds() if candle else 0.0
    except SpecError:
        return 0.0
