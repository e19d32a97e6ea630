"""The OffloadTable custom resource's spec, parsed and checked beyond what the schema can.

Pure logic: no Kubernetes, engine or network imports. A spec that can never work raises
SpecError with the field at fault, so the operator can report it in a condition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from iceberg_offload.core.maintenance import DEFAULT_SCHEDULE as DEFAULT_MAINTENANCE_SCHEDULE
from iceberg_offload.core.maintenance import MaintenanceError, MaintenancePolicy
from iceberg_offload.core.repair import LateDataMode, LateDataPolicy
from iceberg_offload.core.schedule import ScheduleError, check_schedule
from iceberg_offload.core.schema_change import DEFAULT_MODE, MODES, Mode, parse_mode
from iceberg_offload.core.tables import LAYERS, SourceSpec, SpecError, TableSpec, TargetSpec, check_identifier

GROUP = "offload.k2.io"
VERSION = "v1alpha1"
PLURAL = "offloadtables"
KIND = "OffloadTable"

_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# The spec's defaults (as in the CRD), one definition each: OffloadTableSpec and parse_spec use them.
DEFAULT_SCHEDULE = "*/15 * * * *"
DEFAULT_TIME_ZONE = "UTC"
DEFAULT_CONCURRENCY_POLICY = "Forbid"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_DELAY_SECONDS = 60
DEFAULT_RUN_DEADLINE_SECONDS = 3600
DEFAULT_HISTORY_LIMIT = 3  # successfulRunHistoryLimit and failedRunHistoryLimit
DEFAULT_LATE_DATA = LateDataPolicy()  # lateData: mode repair, lookback 24h, bucket 1h


def parse_duration(text: str, what: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise SpecError(f"{what}: {text!r} is not a duration like 30s, 5m, 1h or 1d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class Connection:
    host: str
    port: int = 8123
    secure: bool = False
    user: str = "default"
    password: SecretRef | None = None


@dataclass(frozen=True)
class SparkSpec:
    image: str | None = None
    image_pull_policy: str = "IfNotPresent"
    spark_version: str = "3.5.9"
    service_account: str | None = None
    driver_cores: int = 1
    driver_memory: str = "1g"
    executor_instances: int = 1
    executor_cores: int = 1
    executor_memory: str = "1g"
    spark_conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MaintenanceSpec:
    """spec.maintenance: the table's maintenance runs, at `schedule` in the table's time zone."""

    enabled: bool = True
    schedule: str = DEFAULT_MAINTENANCE_SCHEDULE
    policy: MaintenancePolicy = field(default_factory=MaintenancePolicy)


@dataclass(frozen=True)
class OffloadTableSpec:
    """An OffloadTable's spec with defaults applied and every value checked."""

    name: str
    layer: str
    source: SourceSpec
    connection: Connection
    catalog_config_map: str
    catalog_password: SecretRef | None
    target_namespace: str
    target_table: str
    depends_on: tuple[str, ...] = ()
    schedule: str = DEFAULT_SCHEDULE
    time_zone: str = DEFAULT_TIME_ZONE
    buffer: timedelta = timedelta(minutes=5)
    candle_interval: timedelta | None = None
    concurrency_policy: str = DEFAULT_CONCURRENCY_POLICY
    suspend: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_delay: timedelta = timedelta(seconds=DEFAULT_RETRY_DELAY_SECONDS)
    run_deadline: timedelta = timedelta(seconds=DEFAULT_RUN_DEADLINE_SECONDS)
    spark: SparkSpec = field(default_factory=SparkSpec)
    successful_history: int = DEFAULT_HISTORY_LIMIT
    failed_history: int = DEFAULT_HISTORY_LIMIT
    late_data: LateDataPolicy = DEFAULT_LATE_DATA
    maintenance: MaintenanceSpec = field(default_factory=lambda: MaintenanceSpec())
    schema_evolution: Mode = DEFAULT_MODE

    def table_spec(self, catalog: str) -> TableSpec:
        """The offload's own view of this table, given the catalog's name."""
        return TableSpec(
            name=self.source.table,
            layer=self.layer,
            source=self.source,
            target=TargetSpec(catalog, self.target_namespace, self.target_table),
            buffer=self.buffer,
            candle_interval=self.candle_interval,
        )


