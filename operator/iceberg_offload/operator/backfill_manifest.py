"""The SparkApplication of one OffloadBackfill: its table's run (manifests.spark_application)
in the job's backfill mode, owned by the backfill.

Pure logic: no Kubernetes, engine or network imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iceberg_offload.core.watermark import format_timestamp
from iceberg_offload.operator.backfill import KIND, BackfillPlan
from iceberg_offload.operator.manifests import Defaults, owner_reference, side_application
from iceberg_offload.operator.runs import LABEL_BACKFILL, LABEL_BACKFILL_OF, RunPlan, table_label
from iceberg_offload.operator.spec import OffloadTableSpec

ANNOTATION_BACKFILL_FROM = "offload.k2.io/backfill-from"
ANNOTATION_BACKFILL_REASON = "offload.k2.io/backfill-reason"
BACKFILL_SLOT = "backfill"  # the slot label of a backfill's run: it belongs to no schedule slot


def backfill_arguments(plan: BackfillPlan) -> list[str]:
    """What the job's command line gets on top of its table's arguments (job/cli.py)."""
    args = [
        "--backfill", plan.name,
        "--backfill-from", format_timestamp(plan.lower),
        "--backfill-to", format_timestamp(plan.upper),
        "--audit-bucket-seconds", str(int(plan.bucket.total_seconds())),
    ]  # fmt: skip
    return [*args, "--allow-deletes"] if plan.allow_deletes else args


def backfill_application(
    *,
    namespace: str,
    owner: Mapping[str, Any],
    table: OffloadTableSpec,
    plan: BackfillPlan,
    catalog: str,
    defaults: Defaults,
) -> dict[str, Any]:
    """The backfill's SparkApplication. A backfill reads no upstream watermark (it stays below its
    own table's), so the table's dependsOn is left out of the arguments. The job records
    `plan.name` in each commit (offload.backfill): unique per OffloadBackfill object, so its
    progress counts its own commits only."""
    run = RunPlan(plan.name, BACKFILL_SLOT, 1, plan.generation, plan.upper)
    labels = {
        LABEL_BACKFILL_OF: table_label(table.name),
        LABEL_BACKFILL: table_label(plan.backfill),  # a label value: at most 63 characters
    }
    manifest = side_application(
        namespace=namespace,
        owner=owner,
        table=table,
        plan=run,
        catalog=catalog,
        defaults=defaults,
        labels=labels,
        arguments=backfill_arguments(plan),
    )
    meta = manifest["metadata"]
    meta["annotations"] = {
        **meta["annotations"],
        ANNOTATION_BACKFILL_FROM: format_timestamp(plan.lower),
        **({ANNOTATION_BACKFILL_REASON: plan.reason} if plan.reason else {}),
    }
    meta["ownerReferences"] = [owner_reference(KIND, owner)]
    return manifest
