"""decide() and a run's late-data audit: status.audit, the InSync condition and the audit's
events (iceberg_offload.operator.audit), one tick at a time and over several runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from decide_kit import (
    N1,
    PROPERTY,
    R1,
    R1_FAILED,
    R1_OK,
    SLOT1,
    SLOT2,
    Cluster,
    at,
    body,
    conditions,
    failed_status,
    observe,
    running_status,
    started,
)
from hypothesis import given
from hypothesis import strategies as st
from iceberg_offload.core.repair import AuditRecord, LateDataMode
from iceberg_offload.core.result import RunOutcome
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.audit import audit_events, in_sync_condition, status_audit
from iceberg_offload.operator.decide import Readback, decide
from iceberg_offload.operator.record import FinishedRun
from iceberg_offload.operator.status import OffloadTableStatus, StatusAudit

LOWER, UPPER = at(11, 10), at(12, 10)


def record(mode: LateDataMode = LateDataMode.REPAIR, **counts: int) -> AuditRecord:
    """An audit of [11:10, 12:10) in 1 h buckets (2 of them), made at 12:16."""
    return AuditRecord(mode, LOWER, UPPER, at(12, 16), **{"buckets": 2, "differing": 0, **counts})


EQUAL = record(rows_missing=0, rows_extra=0)
REPAIRED = record(differing=2, rows_missing=120, rows_extra=1, repaired_buckets=2, rows_repaired=5000, late_rows=120)
REPORTED = record(LateDataMode.REPORT, differing=2, rows_missing=120, rows_extra=0)
REPORTED_STATUS = {
    "mode": "report",
    "lastAuditTime": "2024-03-01T12:16:00Z",
    "from": "2024-03-01T11:10:00.000000Z",
    "to": "2024-03-01T12:10:00.000000Z",
    "bucketsChecked": 2,
    "bucketsDiffering": 2,
    "rowsMissing": 120,
    "rowsExtra": 0,
    "bucketsRepaired": 0,
    "rowsRepaired": 0,
    "lateRows": 0,
}


def readback(audit: AuditRecord | None, rows_added: int | None = 10) -> Readback:
    return Readback(Watermark(at(12, 10)), rows_added, 100, audit)


@dataclass
class Case:
    previous: dict[str, Any] | None  # the status.audit before the tick
    readback: Readback | None
    audit: dict[str, Any] | None  # expected subset of status.audit (None: no status.audit)
    in_sync: tuple[str, str]
    message: str = ""  # a substring of InSync's message
    events: tuple[tuple[str, str], ...] = ()
    runs: tuple[Any, ...] = field(default=(R1_OK,))


CASES = [
    pytest.param(
        Case(
            None, readback(None), None, ("Unknown", "NotAudited"), "no run has audited", (("Normal", "RunSucceeded"),)
        ),
        id="first-run-nothing-to-audit",
    ),
    pytest.param(
        Case(
            None,
            readback(EQUAL),
            {"mode": "repair", "bucketsChecked": 2, "bucketsDiffering": 0, "lateRows": 0},
            ("True", "Equal"),
            "2 buckets in [2024-03-01T11:10:00.000000Z, 2024-03-01T12:10:00.000000Z) equal to ClickHouse",
            (("Normal", "RunSucceeded"),),
        ),
        id="equal",
    ),
    pytest.param(
        Case(
            None,
            readback(REPAIRED),
            {"bucketsDiffering": 0, "rowsMissing": 120, "rowsExtra": 1, "bucketsRepaired": 2, "rowsRepaired": 5000},
            ("True", "Equal"),
            "2 buckets repaired (120 late rows brought in)",
            (("Normal", "RunSucceeded"), ("Normal", "LateDataRepaired")),
        ),
        id="repaired",
    ),
    pytest.param(
        Case(
            None,
            readback(REPORTED),
            REPORTED_STATUS,
            ("False", "BucketsDiffer"),
            "2 buckets differ from ClickHouse (120 rows missing, 0 extra) in [2024-03-01T11:10:00.000000Z, "
            "2024-03-01T12:10:00.000000Z); late-data mode report: not repaired",
            (("Normal", "RunSucceeded"), ("Warning", "OutOfSync")),
        ),
        id="reported-not-repaired",
    ),
    pytest.param(
        Case(
            None,
            readback(record(differing=1, rows_missing=3, rows_extra=0)),
            {"bucketsDiffering": 1, "bucketsRepaired": 0},
            ("False", "BucketsDiffer"),
            "late-data mode repair: not all repaired",
            (("Normal", "RunSucceeded"), ("Warning", "OutOfSync")),
        ),
        id="repair-mode-left-a-bucket",
    ),
    pytest.param(
        Case(
            REPORTED_STATUS,
            readback(None, rows_added=None),
            REPORTED_STATUS,
            ("False", "BucketsDiffer"),
            "2 buckets differ",
            (("Normal", "RunSkipped"),),  # no new audit: no new warning either
        ),
        id="skipped-run-keeps-the-previous-audit",
    ),
    pytest.param(
        Case(
            None,
            readback(REPAIRED, rows_added=None),
            {"bucketsRepaired": 2, "lateRows": 120},
            ("True", "Equal"),
            events=(("Normal", "RunSkipped"), ("Normal", "LateDataRepaired")),
        ),
        id="window-already-committed-but-repaired",
    ),
    pytest.param(
        Case(
            REPORTED_STATUS,
            readback(EQUAL),
            {"mode": "repair", "bucketsDiffering": 0, "rowsMissing": 0},
            ("True", "Equal"),
            events=(("Normal", "RunSucceeded"),),
        ),
        id="a-newer-equal-audit-replaces-the-old",
    ),
    pytest.param(
        Case(
            REPORTED_STATUS,
            None,
            REPORTED_STATUS,
            ("False", "BucketsDiffer"),
            events=(("Warning", "RunFailed"), ("Normal", "RunStarted")),  # its retry
            runs=(R1_FAILED,),
        ),
        id="failed-run-keeps-the-previous-audit",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_a_recorded_run_sets_the_audit_and_in_sync(case: Case) -> None:
    status = running_status(R1)
    if case.previous is not None:
        status["audit"] = case.previous
    decision = decide(observe(at(12, 21), status=status, runs=case.runs, readback=case.readback))
    written = body(decision).get("audit")
    if case.audit is None:
        assert written is None
    else:
        assert written is not None and {k: written[k] for k in case.audit} == case.audit
    in_sync = conditions(decision)["InSync"]
    assert (in_sync["status"], in_sync["reason"]) == case.in_sync
    assert case.message in in_sync["message"]
    assert [(e.type, e.reason) for e in decision.events] == list(case.events)


def test_in_sync_is_unknown_on_a_tick_without_any_run() -> None:
    in_sync = conditions(decide(observe(at(12, 10))))["InSync"]
    assert (in_sync["status"], in_sync["reason"]) == ("Unknown", "NotAudited")


def test_in_sync_is_set_for_a_spec_that_cannot_run() -> None:
    failed = failed_status(R1_FAILED, 1, audit=REPORTED_STATUS)
    in_sync = conditions(decide(observe(at(12, 21), spec=None, spec_error="spec.layer is required", status=failed)))
    assert (in_sync["InSync"]["status"], in_sync["InSync"]["reason"]) == ("False", "BucketsDiffer")


def test_in_sync_story_over_several_runs() -> None:
    """Not audited, then differing (report), then a skipped run keeps it, then repaired: the
    transition time moves only when InSync's status changes, and each audit warns once."""
    cluster = Cluster()
    cluster.tick(SLOT1)
    cluster.finish(N1, "COMPLETED", at(12, 20))
    cluster.tick(at(12, 21))
    assert cluster.condition("InSync") == ("Unknown", "NotAudited")

    second = started(cluster.tick(SLOT2))
    cluster.audits[second] = REPORTED
    cluster.finish(second, "COMPLETED", at(12, 32))
    warned = cluster.tick(at(12, 33))
    assert cluster.condition("InSync") == ("False", "BucketsDiffer")
    assert [e.reason for e in warned.events] == ["RunSucceeded", "OutOfSync"]
    assert [e.reason for e in cluster.tick(at(12, 34)).events] == []  # recorded once, warned once
    moved = _transition(cluster)

    third = started(cluster.tick(at(12, 45)))
    cluster.finish(third, "COMPLETED", at(12, 46))  # no audit recorded (skipped)
    cluster.tick(at(12, 47))
    assert cluster.condition("InSync") == ("False", "BucketsDiffer")
    assert _transition(cluster) == moved
    assert cluster.status["audit"] == REPORTED_STATUS

    fourth = started(cluster.tick(at(13, 0)))
    cluster.audits[fourth] = REPAIRED
    cluster.finish(fourth, "COMPLETED", at(13, 1))
    repaired = cluster.tick(at(13, 2))
    assert cluster.condition("InSync") == ("True", "Equal")
    assert _transition(cluster) == "2024-03-01T13:02:00Z"
    assert [e.reason for e in repaired.events] == ["RunSucceeded", "LateDataRepaired"]
    assert OffloadTableStatus.from_dict(cluster.status).audit == status_audit(REPAIRED)


