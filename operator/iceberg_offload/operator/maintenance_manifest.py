"""The SparkApplication of one maintenance run: its table's run (manifests.spark_application) in
the job's maintenance mode (--maintain), owned by the OffloadTable.

Pure logic: no Kubernetes, engine or network imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iceberg_offload.operator.maintenance import MaintenancePlan
from iceberg_offload.operator.manifests import Defaults, side_application
from iceberg_offload.operator.runs import LABEL_MAINTENANCE_OF, RunPlan, table_label
from iceberg_offload.operator.spec import OffloadTableSpec


def maintenance_arguments(plan: MaintenancePlan) -> list[str]:
    """What the job's command line gets on top of its table's arguments (job/cli.py)."""
    policy = plan.policy
    return [
        "--maintain", plan.name,
        "--snapshot-max-age-seconds", str(int(policy.max_snapshot_age.total_seconds())),
        "--retain-last", str(policy.retain_last),
        "--target-file-size-bytes", str(policy.target_file_size),
        "--orphan-age-seconds", str(int(policy.orphan_age.total_seconds())),
    ]  # fmt: skip


def maintenance_application(
    *,
    namespace: str,
    owner: Mapping[str, Any],
    table: OffloadTableSpec,
    plan: MaintenancePlan,
    catalog: str,
    defaults: Defaults,
) -> dict[str, Any]:
    """The maintenance run's SparkApplication: the image, settings, Secret references and pod
    resources of the table's runs. It reads no upstream watermark, so dependsOn is left out."""
    run = RunPlan(plan.name, plan.slot, 1, plan.generation, plan.started)
    manifest = side_application(
        namespace=namespace,
        owner=owner,
        table=table,
        plan=run,
        catalog=catalog,
        defaults=defaults,
        labels={LABEL_MAINTENANCE_OF: table_label(table.name)},
        arguments=maintenance_arguments(plan),
    )
    spec = manifest["spec"]
    spec["arguments"] = _without_window(spec["arguments"])
    return manifest


def _without_window(arguments: list[str]) -> list[str]:
    """The run's arguments less its window's end (--to): a maintenance run has no window, and
    the job refuses one beside --maintain."""
    out: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--to":
            skip = True
        else:
            out.append(argument)
    return out
