"""The kopf operator: decorators only; each handler delegates to the controller.

kopf run -m iceberg_offload.handlers --namespace <ns>   (or --all-namespaces)
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from iceberg_offload.controller import Controller, RetryLater
from iceberg_offload.kube import Kube, KubeError, api_client
from iceberg_offload.resource import GROUP, PLURAL, VERSION
from iceberg_offload.settings import Settings

SETTINGS = Settings.from_env()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf keeps its own bookkeeping in annotations under our prefix, not its default one.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    # A timer tick is routine: log handler outcomes only when they are not.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo.controller = Controller(SETTINGS, Kube(api_client()))


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.reconcile_seconds, sharp=False)
def reconcile_offloadtable(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    def patch_status(status: dict[str, Any]) -> None:
        current = body.get("status") or {}
        for key in set(current) - set(status):
            patch.status[key] = None
        for key, value in status.items():
            patch.status[key] = value

    try:
        memo.controller.reconcile(body=body, now=datetime.now(UTC), emit=emit, patch_status=patch_status)
    except (RetryLater, KubeError) as exc:
        raise kopf.TemporaryError(str(exc), delay=SETTINGS.reconcile_seconds) from exc
