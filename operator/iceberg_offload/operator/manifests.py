"""The SparkApplication of one run, built from an OffloadTable.

Pure logic: no Kubernetes, engine or network imports. Credentials reach the Spark pods only
as references to Secrets (env valueFrom.secretKeyRef); the arguments carry none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from iceberg_offload.core.watermark import format_timestamp
from iceberg_offload.operator.runs import (
    ANNOTATION_WINDOW_TO,
    LABEL_ATTEMPT,
    LABEL_GENERATION,
    LABEL_SLOT,
    LABEL_TABLE,
    RunPlan,
    table_label,
)
from iceberg_offload.operator.spec import GROUP, KIND, VERSION, OffloadTableSpec, SecretRef

SPARK_GROUP = "sparkoperator.k8s.io"
SPARK_VERSION = "v1beta2"
SPARK_PLURAL = "sparkapplications"
MANAGED_BY = "iceberg-offload"


@dataclass(frozen=True)
class Defaults:
    """Operator-wide defaults for what a spec leaves out."""

    image: str
    service_account: str
    main_application_file: str


def owner_reference(kind: str, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference of a run to the resource it runs for (a kind of this API group)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _secret_env(name: str, ref: SecretRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def job_env(spec: OffloadTableSpec) -> list[dict[str, Any]]:
    """Connection settings for the job; passwords only as Secret references."""
    conn = spec.connection
    env: list[dict[str, Any]] = [
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_HOST", "value": conn.host},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "value": str(conn.port)},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_USER", "value": conn.user},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_SECURE", "value": "true" if conn.secure else "false"},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_DATABASE", "value": spec.source.database},
    ]
    if conn.password is not None:
        env.append(_secret_env("ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD", conn.password))
    if spec.catalog_password is not None:
        env.append(_secret_env("ICEBERG_OFFLOAD_CATALOG_PASSWORD", spec.catalog_password))
    return env


def job_arguments(
    spec: OffloadTableSpec, plan: RunPlan, catalog: str, upstream_targets: Mapping[str, str]
) -> list[str]:
    """The offload job's command line for one run (spark_jobs/offload.py --help)."""
    table = spec.table_spec(catalog)
    args = [
        "--table", table.name,
        "--layer", table.layer,
        "--source-database", table.source.database,
        "--source-table", table.source.table,
        "--timestamp-column", table.source.timestamp_column,
        "--target", table.target.identifier,
        "--buffer-seconds", str(int(spec.buffer.total_seconds())),
        "--to", format_timestamp(plan.window_to),
        "--run-id", plan.name,
        "--no-mirror",
        "--schema-evolution", spec.schema_evolution,
        # Every run audits its lookback first: the cold tier stays equal to ClickHouse.
        "--late-data", spec.late_data.mode.value,
        "--lookback-seconds", str(int(spec.late_data.lookback.total_seconds())),
        "--audit-bucket-seconds", str(int(spec.late_data.bucket.total_seconds())),
    ]  # fmt: skip
    if table.source.sequence_column:
        args += ["--sequence-column", table.source.sequence_column]
    if spec.candle_interval is not None:
        args += ["--candle-seconds", str(int(spec.candle_interval.total_seconds()))]
    for name in spec.depends_on:
        args += ["--upstream", f"{name}={upstream_targets[name]}"]
    return args


def _labels(spec: OffloadTableSpec, plan: RunPlan) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "iceberg-offload-run",
        LABEL_TABLE: table_label(spec.name),
        LABEL_SLOT: plan.slot,
        LABEL_ATTEMPT: str(plan.attempt),
        LABEL_GENERATION: str(plan.generation),
    }


def _metadata(namespace: str, owner: Mapping[str, Any], plan: RunPlan, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": plan.name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {ANNOTATION_WINDOW_TO: format_timestamp(plan.window_to)},
        "ownerReferences": [owner_reference(KIND, owner)],
    }


def _pods(spec: OffloadTableSpec, labels: Mapping[str, str], defaults: Defaults) -> dict[str, Any]:
    """The driver and executor sections: the same labels and environment on both."""
    spark = spec.spark
    pod_common = {
        "labels": labels,
        "env": job_env(spec),
        "envFrom": [{"configMapRef": {"name": spec.catalog_config_map}}],
    }
    return {
        "driver": {
            **pod_common,
            "cores": spark.driver_cores,
            "memory": spark.driver_memory,
            "serviceAccount": spark.service_account or defaults.service_account,
        },
        "executor": {
            **pod_common,
            "instances": spark.executor_instances,
            "cores": spark.executor_cores,
            "memory": spark.executor_memory,
        },
    }


def spark_application(
    *,
    namespace: str,
    owner: Mapping[str, Any],
    spec: OffloadTableSpec,
    plan: RunPlan,
    catalog: str,
    upstream_targets: Mapping[str, str],
    defaults: Defaults,
) -> dict[str, Any]:
    """The SparkApplication manifest of a run, owned by its OffloadTable."""
    labels = _labels(spec, plan)
    spark = spec.spark
    return {
        "apiVersion": f"{SPARK_GROUP}/{SPARK_VERSION}",
        "kind": "SparkApplication",
        "metadata": _metadata(namespace, owner, plan, labels),
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": spark.image or defaults.image,
            "imagePullPolicy": spark.image_pull_policy,
            "mainApplicationFile": defaults.main_application_file,
            "arguments": job_arguments(spec, plan, catalog, upstream_targets),
            "sparkVersion": spark.spark_version,
            # Retries are the operator's: each attempt is its own SparkApplication.
            "restartPolicy": {"type": "Never"},
            "sparkConf": {"spark.sql.session.timeZone": "UTC", **dict(spark.spark_conf)},
            **_pods(spec, labels, defaults),
        },
    }


def side_application(
    *,
    namespace: str,
    owner: Mapping[str, Any],
    table: OffloadTableSpec,
    plan: RunPlan,
    catalog: str,
    defaults: Defaults,
    labels: Mapping[str, str],
    arguments: list[str],
) -> dict[str, Any]:
    """A SparkApplication of the table's job that is not one of its runs (a backfill, a
    maintenance run): the image, settings, Secret references and pod resources of its runs, with
    `labels` added (pods too) and `arguments` after the table's. It reads no upstream watermark,
    so the table's dependsOn is left out."""
    manifest = spark_application(
        namespace=namespace,
        owner=owner,
        spec=replace(table, depends_on=()),
        plan=plan,
        catalog=catalog,
        upstream_targets={},
        defaults=defaults,
    )
    all_labels = {**manifest["metadata"]["labels"], **labels}
    manifest["metadata"]["labels"] = all_labels
    spec = manifest["spec"]
    spec["arguments"] = [*spec["arguments"], *arguments]
    for pod in ("driver", "executor"):
        spec[pod] = {**spec[pod], "labels": all_labels}
    return manifest
