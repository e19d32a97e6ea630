"""What one reconcile read, turned into decide's `Observed`.

Pure logic: no Kubernetes or Iceberg I/O. The reconciler reads an OffloadTable's world (its body,
its SparkApplications, the namespace's OffloadTables from the kopf index, the catalog ConfigMap
and password, a failed driver's error line, the Iceberg readback) into a `Reading`; observe()
gives what decide() decides from. The same reading always gives the same observation.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from iceberg_offload.core.maintenance import MaintenanceRecord
from iceberg_offload.core.settings import CATALOG_PREFIX, CatalogSettings, SettingsError, catalog_from, known_variables
from iceberg_offload.core.tables import SpecError
from iceberg_offload.core.watermark import parse_timestamp
from iceberg_offload.operator.decide import (
    ANNOTATION_WINDOW_TO,
    LABEL_ATTEMPT,
    LABEL_BACKFILL_OF,
    LABEL_GENERATION,
    LABEL_SLOT,
    TRIGGER_ANNOTATION,
    Observed,
    ObservedRun,
    Readback,
)
from iceberg_offload.operator.maintenance import MaintenanceView
from iceberg_offload.operator.runs import LABEL_MAINTENANCE_OF, MAINTAIN_ANNOTATION
from iceberg_offload.operator.spec import OffloadTableSpec, dependency_cycle, parse_spec
from iceberg_offload.operator.status import OffloadTableStatus
from iceberg_offload.operator.upstream import upstream_of

#: The status fields of an OffloadTable that the tables depending on it read.
#: (operator.upstream.settled_slot reads the last run and the Failing condition too.)
INDEXED_STATUS = ("watermark", "lastScheduleTime", "activeRun", "lastRun", "conditions")


@dataclass(frozen=True)
class CatalogRead:
    """The catalog ConfigMap's data and the catalog password, as read. `error` says why the
    ConfigMap (data None) or else the password's Secret could not be read."""

    config_map: str
    data: Mapping[str, str] | None
    password: str | None = None  # None: no target.catalogPasswordSecretRef, or unreadable
    error: str | None = None


@dataclass(frozen=True)
class Reading:
    """Everything one reconcile of one OffloadTable read."""

    body: Mapping[str, Any]
    now: datetime
    runs: Sequence[Mapping[str, Any]] = ()  # the table's SparkApplications
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> index_entry()
    catalog: CatalogRead | None = None  # None: not read, the spec is invalid
    failure_details: Mapping[str, str] = field(default_factory=dict)  # run -> the job's error line
    readback: Readback | None = None
    maintenance_read: bool = False  # the maintenance record was read (for the maintenance run to record)
    maintenance_record: MaintenanceRecord | None = None


def index_entry(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the tables of a namespace need to know of one another: an OffloadTable cut down to
    its name, dependsOn, target and the status fields its dependents read (a copy: kopf's
    bodies change under the index)."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return copy.deepcopy(
        {
            "metadata": {"name": body["metadata"]["name"]},
            "spec": {"dependsOn": spec.get("dependsOn") or [], "target": spec.get("target") or {}},
            "status": {key: status[key] for key in INDEXED_STATUS if key in status},
        }
    )


def table_spec(body: Mapping[str, Any]) -> tuple[OffloadTableSpec | None, str | None]:
    """The parsed spec, or None and why it cannot be used."""
    try:
        return parse_spec(body["metadata"]["name"], body.get("spec") or {}), None
    except SpecError as exc:
        return None, str(exc)


def catalog_settings(read: CatalogRead) -> CatalogSettings:
    """The catalog a table's runs use; SpecError if its ConfigMap or password cannot be used."""
    if read.data is None:
        raise SpecError(read.error or f"ConfigMap {read.config_map} cannot be read")
    where = f"ConfigMap {read.config_map}"
    keys = {k for k in read.data if k.startswith(CATALOG_PREFIX)}
    if any(k.upper() == f"{CATALOG_PREFIX}PASSWORD" for k in keys):
        raise SpecError(f"{where} holds a password: use target.catalogPasswordSecretRef")
    if read.error:
        raise SpecError(read.error)
    unknown = sorted(keys - set(known_variables()), key=str.lower)
    if unknown:
        raise SpecError(f"{where}: unknown keys {', '.join(unknown)}")
    try:
        catalog = catalog_from(read.data, where)
    except SettingsError as exc:
        raise SpecError(str(exc)) from None
    return catalog if read.password is None else replace(catalog, password=read.password)


