"""The OffloadTable custom resource's spec, parsed and checked beyond what the schema can.

Pure logic: no Kubernetes, engine or network imports. A spec that can never work raises
SpecError with the field at fault, so the operator can report it in a condition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from iceberg_offload.core.schedule import ScheduleError, check_schedule
from iceberg_offload.core.tables import LAYERS, SourceSpec, SpecError, TableSpec, TargetSpec, check_identifier

GROUP = "offload.k2.io"
VERSION = "v1alpha1"
PLURAL = "offloadtables"
KIND = "OffloadTable"

_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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
    schedule: str = "*/15 * * * *"
    time_zone: str = "UTC"
    buffer: timedelta = timedelta(minutes=5)
    candle_interval: timedelta | None = None
    concurrency_policy: str = "Forbid"
    suspend: bool = False
    max_attempts: int = 3
    retry_delay: timedelta = timedelta(seconds=60)
    run_deadline: timedelta = timedelta(hours=1)
    spark: SparkSpec = field(default_factory=SparkSpec)
    successful_history: int = 3
    failed_history: int = 3

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


def parse_spec(name: str, spec: Mapping[str, Any]) -> OffloadTableSpec:
    """Parse and check an OffloadTable's spec; SpecError names the field at fault."""
    layer = _required(spec, "layer")
    if layer not in LAYERS:
        raise SpecError(f"spec.layer: {layer!r} is not one of {', '.join(LAYERS)}")
    try:
        source = SourceSpec(
            database=str(_get(spec, "source.database", "default")),
            table=str(_required(spec, "source.table")),
            timestamp_column=str(_required(spec, "source.timestampColumn")),
            sequence_column=_get(spec, "source.sequenceColumn"),
        )
    except SpecError as exc:
        raise SpecError(f"spec.source: {exc}") from exc
    candle = _get(spec, "source.candleInterval")
    port = _int(spec, "source.connection.port", 8123, 1)
    if port > 65535:
        raise SpecError(f"spec.source.connection.port: {port} is not a port number")
    connection = Connection(
        host=str(_required(spec, "source.connection.host")),
        port=port,
        secure=bool(_get(spec, "source.connection.secure", False)),
        user=str(_get(spec, "source.connection.user", "default")),
        password=_secret_ref(spec, "source.connection.passwordSecretRef"),
    )
    raw_depends = _get(spec, "dependsOn", []) or []
    if not isinstance(raw_depends, list):
        raise SpecError("spec.dependsOn: expected a list of OffloadTable names")
    depends_on = tuple(str(d) for d in raw_depends)
    for dep in depends_on:
        if not _DNS_LABEL.match(dep):
            raise SpecError(f"spec.dependsOn: {dep!r} is not an OffloadTable name")
    if name in depends_on:
        raise SpecError(f"spec.dependsOn: {name} depends on itself")
    schedule = str(_get(spec, "schedule", "*/15 * * * *"))
    time_zone = str(_get(spec, "timeZone", "UTC"))
    try:
        check_schedule(schedule, time_zone)
    except ScheduleError as exc:
        raise SpecError(f"spec.schedule/timeZone: {exc}") from exc
    policy = str(_get(spec, "concurrencyPolicy", "Forbid"))
    if policy not in ("Forbid", "Replace"):
        raise SpecError(f"spec.concurrencyPolicy: {policy!r} is not Forbid or Replace")
    spark_conf = _get(spec, "spark.sparkConf", {}) or {}
    if not all(isinstance(v, str) for v in spark_conf.values()):
        raise SpecError("spec.spark.sparkConf: values must be strings")
    spark = SparkSpec(
        image=_get(spec, "spark.image"),
        image_pull_policy=str(_get(spec, "spark.imagePullPolicy", "IfNotPresent")),
        spark_version=str(_get(spec, "spark.sparkVersion", "3.5.9")),
        service_account=_get(spec, "spark.serviceAccount"),
        driver_cores=_int(spec, "spark.driver.cores", 1, 1),
        driver_memory=str(_get(spec, "spark.driver.memory", "1g")),
        executor_instances=_int(spec, "spark.executor.instances", 1, 1),
        executor_cores=_int(spec, "spark.executor.cores", 1, 1),
        executor_memory=str(_get(spec, "spark.executor.memory", "1g")),
        spark_conf=dict(spark_conf),
    )
    target_namespace = str(_get(spec, "target.namespace", "cold"))
    target_table = str(_required(spec, "target.table"))
    for field_name, value in (("namespace", target_namespace), ("table", target_table)):
        try:
            check_identifier(f"Iceberg {field_name}", value)
        except SpecError as exc:
            raise SpecError(f"spec.target.{field_name}: {exc}") from exc
    candle_interval = parse_duration(str(candle), "spec.source.candleInterval") if candle else None
    if candle_interval is not None and candle_interval <= timedelta(0):
        raise SpecError(f"spec.source.candleInterval: {candle!r} must be longer than zero")
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
        max_attempts=min(_int(spec, "retryPolicy.maxAttempts", 3, 1), 20),
        retry_delay=timedelta(seconds=_int(spec, "retryPolicy.delaySeconds", 60, 0)),
        run_deadline=timedelta(seconds=_int(spec, "runDeadlineSeconds", 3600, 60)),
        spark=spark,
        successful_history=_int(spec, "successfulRunHistoryLimit", 3, 0),
        failed_history=_int(spec, "failedRunHistoryLimit", 3, 0),
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