def _transition(cluster: Cluster) -> str:
    return str(next(c for c in cluster.status["conditions"] if c["type"] == "InSync")["lastTransitionTime"])


# --- properties ------------------------------------------------------------------------------------

moments = st.integers(0, 10**6).map(lambda s: at(0, 0) + timedelta(seconds=s))


@st.composite
def audit_records(draw: st.DrawFn) -> AuditRecord:
    mode = draw(st.sampled_from(LateDataMode))
    buckets = draw(st.integers(0, 200))
    differing = draw(st.integers(0, buckets))
    repaired = draw(st.integers(0, differing)) if mode is LateDataMode.REPAIR else 0
    lower = draw(moments)
    return AuditRecord(
        mode=mode,
        lower=lower,
        upper=lower + timedelta(seconds=draw(st.integers(1, 10**6))),
        at=draw(moments),
        buckets=buckets,
        differing=differing,
        rows_missing=draw(st.integers(0, 10**9)),
        rows_extra=draw(st.integers(0, 10**9)),
        repaired_buckets=repaired,
        rows_repaired=draw(st.integers(0, 10**9)) if repaired else 0,
        late_rows=draw(st.integers(0, 10**9)) if repaired else 0,
    )


@PROPERTY
@given(audit=audit_records())
def test_in_sync_says_what_the_audit_left(audit: AuditRecord) -> None:
    written = status_audit(audit)
    assert written.buckets_differing == audit.differing - audit.repaired_buckets
    assert StatusAudit.from_dict(written.to_dict()) == written
    condition = in_sync_condition(written)
    assert condition.status == ("True" if audit.in_sync else "False")
    assert condition.reason == ("Equal" if audit.in_sync else "BucketsDiffer")
    done = FinishedRun(N1, RunOutcome.SUCCEEDED, 0, 1.0, at(12, 20), None, audit=audit)
    events = {e.reason: e.type for e in audit_events(done)}
    assert ("LateDataRepaired" in events) == (audit.repaired_buckets > 0)
    assert events.get("OutOfSync", "Warning") == "Warning" and ("OutOfSync" in events) == (not audit.in_sync)
    assert events.get("LateDataRepaired", "Normal") == "Normal"


@PROPERTY
@given(audit=audit_records())
def test_the_same_observation_decides_the_same_audit(audit: AuditRecord) -> None:
    """Level-based: a tick that repeats the observation of the one before (its status patch
    lost) writes the same audit and condition, and once the status is written nothing repeats."""
    observed = observe(at(12, 21), status=running_status(R1), runs=(R1_OK,), readback=readback(audit))
    first, again = decide(observed), decide(observed)
    assert body(first) == body(again)
    after = decide(observe(at(12, 22), status=body(first), runs=(R1_OK,), readback=readback(None)))
    assert body(after)["audit"] == body(first)["audit"]
    assert conditions(after)["InSync"] == conditions(first)["InSync"]
    assert after.events == [] and after.finished == []