def upstream_targets(spec: OffloadTableSpec, tables: Mapping[str, Mapping[str, Any]], catalog: str) -> dict[str, str]:
    """The Iceberg table of each upstream that exists, as the job's --upstream names it."""
    targets: dict[str, str] = {}
    for dep in spec.depends_on:
        if dep in tables:
            target = (tables[dep].get("spec") or {}).get("target") or {}
            targets[dep] = f"{catalog}.{target.get('namespace', 'cold')}.{target.get('table', '')}"
    return targets


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return parse_timestamp(str(value))


def observed_run(item: Mapping[str, Any], now: datetime) -> ObservedRun:
    """A SparkApplication as decide sees it (labels and annotation as manifests writes them)."""
    meta = item.get("metadata", {})
    labels = meta.get("labels") or {}
    status = item.get("status") or {}
    state = status.get("applicationState") or {}
    created = _time(meta.get("creationTimestamp")) or now
    return ObservedRun(
        name=meta["name"],
        slot=labels.get(LABEL_SLOT, ""),
        attempt=int(labels.get(LABEL_ATTEMPT) or 1),
        generation=int(labels.get(LABEL_GENERATION) or 0),
        window_to=_time((meta.get("annotations") or {}).get(ANNOTATION_WINDOW_TO)) or created,
        created=created,
        state=str(state.get("state") or ""),
        terminated=_time(status.get("terminationTime")),
        error=str(state.get("errorMessage") or ""),
    )


def _dependency_cycle(name: str, body: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]) -> str | None:
    graph = {other: list((entry.get("spec") or {}).get("dependsOn") or []) for other, entry in tables.items()}
    graph[name] = list((body.get("spec") or {}).get("dependsOn") or [])
    return dependency_cycle(name, graph)


def observe(reading: Reading) -> Observed:
    """The observation decide() decides from. A spec or catalog that cannot be used gives
    spec None and spec_error saying why."""
    meta = reading.body["metadata"]
    name = meta["name"]
    parsed, spec_error = table_spec(reading.body)
    spec = parsed
    if spec is not None and reading.catalog is not None:
        try:
            catalog_settings(reading.catalog)
        except SpecError as exc:
            spec, spec_error = None, str(exc)
    # A backfill's SparkApplication is not one of the table's runs (it is the OffloadBackfill's
    # to follow and record); it only holds the table's next run back while it is in flight.
    # So is a maintenance run's: decide follows it in status.maintenance (operator/maintenance.py).
    backfills = [observed_run(item, reading.now) for item in reading.runs if _labeled(item, LABEL_BACKFILL_OF)]
    maintenance = maintenance_view(reading)
    own = [i for i in reading.runs if not _labeled(i, LABEL_BACKFILL_OF) and not _labeled(i, LABEL_MAINTENANCE_OF)]
    runs = [observed_run(item, reading.now) for item in own]
    details = reading.failure_details
    return Observed(
        name=name,
        generation=int(meta.get("generation") or 0),
        created=_time(meta.get("creationTimestamp")) or reading.now,
        now=reading.now,
        spec=spec,
        spec_error=spec_error,
        status=OffloadTableStatus.from_dict(reading.body.get("status")),
        runs=[replace(run, error=details[run.name]) if details.get(run.name) else run for run in runs],
        upstream={dep: upstream_of(reading.tables.get(dep)) for dep in (parsed.depends_on if parsed else ())},
        dependency_cycle=_dependency_cycle(name, reading.body, reading.tables),
        trigger=(meta.get("annotations") or {}).get(TRIGGER_ANNOTATION),
        readback=reading.readback,
        backfills_active=tuple(sorted(run.name for run in backfills if not run.finished)),
        maintenance=maintenance,
        maintenance_active=maintenance.active,
    )


def maintenance_view(reading: Reading) -> MaintenanceView:
    """The table's maintenance SparkApplications, its maintain-now annotation, the record read."""
    apps = tuple(observed_run(item, reading.now) for item in reading.runs if _labeled(item, LABEL_MAINTENANCE_OF))
    details = reading.failure_details
    apps = tuple(replace(app, error=details[app.name]) if details.get(app.name) else app for app in apps)
    trigger = (reading.body["metadata"].get("annotations") or {}).get(MAINTAIN_ANNOTATION)
    return MaintenanceView(apps, trigger, reading.maintenance_read, reading.maintenance_record)


def _labeled(item: Mapping[str, Any], label: str) -> bool:
    return label in ((item.get("metadata") or {}).get("labels") or {})
