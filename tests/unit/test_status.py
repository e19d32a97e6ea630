"""The typed OffloadTable status (iceberg_offload.operator.status): what it writes is what the
CRD declares, it reads back what it wrote, and the status patch clears what is gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from decide_kit import SLOT1, Cluster, at, make_spec, upstream_at
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.repair import LateDataMode
from iceberg_offload.core.result import RunOutcome
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.conditions import Reason
from iceberg_offload.operator.decide import Observed, decide
from iceberg_offload.operator.maintenance_status import FIGURES, MaintenanceOutcome, StatusMaintenance
from iceberg_offload.operator.status import (
    Condition,
    OffloadTableStatus,
    RunRecord,
    StatusAudit,
    StatusWatermark,
    masked,
    status_patch,
)
from test_reconcile import CASES

PROPERTY = settings(max_examples=200, deadline=None)
CRD = Path(__file__).resolve().parents[2] / "crds" / "offloadtables.offload.k2.io.yaml"
STATUS_SCHEMA: dict[str, Any] = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
    "properties"
]["status"]
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def undeclared(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """Every place in `value` the schema does not declare, or declares with another type or enum."""
    if value is None:
        return []  # a cleared field: the patch removes it
    expected = TYPES[schema["type"]]
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        return [f"{path}: {type(value).__name__} where the schema says {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            if key not in schema.get("properties", {}):
                found.append(f"{path}.{key}: not in the schema")
            else:
                found += undeclared(item, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in undeclared(item, schema["items"], f"{path}[{i}]")]
    return []


moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
texts = st.text(max_size=30)
counts = st.integers(min_value=0, max_value=10**9)
records = st.builds(
    RunRecord,
    name=texts,
    slot=texts,
    attempt=st.integers(1, 20),
    generation=counts,
    window_to=moments,
    outcome=st.sampled_from(RunOutcome),
    start_time=moments,
    rows=st.none() | counts,
    completion_time=st.none() | moments,
    message=st.none() | texts,
)
condition_list = st.lists(
    st.builds(
        Condition,
        type=st.sampled_from(["Ready", "Running", "Blocked", "Suspended", "Failing", "InSync"]),
        status=st.sampled_from(["True", "False", "Unknown"]),
        reason=st.none() | st.sampled_from(Reason).map(str),
        message=st.none() | texts,
        last_transition_time=st.none() | moments,
        observed_generation=st.none() | counts,
    ),
    max_size=5,
).map(tuple)
audits = st.builds(
    StatusAudit,
    mode=st.sampled_from(LateDataMode),
    last_audit_time=moments,
    lower=moments,
    upper=moments,
    buckets_checked=counts,
    buckets_differing=counts,
    rows_missing=counts,
    rows_extra=counts,
    buckets_repaired=counts,
    rows_repaired=counts,
    late_rows=counts,
)
words = st.text(min_size=1, max_size=30)
maintenances = st.builds(
    StatusMaintenance,
    last_run=st.none() | words,
    outcome=st.none() | st.sampled_from(MaintenanceOutcome),
    last_start_time=st.none() | moments,
    last_finish_time=st.none() | moments,
    next_run=st.none() | moments,
    last_schedule_time=st.none() | moments,
    last_trigger=st.none() | words,
    error=st.none() | words,
    **{name: st.none() | counts for name in FIGURES},
)
statuses = st.builds(
    OffloadTableStatus,
    observed_generation=st.none() | counts,
    watermark=st.none() | st.builds(StatusWatermark, moments, st.none() | counts),
    row_count=st.none() | counts,
    last_successful_run=st.none() | moments,
    last_run_duration_seconds=st.none() | st.floats(0, 10**6),
    consecutive_failures=st.none() | counts,
    last_error=st.none() | texts,
    last_failure_time=st.none() | moments,
    last_schedule_time=st.none() | moments,
    next_run=st.none() | moments,
    last_trigger=st.none() | texts,
    active_run=st.none() | records,
    last_run=st.none() | records,
    conditions=condition_list,
    audit=st.none() | audits,
    maintenance=st.none() | maintenances,
    last_schema_change=st.none() | texts,
)


@PROPERTY
@given(status=statuses)
def test_every_field_written_is_declared_in_the_crd(status: OffloadTableStatus) -> None:
    assert undeclared(status.to_dict(), STATUS_SCHEMA) == []


@PROPERTY
@given(status=statuses)
def test_a_status_reads_back_as_written(status: OffloadTableStatus) -> None:
    assert OffloadTableStatus.from_dict(status.to_dict()) == status


def test_a_full_status_writes_every_field_the_crd_declares() -> None:
    record = RunRecord("r-1", "202403011215", 1, 1, at(12, 10), RunOutcome.SUCCEEDED, at(12, 15), 3, at(12, 16), "m")
    full = OffloadTableStatus(
        1, StatusWatermark(at(12, 10), 2), 5, at(12, 16), 60.0, 0, "e", at(12, 1), SLOT1, at(12, 30), "t", record,
        record, (Condition("Ready", "True", "Succeeded", "m", at(12, 16), 1),),
        StatusAudit(LateDataMode.REPAIR, at(12, 16), at(11, 0), at(12, 0), 12, 0, 3, 0, 1, 40, 3),
        StatusMaintenance(
            "t-mt-202403010317", MaintenanceOutcome.FAILED, at(3, 17), at(3, 20), at(3, 17), at(3, 17), "now",
            "boom", 4, 10, 2, 4096, 1, 2, 3,
        ),
        last_schema_change="added venue string (at 2024-03-01T12:16:00.000000Z, run r-1)",
    )  # fmt: skip
    written = full.to_dict()
    assert set(written["maintenance"]) == set(STATUS_SCHEMA["properties"]["maintenance"]["properties"])
    assert set(written) == set(STATUS_SCHEMA["properties"])
    assert set(written["audit"]) == set(STATUS_SCHEMA["properties"]["audit"]["properties"])
    assert set(written["lastRun"]) == set(STATUS_SCHEMA["properties"]["lastRun"]["properties"])
    assert set(written["conditions"][0]) == set(STATUS_SCHEMA["properties"]["conditions"]["items"]["properties"])
    assert undeclared(written, STATUS_SCHEMA) == []


@pytest.mark.parametrize(
    ("mark", "written", "text"),
    [
        pytest.param(
            Watermark(at(12, 10)),
            {"timestamp": "2024-03-01T12:10:00.000000Z", "sequence": None},
            "2024-03-01T12:10:00.000000Z",
            id="timestamp",
        ),
        pytest.param(
            Watermark(at(12, 10), 7),
            {"timestamp": "2024-03-01T12:10:00.000000Z", "sequence": 7},
            "2024-03-01T12:10:00.000000Z#7",
            id="legacy",
        ),
    ],
)
def test_status_watermark_writes_a_sequence_only_for_a_legacy_watermark(
    mark: Watermark, written: dict[str, Any], text: str
) -> None:
    status = StatusWatermark.of(mark)
    assert status.to_dict() == written
    assert str(status) == text
    assert StatusWatermark.from_dict(written) == status
    assert status.mark == mark


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"timestamp": "2024-03-01T12:10:00Z"}, Watermark(at(12, 10)), id="no-sequence-key"),
        pytest.param({"timestamp": "2024-03-01T12:10:00Z", "sequence": 0}, Watermark(at(12, 10), 0), id="legacy-0"),
    ],
)
def test_status_watermark_reads_a_missing_sequence_as_a_timestamp_watermark(
    data: dict[str, Any], expected: Watermark
) -> None:
    read = StatusWatermark.from_dict(data)
    assert read is not None and read.mark == expected


@pytest.mark.parametrize("observed", [case.values[0] for case in CASES], ids=[case.id for case in CASES])
def test_decide_writes_only_declared_fields(observed: Observed) -> None:
    written = decide(observed).status.to_dict()
    assert undeclared(written, STATUS_SCHEMA) == []
    assert {c["reason"] for c in written["conditions"]} <= {r.value for r in Reason}


def test_a_story_writes_only_declared_fields_and_reads_back_unchanged() -> None:
    cluster = Cluster(spec=make_spec(dependsOn=["bronze-trades"]), upstream=upstream_at(at(12, 30)), trigger="now")
    for minute in range(9, 40):
        decision = cluster.tick(at(12, minute))
        written = decision.status.to_dict()
        assert undeclared(written, STATUS_SCHEMA) == []
        assert OffloadTableStatus.from_dict(written) == decision.status
        for name in cluster.active():
            cluster.finish(name, "FAILED" if minute % 3 else "COMPLETED", at(12, minute, 30))


PREVIOUS = {"lastError": "boom", "lastTrigger": "old", "activeRun": {"name": "x"}, "somethingElse": 1}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(
            OffloadTableStatus(observed_generation=2, last_error="", consecutive_failures=0),
            {
                "observedGeneration": 2,
                "lastError": None,
                "consecutiveFailures": 0,
                "lastTrigger": None,
                "activeRun": None,
                "somethingElse": None,
                "nextRun": None,
                "conditions": [],
            },
            id="cleared-and-gone-keys-become-null",
        ),
        pytest.param(
            OffloadTableStatus(observed_generation=1, last_error="new", last_trigger="old", next_run=SLOT1),
            {
                "observedGeneration": 1,
                "lastError": "new",
                "lastTrigger": "old",
                "activeRun": None,
                "somethingElse": None,
                "nextRun": "2024-03-01T12:15:00Z",
                "conditions": [],
            },
            id="kept-keys-written",
        ),
    ],
)
def test_status_patch(status: OffloadTableStatus, expected: dict[str, Any]) -> None:
    assert status_patch(PREVIOUS, status) == expected


def test_masked_hides_secrets_in_every_text_and_keeps_the_rest() -> None:
    record = RunRecord("r-1", "s", 1, 1, at(12, 10), RunOutcome.FAILED, at(12, 15), 0, at(12, 16), "pw hunter2")
    status = OffloadTableStatus(
        last_error="login hunter2 failed",
        last_run=record,
        last_schedule_time=SLOT1,
        conditions=(Condition("Failing", "True", "RetriesExhausted", "hunter2!"),),
    )
    hidden = masked(status, ["hunter2"])
    assert "hunter2" not in repr(hidden.to_dict())
    assert hidden.last_error == "login *** failed"
    assert hidden.last_run is not None and hidden.last_run.outcome is RunOutcome.FAILED
    assert hidden.last_schedule_time == SLOT1
    assert masked(status, []) == status


def test_times_are_kept_to_the_second_as_written() -> None:
    status = OffloadTableStatus(next_run=SLOT1 + timedelta(microseconds=7))
    assert status.next_run == SLOT1
    assert status.to_dict()["nextRun"] == "2024-03-01T12:15:00Z"