def _get(spec: Mapping[str, Any], path: str, default: Any = None) -> Any:
    value: Any = spec
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def _required(spec: Mapping[str, Any], path: str) -> Any:
    value = _get(spec, path)
    if value is None or value == "":
        raise SpecError(f"spec.{path} is required")
    return value


def _int(spec: Mapping[str, Any], path: str, default: int, minimum: int) -> int:
    value = _get(spec, path, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SpecError(f"spec.{path}: expected an integer >= {minimum}, got {value!r}")
    return value


def _secret_ref(spec: Mapping[str, Any], path: str) -> SecretRef | None:
    ref = _get(spec, path)
    if ref is None:
        return None
    if not isinstance(ref, Mapping) or not ref.get("name") or not ref.get("key"):
        raise SpecError(f"spec.{path}: needs both name and key")
    return SecretRef(str(ref["name"]), str(ref["key"]))


def _source(spec: Mapping[str, Any]) -> SourceSpec:
    try:
        return SourceSpec(
            database=str(_get(spec, "source.database", "default")),
            table=str(_required(spec, "source.table")),
            timestamp_column=str(_required(spec, "source.timestampColumn")),
            sequence_column=_get(spec, "source.sequenceColumn"),
        )
    except SpecError as exc:
        raise SpecError(f"spec.source: {exc}") from exc


def _candle_interval(spec: Mapping[str, Any]) -> timedelta | None:
    candle = _get(spec, "source.candleInterval")
    interval = parse_duration(str(candle), "spec.source.candleInterval") if candle else None
    if interval is not None and interval <= timedelta(0):
        raise SpecError(f"spec.source.candleInterval: {candle!r} must be longer than zero")
    return interval


def _connection(spec: Mapping[str, Any]) -> Connection:
    port = _int(spec, "source.connection.port", Connection.port, 1)
    if port > 65535:
        raise SpecError(f"spec.source.connection.port: {port} is not a port number")
    return Connection(
        host=str(_required(spec, "source.connection.host")),
        port=port,
        secure=bool(_get(spec, "source.connection.secure", Connection.secure)),
        user=str(_get(spec, "source.connection.user", Connection.user)),
        password=_secret_ref(spec, "source.connection.passwordSecretRef"),
    )


def _depends_on(name: str, spec: Mapping[str, Any]) -> tuple[str, ...]:
    raw_depends = _get(spec, "dependsOn", []) or []
    if not isinstance(raw_depends, list):
        raise SpecError("spec.dependsOn: expected a list of OffloadTable names")
    depends_on = tuple(str(d) for d in raw_depends)
    for dep in depends_on:
        if not _DNS_LABEL.match(dep):
            raise SpecError(f"spec.dependsOn: {dep!r} is not an OffloadTable name")
    if name in depends_on:
        raise SpecError(f"spec.dependsOn: {name} depends on itself")
    return depends_on


def _schedule(spec: Mapping[str, Any]) -> tuple[str, str]:
    schedule = str(_get(spec, "schedule", DEFAULT_SCHEDULE))
    time_zone = str(_get(spec, "timeZone", DEFAULT_TIME_ZONE))
    try:
        check_schedule(schedule, time_zone)
    except ScheduleError as exc:
        raise SpecError(f"spec.schedule/timeZone: {exc}") from exc
    return schedule, time_zone


def _concurrency_policy(spec: Mapping[str, Any]) -> str:
    policy = str(_get(spec, "concurrencyPolicy", DEFAULT_CONCURRENCY_POLICY))
    if policy not in ("Forbid", "Replace"):
        raise SpecError(f"spec.concurrencyPolicy: {policy!r} is not Forbid or Replace")
    return policy


def _spark(spec: Mapping[str, Any]) -> SparkSpec:
    spark_conf = _get(spec, "spark.sparkConf", {}) or {}
    if not all(isinstance(v, str) for v in spark_conf.values()):
        raise SpecError("spec.spark.sparkConf: values must be strings")
    return SparkSpec(
        image=_get(spec, "spark.image"),
        image_pull_policy=str(_get(spec, "spark.imagePullPolicy", SparkSpec.image_pull_policy)),
        spark_version=str(_get(spec, "spark.sparkVersion", SparkSpec.spark_version)),
        service_account=_get(spec, "spark.serviceAccount"),
        driver_cores=_int(spec, "spark.driver.cores", SparkSpec.driver_cores, 1),
        driver_memory=str(_get(spec, "spark.driver.memory", SparkSpec.driver_memory)),
        executor_instances=_int(spec, "spark.executor.instances", SparkSpec.executor_instances, 1),
        executor_cores=_int(spec, "spark.executor.cores", SparkSpec.executor_cores, 1),
        executor_memory=str(_get(spec, "spark.executor.memory", SparkSpec.executor_memory)),
        spark_conf=dict(spark_conf),
    )


def _target(spec: Mapping[str, Any]) -> tuple[str, str]:
    target_namespace = str(_get(spec, "target.namespace", "cold"))
    target_table = str(_required(spec, "target.table"))
    for field_name, value in (("namespace", target_namespace), ("table", target_table)):
        try:
            check_identifier(f"Iceberg {field_name}", value)
        except SpecError as exc:
            raise SpecError(f"spec.target.{field_name}: {exc}") from exc
    return target_namespace, target_table


def _late_data(spec: Mapping[str, Any]) -> LateDataPolicy:
    """spec.lateData: how each run audits (and in mode repair, repairs) the lookback before its
    table's committed watermark."""
    mode = str(_get(spec, "lateData.mode", DEFAULT_LATE_DATA.mode.value))
    if mode not in {m.value for m in LateDataMode}:
        raise SpecError(f"spec.lateData.mode: {mode!r} is not repair or report")
    lookback_text = str(_get(spec, "lateData.lookback", "24h"))
    bucket_text = str(_get(spec, "lateData.bucket", "1h"))
    lookback = parse_duration(lookback_text, "spec.lateData.lookback")
    bucket = parse_duration(bucket_text, "spec.lateData.bucket")
    if lookback <= timedelta(0):
        raise SpecError(f"spec.lateData.lookback: {lookback_text!r} must be longer than zero")
    if bucket <= timedelta(0) or bucket > lookback:
        raise SpecError(f"spec.lateData.bucket: {bucket_text!r} must be longer than zero and at most the lookback")
    return LateDataPolicy(LateDataMode(mode), lookback, bucket)


# --- spec.maintenance -----------------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_QUANTITY_UNITS: dict[str, int] = {
    **{s: 1024 ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: 1000 ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
}


def parse_quantity(value: Any, what: str) -> int:
    """Bytes as an integer or a whole Kubernetes quantity (128Mi, 1Gi, 500M)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    match = _QUANTITY.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise SpecError(f"{what}: {value!r} is not a number of bytes like 134217728, 128Mi or 1Gi")
    unit: int = _QUANTITY_UNITS.get(str(match.group(2) or ""), 1)
    return int(match.group(1)) * unit


def _maintenance(spec: Mapping[str, Any], time_zone: str) -> MaintenanceSpec:
    """spec.maintenance: when the operator compacts the table and expires its snapshots, and how."""
    enabled = _get(spec, "maintenance.enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError(f"spec.maintenance.enabled: expected true or false, got {enabled!r}")
    schedule = str(_get(spec, "maintenance.schedule", DEFAULT_MAINTENANCE_SCHEDULE))
    try:
        check_schedule(schedule, time_zone)
    except ScheduleError as exc:
        raise SpecError(f"spec.maintenance.schedule: {exc}") from exc
    default = MaintenancePolicy()
    fields: dict[str, tuple[str, Callable[[Any, str], Any], Any]] = {
        "max_snapshot_age": ("snapshotRetention.maxAge", _duration, "24h"),
        "retain_last": ("snapshotRetention.retainLast", _whole, default.retain_last),
        "target_file_size": ("targetFileSize", parse_quantity, default.target_file_size),
        "orphan_age": ("orphanFileAge", _duration, "72h"),
    }
    values: dict[str, Any] = {}
    for name, (path, parse, fallback) in fields.items():
        what = f"spec.maintenance.{path}"
        values[name] = parse(_get(spec, f"maintenance.{path}", fallback), what)
        try:
            MaintenancePolicy(**{name: values[name]})
        except MaintenanceError as exc:
            raise SpecError(f"{what}: {exc}") from None
    return MaintenanceSpec(enabled, schedule, MaintenancePolicy(**values))


def _duration(value: Any, what: str) -> timedelta:
    return parse_duration(str(value), what)


def _whole(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{what}: expected an integer, got {value!r}")
    return value


def _schema_evolution(spec: Mapping[str, Any]) -> Mode:
    """spec.schemaEvolution: evolve (add and widen Iceberg columns as ClickHouse's change) or fail."""
    value = _get(spec, "schemaEvolution", DEFAULT_MODE)
    try:
        return parse_mode(value)
    except ValueError as exc:
        raise SpecError(f"spec.schemaEvolution: {value!r} is not one of {', '.join(MODES)}") from exc


def parse_spec(name: str, spec: Mapping[str, Any]) -> OffloadTableSpec:
    """Parse and check an OffloadTable's spec; SpecError names the field at fault."""
    layer = _required(spec, "layer")
    if layer not in LAYERS:
        raise SpecError(f"spec.layer: {layer!r} is not one of {', '.join(LAYERS)}")
    source = _source(spec)
    connection = _connection(spec)
    depends_on = _depends_on(name, spec)
    schedule, time_zone = _schedule(spec)
    policy = _concurrency_policy(spec)
    spark = _spark(spec)
    target_namespace, target_table = _target(spec)
    candle_interval = _candle_interval(spec)
    return OffloadTableSpec(
        name=name,
        layer=layer,
        source=source,
        connection=connection,
        catalog_config_map=str(_required(spec, "target.catalogRef.name")),
        catalog_password=_secret_ref(spec, "target.catalogPasswordSecretRef"),
        target_namespace=target_namespace,
        target_table=target_table,
        depends_on=depends_on,
        schedule=schedule,
        time_zone=time_zone,
        buffer=parse_duration(str(_get(spec, "safetyBuffer", "5m")), "spec.safetyBuffer"),
        candle_interval=candle_interval,
        concurrency_policy=policy,
        suspend=bool(_get(spec, "suspend", False)),
        max_attempts=min(_int(spec, "retryPolicy.maxAttempts", DEFAULT_MAX_ATTEMPTS, 1), 20),
        retry_delay=timedelta(seconds=_int(spec, "retryPolicy.delaySeconds", DEFAULT_RETRY_DELAY_SECONDS, 0)),
        run_deadline=timedelta(seconds=_int(spec, "runDeadlineSeconds", DEFAULT_RUN_DEADLINE_SECONDS, 60)),
        spark=spark,
        successful_history=_int(spec, "successfulRunHistoryLimit", DEFAULT_HISTORY_LIMIT, 0),
        failed_history=_int(spec, "failedRunHistoryLimit", DEFAULT_HISTORY_LIMIT, 0),
        late_data=_late_data(spec),
        maintenance=_maintenance(spec, time_zone),
        schema_evolution=_schema_evolution(spec),
    )


def dependency_cycle(name: str, graph: Mapping[str, Sequence[str]]) -> str | None:
    """A message naming a cycle through `name` in the dependsOn graph, or None."""
    seen: set[str] = set()

    def path_back(node: str) -> list[str] | None:
        """A path from node back to `name`, if there is one."""
        for dep in graph.get(node, ()):
            if dep == name:
                return [dep]
            if dep not in seen:
                seen.add(dep)
                if (rest := path_back(dep)) is not None:
                    return [dep, *rest]
        return None

    cycle = path_back(name)
    if cycle is None:
        return None
    return "spec.dependsOn forms a cycle: " + " -> ".join([name, *cycle])
