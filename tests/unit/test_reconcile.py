"""What the operator does next for one OffloadTable (iceberg_offload.operator.decide), one
observation at a time.

decide() is pure, so every case is an `Observed` built by hand (decide_kit): a spec from
parse_spec, a clock, the table's SparkApplications as ObservedRuns and the previous status.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from decide_kit import (
    DNS_LABEL,
    EXHAUSTED,
    MANUAL_SLOT,
    N1,
    N2,
    N3,
    N4,
    NAME,
    PROPERTY,
    R1,
    R1_FAILED,
    R1_OK,
    R2,
    R2_FAILED,
    R3_FAILED,
    REPLACE,
    SLOT1,
    SUSPENDED,
    TRIGGER,
    UPSTREAM,
    at,
    body,
    completed,
    conditions,
    failed,
    failed_status,
    make_spec,
    observe,
    outcomes,
    record,
    running_status,
    srun,
    ts,
    upstream_at,
)
from hypothesis import given
from hypothesis import strategies as st
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.conditions import Reason
from iceberg_offload.operator.decide import (
    Observed,
    ObservedRun,
    Readback,
    Upstream,
    decide,
    manual_slot_id,
    run_name,
    run_to_record,
    schedule_slot_id,
    set_condition,
)
from iceberg_offload.operator.status import Condition

# --- decide(): one observation, one decision ----------------------------------------------------


@dataclass
class Expect:
    create: str | None = None  # name of the SparkApplication created
    window_to: datetime | None = None
    generation: int | None = None  # of the created run
    delete: tuple[str, ...] = ()
    finished: str | None = None  # outcome of the run recorded by this decision
    status: dict[str, Any] = field(default_factory=dict)  # expected subset of the new status
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, reason)
    messages: dict[str, str] = field(default_factory=dict)  # condition type -> substring of its message
    events: tuple[tuple[str, str], ...] | None = None  # exactly these (type, reason), in order


def assert_subset(actual: Any, expected: Any, path: str = "status") -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            assert_subset(actual.get(key), value, f"{path}.{key}")
    else:
        assert actual == expected, f"{path}: expected {expected!r}, got {actual!r}"


CASES = [
    # First reconcile.
    pytest.param(
        observe(at(12, 10)),
        Expect(
            status={"nextRun": "2024-03-01T12:15:00Z", "activeRun": None, "observedGeneration": 1},
            conditions={
                "Ready": ("True", "Scheduled"),
                "Running": ("False", "Idle"),
                "Blocked": ("False", "Clear"),
                "Suspended": ("False", "Active"),
                "Failing": ("False", "NotFailing"),
            },
            messages={"Ready": "first run at 2024-03-01T12:15:00Z"},
            events=(),
        ),
        id="first-tick-before-first-slot-starts-nothing",
    ),
    pytest.param(
        observe(SLOT1, created=SLOT1),
        Expect(status={"nextRun": "2024-03-01T12:30:00Z", "lastScheduleTime": None}, events=()),
        id="slot-at-the-creation-instant-is-not-after-creation",
    ),
    pytest.param(
        observe(SLOT1),
        Expect(
            create=N1,
            window_to=at(12, 10),
            generation=1,
            status={
                "lastScheduleTime": "2024-03-01T12:15:00Z",
                "activeRun": {"name": N1, "slot": "202403011215", "attempt": 1, "outcome": "Running"},
                "nextRun": "2024-03-01T12:30:00Z",
            },
            conditions={"Running": ("True", "RunActive"), "Ready": ("True", "Scheduled")},
            events=(("Normal", "RunStarted"),),
        ),
        id="first-slot-after-creation-starts-run",
    ),
    pytest.param(
        observe(at(12, 52, 30)),
        Expect(
            create="trades-202403011245-1",
            window_to=at(12, 40),
            status={"lastScheduleTime": "2024-03-01T12:45:00Z"},
            events=(("Normal", "RunStarted"),),
        ),
        id="late-first-tick-starts-only-the-newest-slot",
    ),
    pytest.param(
        observe(at(12, 10), generation=7),
        Expect(status={"observedGeneration": 7}, events=()),
        id="observed-generation-follows-metadata",
    ),
    # A run in flight.
    pytest.param(
        observe(at(12, 20), status=running_status(R1), runs=(R1,)),
        Expect(
            status={"activeRun": {"name": N1, "outcome": "Running"}, "lastScheduleTime": "2024-03-01T12:15:00Z"},
            conditions={"Running": ("True", "RunActive")},
            events=(),
        ),
        id="run-in-flight-nothing-due",
    ),
    pytest.param(
        observe(at(12, 31), status=running_status(R1), runs=(R1,)),
        Expect(
            status={"activeRun": {"name": N1}, "lastScheduleTime": "2024-03-01T12:15:00Z"},
            conditions={"Running": ("True", "RunActive"), "Blocked": ("False", "Clear")},
            messages={"Running": "concurrencyPolicy Forbid"},
            events=(),
        ),
        id="forbid-next-slot-waits-for-active-run",
    ),
    pytest.param(
        observe(at(12, 31), spec=REPLACE, status=running_status(R1), runs=(R1,)),
        Expect(
            create="trades-202403011230-1",
            window_to=at(12, 25),
            delete=(N1,),
            status={"activeRun": {"name": "trades-202403011230-1"}, "lastScheduleTime": "2024-03-01T12:30:00Z"},
            events=(("Normal", "Replaced"), ("Normal", "RunStarted")),
        ),
        id="replace-stops-active-run-and-starts-next-slot",
    ),
    # A run finished successfully.
    pytest.param(
        observe(
            at(12, 21),
            status=running_status(R1, consecutiveFailures=2, lastError="old error"),
            runs=(R1_OK,),
            readback=Readback(Watermark(at(12, 10), 7), rows_added=42, row_count=1042),
        ),
        Expect(
            finished="Succeeded",
            status={
                "lastRun": {"name": N1, "outcome": "Succeeded", "rows": 42, "completionTime": "2024-03-01T12:20:00Z"},
                "watermark": {"timestamp": "2024-03-01T12:10:00.000000Z", "sequence": 7},
                "rowCount": 1042,
                "consecutiveFailures": 0,
                "lastError": "",
                "lastSuccessfulRun": "2024-03-01T12:20:00Z",
                "lastRunDurationSeconds": 299.0,
                "activeRun": None,
            },
            conditions={"Ready": ("True", "Succeeded"), "Running": ("False", "Idle")},
            messages={"Ready": "2024-03-01T12:10:00.000000Z#7"},
            events=(("Normal", "RunSucceeded"),),
        ),
        id="completed-with-commit-records-readback-watermark",
    ),
    pytest.param(
        observe(
            at(12, 21),
            status=running_status(R1),
            runs=(R1_OK,),
            readback=Readback(Watermark(at(12, 10)), rows_added=None, row_count=1000),
        ),
        Expect(
            finished="Skipped",
            status={
                "lastRun": {"name": N1, "outcome": "Skipped", "rows": 0},
                "consecutiveFailures": 0,
                "lastSuccessfulRun": "2024-03-01T12:20:00Z",
            },
            conditions={"Ready": ("True", "Succeeded")},
            events=(("Normal", "RunSkipped"),),
        ),
        id="completed-without-commit-is-skipped",
    ),
    # Failures and retries.
    pytest.param(
        observe(at(12, 20, 30), status=running_status(R1), runs=(R1_FAILED,)),
        Expect(
            finished="Failed",
            status={
                "lastRun": {"name": N1, "outcome": "Failed", "attempt": 1, "rows": 0},
                "consecutiveFailures": 1,
                "lastError": "boom",
                "lastFailureTime": "2024-03-01T12:20:00Z",
                "activeRun": None,
                "nextRun": "2024-03-01T12:21:00Z",
            },
            conditions={"Ready": ("True", "Retrying"), "Failing": ("False", "NotFailing")},
            events=(("Warning", "RunFailed"),),
        ),
        id="failed-attempt-counted-retry-not-yet",
    ),
    pytest.param(
        observe(at(12, 20, 59), status=failed_status(R1_FAILED, 1), runs=(R1_FAILED,)),
        Expect(status={"nextRun": "2024-03-01T12:21:00Z", "consecutiveFailures": 1}, events=()),
        id="retry-waits-for-delay-seconds",
    ),
    pytest.param(
        observe(at(12, 21), status=failed_status(R1_FAILED, 1), runs=(R1_FAILED,)),
        Expect(
            create=N2,
            window_to=at(12, 10),
            status={
                "activeRun": {"name": N2, "attempt": 2, "slot": "202403011215"},
                "lastScheduleTime": "2024-03-01T12:15:00Z",
                "consecutiveFailures": 1,
            },
            events=(("Normal", "RunStarted"),),
        ),
        id="retry-after-delay-is-attempt-2-of-same-window",
    ),
    pytest.param(
        observe(at(12, 26), status=failed_status(R2_FAILED, 2), runs=(R1_FAILED, R2_FAILED)),
        Expect(create=N3, window_to=at(12, 10), events=(("Normal", "RunStarted"),)),
        id="second-retry-is-attempt-3",
    ),
    pytest.param(
        observe(at(12, 28, 30), status=failed_status(R2_FAILED, 2), runs=(R1_FAILED, R2_FAILED, R3_FAILED)),
        Expect(
            finished="Failed",
            status={
                "consecutiveFailures": 3,
                "lastError": "boom again",
                "lastRun": {"name": N3, "attempt": 3, "outcome": "Failed"},
                "nextRun": "2024-03-01T12:30:00Z",
            },
            conditions={"Failing": ("True", "RetriesExhausted"), "Ready": ("False", "RetriesExhausted")},
            messages={"Failing": "boom again", "Ready": "3 failed attempts"},
            events=(("Warning", "RunFailed"), ("Warning", "RetriesExhausted")),
        ),
        id="last-attempt-failed-retries-exhausted",
    ),
    pytest.param(
        observe(at(12, 29, 59), status=EXHAUSTED, runs=(R1_FAILED, R2_FAILED, R3_FAILED)),
        Expect(
            status={"nextRun": "2024-03-01T12:30:00Z"},
            conditions={"Failing": ("True", "RetriesExhausted"), "Ready": ("False", "RetriesExhausted")},
            events=(),
        ),
        id="exhausted-no-retry-after-delay-no-repeated-warning",
    ),
    pytest.param(
        observe(at(12, 30), status=EXHAUSTED, runs=(R1_FAILED, R2_FAILED, R3_FAILED)),
        Expect(
            create="trades-202403011230-1",
            window_to=at(12, 25),
            status={"lastScheduleTime": "2024-03-01T12:30:00Z", "consecutiveFailures": 3},
            events=(("Normal", "RunStarted"),),
        ),
        id="exhausted-schedule-survives-next-slot-runs",
    ),
    pytest.param(
        observe(at(12, 29), status=EXHAUSTED, runs=(R1_FAILED, R2_FAILED, R3_FAILED), generation=2),
        Expect(
            create=N4,
            window_to=at(12, 10),
            generation=2,
            status={"observedGeneration": 2},
            conditions={"Failing": ("False", "NotFailing")},
            events=(("Normal", "RunStarted"),),
        ),
        id="spec-changed-after-exhaustion-retries-at-once",
    ),
    pytest.param(
        observe(at(12, 20, 5), status=failed_status(R1_FAILED, 1), runs=(R1_FAILED,), generation=2),
        Expect(create=N2, generation=2, events=(("Normal", "RunStarted"),)),
        id="spec-changed-after-failure-skips-the-delay",
    ),
    # Deadline and a vanished SparkApplication.
    pytest.param(
        observe(
            R1.created + timedelta(seconds=601),
            spec=make_spec(runDeadlineSeconds=600),
            status=running_status(R1),
            runs=(R1,),
        ),
        Expect(
            delete=(N1,),
            finished="Failed",
            status={
                "consecutiveFailures": 1,
                "lastRun": {"name": N1, "outcome": "Failed"},
                "activeRun": None,
                "lastFailureTime": "2024-03-01T12:25:02Z",
            },
            conditions={"Running": ("False", "Idle"), "Ready": ("True", "Retrying")},
            events=(("Warning", "DeadlineExceeded"), ("Warning", "RunFailed")),
        ),
        id="deadline-exceeded-run-deleted-and-failed",
    ),
    pytest.param(
        observe(
            R1.created + timedelta(seconds=600),
            spec=make_spec(runDeadlineSeconds=600),
            status=running_status(R1),
            runs=(R1,),
        ),
        Expect(status={"activeRun": {"name": N1}}, events=()),
        id="deadline-reached-exactly-is-not-exceeded",
    ),
    pytest.param(
        observe(at(12, 20), status=running_status(R1), runs=()),
        Expect(
            finished="Failed",
            status={
                "consecutiveFailures": 1,
                "lastRun": {"name": N1, "outcome": "Failed", "attempt": 1},
                "activeRun": None,
            },
            events=(("Warning", "RunFailed"),),
        ),
        id="spark-application-vanished-while-active",
    ),
    # Manual trigger.
    pytest.param(
        observe(at(12, 10), trigger=TRIGGER),
        Expect(
            create=f"trades-{MANUAL_SLOT}-1",
            window_to=at(12, 5),
            status={"lastTrigger": TRIGGER, "lastScheduleTime": None, "activeRun": {"slot": MANUAL_SLOT}},
            events=(("Normal", "RunStarted"),),
        ),
        id="manual-trigger-starts-run-with-manual-slot",
    ),
    pytest.param(
        observe(at(12, 11), status={"lastTrigger": TRIGGER}, trigger=TRIGGER),
        Expect(status={"lastTrigger": TRIGGER}, events=()),
        id="same-trigger-again-starts-nothing",
    ),
    pytest.param(
        observe(at(12, 20), status=running_status(R1), runs=(R1,), trigger=TRIGGER),
        Expect(status={"lastTrigger": None, "activeRun": {"name": N1}}, events=()),
        id="trigger-while-forbid-blocked-is-not-consumed",
    ),
    pytest.param(
        observe(at(12, 20), spec=REPLACE, status=running_status(R1), runs=(R1,), trigger=TRIGGER),
        Expect(
            create=f"trades-{MANUAL_SLOT}-1",
            delete=(N1,),
            status={"lastTrigger": TRIGGER},
            events=(("Normal", "Replaced"), ("Normal", "RunStarted")),
        ),
        id="trigger-under-replace-stops-active-run",
    ),
    pytest.param(
        observe(at(12, 10), spec=UPSTREAM, upstream=upstream_at(at(11, 0)), trigger=TRIGGER),
        Expect(create=f"trades-{MANUAL_SLOT}-1", window_to=at(11, 0), events=(("Normal", "RunStarted"),)),
        id="manual-run-capped-at-upstream-watermark",
    ),
    pytest.param(
        observe(at(12, 10), spec=UPSTREAM, upstream=upstream_at(at(12, 9)), trigger=TRIGGER),
        Expect(create=f"trades-{MANUAL_SLOT}-1", window_to=at(12, 5)),
        id="manual-run-not-capped-by-upstream-ahead",
    ),
    pytest.param(
        observe(at(12, 10), spec=UPSTREAM, upstream=upstream_at(None), trigger=TRIGGER),
        Expect(status={"lastTrigger": None}, conditions={"Blocked": ("True", "WaitingForUpstream")}),
        id="manual-run-waits-for-upstream-without-watermark",
    ),
    # Suspend.
    pytest.param(
        observe(SLOT1, spec=SUSPENDED),
        Expect(
            status={"nextRun": None, "lastScheduleTime": None},
            conditions={"Suspended": ("True", "Suspended"), "Ready": ("False", "Suspended")},
            events=(("Warning", "Suspended"),),
        ),
        id="suspended-starts-no-scheduled-run",
    ),
    pytest.param(
        observe(at(12, 31), spec=SUSPENDED, status=running_status(R1), runs=(R1,)),
        Expect(
            status={"activeRun": {"name": N1}},
            conditions={"Running": ("True", "RunActive"), "Suspended": ("True", "Suspended")},
        ),
        id="suspended-leaves-active-run-to-finish",
    ),
    # Upstream gating of scheduled runs.
    pytest.param(
        observe(SLOT1, spec=UPSTREAM, upstream=upstream_at(at(12, 5))),
        Expect(
            status={"lastScheduleTime": None, "activeRun": None},
            conditions={"Blocked": ("True", "WaitingForUpstream"), "Ready": ("True", "WaitingForUpstream")},
            messages={"Blocked": "bronze-trades (watermark 2024-03-01T12:05:00", "Ready": "2024-03-01T12:10:00"},
            events=(),
        ),
        id="upstream-behind-blocks-scheduled-run",
    ),
    pytest.param(
        observe(SLOT1, spec=UPSTREAM, upstream=upstream_at(None)),
        Expect(conditions={"Blocked": ("True", "WaitingForUpstream")}, messages={"Blocked": "none yet"}),
        id="upstream-without-watermark-blocks",
    ),
    pytest.param(
        observe(at(12, 17), spec=UPSTREAM, upstream=upstream_at(at(12, 10))),
        Expect(
            create=N1,
            window_to=at(12, 10),
            status={"lastScheduleTime": "2024-03-01T12:15:00Z"},
            conditions={"Blocked": ("False", "Clear")},
        ),
        id="upstream-caught-up-exactly-runs",
    ),
    pytest.param(
        observe(
            SLOT1,
            spec=make_spec(dependsOn=["bronze-a", "bronze-b"]),
            upstream={"bronze-a": Upstream(True, Watermark(at(12, 11))), "bronze-b": Upstream(True, None)},
        ),
        Expect(conditions={"Blocked": ("True", "WaitingForUpstream")}, messages={"Blocked": "bronze-b"}),
        id="one-of-two-upstreams-behind-blocks",
    ),
    # Specs that can never run.
    pytest.param(
        observe(SLOT1, spec=make_spec(dependsOn=["ghost"])),
        Expect(
            status={"nextRun": None, "activeRun": None},
            conditions={"Ready": ("False", "UnknownUpstream")},
            messages={"Ready": "ghost"},
            events=(("Warning", "UnknownUpstream"),),
        ),
        id="unknown-upstream-creates-nothing",
    ),
    pytest.param(
        observe(
            SLOT1,
            spec=UPSTREAM,
            upstream=upstream_at(at(12, 10)),
            dependency_cycle="spec.dependsOn forms a cycle: trades -> bronze-trades -> trades",
        ),
        Expect(
            conditions={"Ready": ("False", "DependencyCycle")},
            messages={"Ready": "trades -> bronze-trades -> trades"},
            events=(("Warning", "DependencyCycle"),),
        ),
        id="dependency-cycle-creates-nothing",
    ),
    pytest.param(
        observe(SLOT1, spec=None, spec_error="spec.layer: 'platinum' is not one of bronze, silver, gold"),
        Expect(
            status={"nextRun": None},
            conditions={"Ready": ("False", "InvalidSpec")},
            messages={"Ready": "spec.layer: 'platinum'"},
            events=(("Warning", "InvalidSpec"),),
        ),
        id="invalid-spec-creates-nothing",
    ),
    pytest.param(
        observe(at(12, 21), spec=None, spec_error="spec.layer is required", status=running_status(R1), runs=(R1_OK,)),
        Expect(
            finished="Succeeded",
            status={"lastRun": {"name": N1, "outcome": "Succeeded"}, "activeRun": None},
            conditions={"Ready": ("False", "InvalidSpec")},
        ),
        id="invalid-spec-still-records-the-finished-run",
    ),
    pytest.param(
        observe(at(13, 30), spec=None, spec_error="spec.layer is required", status=running_status(R1), runs=(R1,)),
        Expect(status={"activeRun": {"name": N1}}, conditions={"Running": ("True", "RunActive")}),
        id="invalid-spec-leaves-active-run-alone",
    ),
]


@pytest.mark.parametrize(("observed", "expect"), CASES)
def test_decide(observed: Observed, expect: Expect) -> None:
    decision = decide(observed)

    assert (decision.create.name if decision.create else None) == expect.create
    if expect.create is not None:
        assert decision.create is not None
        if expect.window_to is not None:
            assert decision.create.window_to == expect.window_to
        if expect.generation is not None:
            assert decision.create.generation == expect.generation
        assert decision.create.name == run_name(NAME, decision.create.slot, decision.create.attempt)
    assert sorted(decision.delete) == sorted(expect.delete)
    assert outcomes(decision) == ([expect.finished] if expect.finished else [])
    assert_subset(body(decision), expect.status)
    conds = conditions(decision)
    # A spec that can never run sets only these four; otherwise all six are set.
    assert {"Ready", "Running", "Blocked", "InSync"} <= set(conds)
    for type_, (status, reason) in expect.conditions.items():
        assert (conds[type_]["status"], conds[type_]["reason"]) == (status, reason), type_
    for type_, text in expect.messages.items():
        assert text in conds[type_]["message"], (type_, conds[type_]["message"])
    if expect.events is not None:
        assert [(e.type, e.reason) for e in decision.events] == list(expect.events)
    for cond in conds.values():
        # Only InSync may not know yet: no run has audited the table.
        assert cond["status"] in ("True", "False") or (cond["type"], cond["status"]) == ("InSync", "Unknown")
        assert cond["observedGeneration"] == observed.generation
        assert cond["lastTransitionTime"]


def test_decide_does_not_mutate_the_observation() -> None:
    status = running_status(R1, conditions=[{"type": "Ready", "status": "True", "reason": "Scheduled"}])
    before = repr(status)
    decide(observe(at(12, 21), status=status, runs=(R1_FAILED,)))
    assert repr(status) == before


def test_two_upstreams_message_names_only_the_one_behind() -> None:
    decision = decide(
        observe(
            SLOT1,
            spec=make_spec(dependsOn=["bronze-a", "bronze-b"]),
            upstream={"bronze-a": Upstream(True, Watermark(at(12, 11))), "bronze-b": Upstream(True, None)},
        )
    )
    message = conditions(decision)["Blocked"]["message"]
    assert "bronze-b" in message
    assert "bronze-a" not in message


def test_unknown_upstream_message_lists_every_missing_table() -> None:
    spec = make_spec(dependsOn=["zeta", "alpha", "known"])
    decision = decide(observe(SLOT1, spec=spec, upstream={"known": Upstream(True, Watermark(at(13, 0)))}))
    assert decision.create is None
    assert "alpha, zeta" in conditions(decision)["Ready"]["message"]


def test_deadline_message_names_run_deadline_and_state() -> None:
    decision = decide(
        observe(R1.created + timedelta(hours=2), status=running_status(R1), runs=(replace(R1, state="SUBMITTED"),))
    )
    assert decision.finished
    assert N1 in body(decision)["lastError"]
    assert "3600s" in body(decision)["lastError"]
    assert "SUBMITTED" in body(decision)["lastError"]


def test_submission_failed_counts_as_failed() -> None:
    run = replace(R1, state="SUBMISSION_FAILED", terminated=at(12, 16), error="")
    decision = decide(observe(at(12, 17), status=running_status(R1), runs=(run,)))
    assert outcomes(decision) == ["Failed"]
    assert "SUBMISSION_FAILED" in body(decision)["lastError"]


def test_long_error_is_truncated_in_status() -> None:
    run = failed(R1, at(12, 20), error="x" * 5000)
    decision = decide(observe(at(12, 21), status=running_status(R1), runs=(run,)))
    assert len(body(decision)["lastError"]) == 2000
    assert len(body(decision)["lastRun"]["message"]) == 500
    assert [done.error for done in decision.finished] == ["x" * 5000]


# --- history ------------------------------------------------------------------------------------


def history_runs() -> tuple[list[ObservedRun], list[ObservedRun]]:
    """Five succeeded and four failed finished runs, one per hourly slot, oldest first."""
    ok, bad = [], []
    for hour in range(3, 12):
        slot = at(hour, 0)
        run = srun(slot)
        if hour % 2:
            ok.append(completed(run, slot + timedelta(minutes=3)))
        else:
            bad.append(failed(run, slot + timedelta(minutes=3)))
    return ok, bad


@pytest.mark.parametrize(
    ("keep_ok", "keep_failed"),
    [pytest.param(3, 3, id="defaults"), pytest.param(1, 2, id="1-ok-2-failed"), pytest.param(0, 0, id="keep-none")],
)
def test_history_cleanup_keeps_newest_runs(keep_ok: int, keep_failed: int) -> None:
    ok, bad = history_runs()
    spec = make_spec(successfulRunHistoryLimit=keep_ok, failedRunHistoryLimit=keep_failed)
    newest = ok[-1]
    status = {"lastRun": record(newest, "Succeeded"), "lastScheduleTime": ts(at(11, 0)), "activeRun": None}
    decision = decide(observe(at(11, 5), spec=spec, status=status, runs=(*ok, *bad)))
    expected = [r.name for r in ok[: len(ok) - keep_ok]] + [r.name for r in bad[: len(bad) - keep_failed]]
    assert sorted(decision.delete) == sorted(expected)


def test_history_cleanup_never_deletes_the_active_run() -> None:
    ok, bad = history_runs()
    active = srun(at(12, 0), created=at(12, 0, 1))
    status = running_status(active, slot=at(12, 0), lastRun=record(ok[-1], "Succeeded"))
    spec = make_spec(successfulRunHistoryLimit=0, failedRunHistoryLimit=0)
    decision = decide(observe(at(12, 5), spec=spec, status=status, runs=(*ok, *bad, active)))
    assert active.name not in decision.delete
    assert len(decision.delete) == len(ok) + len(bad)


def test_history_cleanup_with_invalid_spec_uses_default_limits() -> None:
    ok, bad = history_runs()
    status = {"lastRun": record(ok[-1], "Succeeded")}
    decision = decide(
        observe(at(11, 5), spec=None, spec_error="spec.layer is required", status=status, runs=(*ok, *bad))
    )
    assert sorted(decision.delete) == sorted([r.name for r in ok[:2]] + [r.name for r in bad[:1]])


# --- set_condition and run_to_record ------------------------------------------------------------


def test_set_condition_appends_a_new_condition() -> None:
    conds = set_condition((), Condition("Ready", "True", Reason.SCHEDULED, "first run soon"), at(12, 0), 4)
    assert [c.to_dict() for c in conds] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Scheduled",
            "message": "first run soon",
            "lastTransitionTime": "2024-03-01T12:00:00Z",
            "observedGeneration": 4,
        }
    ]


@pytest.mark.parametrize(
    ("new_status", "moves"),
    [pytest.param(True, False, id="same-status-keeps-time"), pytest.param(False, True, id="status-change-moves-time")],
)
def test_set_condition_transition_time(new_status: bool, moves: bool) -> None:
    conds: tuple[Condition, ...] = (Condition("Other", "True"),)
    conds = set_condition(conds, Condition("Ready", "True", "Scheduled", "m"), at(12, 0), 1)
    changed = Condition("Ready", "True" if new_status else "False", "Changed", "m2")
    conds = set_condition(conds, changed, at(13, 0, 0) + timedelta(microseconds=5), 2)
    ready = conds[1].to_dict()
    assert len(conds) == 2
    assert ready["lastTransitionTime"] == ("2024-03-01T13:00:00Z" if moves else "2024-03-01T12:00:00Z")
    assert (ready["reason"], ready["message"], ready["observedGeneration"]) == ("Changed", "m2", 2)
    assert ready["status"] == ("True" if new_status else "False")


@pytest.mark.parametrize(
    ("runs", "last", "expected"),
    [
        pytest.param((), None, None, id="no-runs"),
        pytest.param((R1,), None, None, id="newest-still-running"),
        pytest.param((R1_OK,), None, N1, id="finished-never-recorded"),
        pytest.param((R1_OK,), record(R1_OK, "Succeeded"), None, id="already-recorded"),
        pytest.param((R1_FAILED, R2_FAILED), record(R1_FAILED, "Failed"), N2, id="newer-than-recorded"),
        pytest.param((R1_FAILED, R2), record(R1_FAILED, "Failed"), None, id="older-finished-newest-running"),
        pytest.param((R1_FAILED,), record(R2_FAILED, "Failed"), None, id="older-than-recorded"),
    ],
)
def test_run_to_record(runs: tuple[ObservedRun, ...], last: dict[str, Any] | None, expected: str | None) -> None:
    status = {"lastRun": last} if last else {}
    found = run_to_record(observe(at(12, 30), status=status, runs=runs))
    assert (found.name if found else None) == expected


# --- run names ----------------------------------------------------------------------------------


def test_run_name_examples() -> None:
    assert run_name("trades", "202403011215", 1) == "trades-202403011215-1"
    digest = hashlib.sha256(("a" * 50).encode()).hexdigest()[:6]
    assert run_name("a" * 50, "202403011215", 20) == "a" * 33 + f"-{digest}-202403011215-20"
    assert run_name("a" * 40, "202403011215", 2) == "a" * 40 + "-202403011215-2"  # fits: kept whole
    digest = hashlib.sha256(("a" * 32 + "-bbbbbbbbbb").encode()).hexdigest()[:6]
    assert run_name("a" * 32 + "-bbbbbbbbbb", "202403011215", 2) == "a" * 32 + f"-{digest}-202403011215-2"  # no "--"
    assert schedule_slot_id(datetime(2024, 3, 31, 2, 30, tzinfo=UTC)) == "202403310230"
    assert manual_slot_id(TRIGGER) == MANUAL_SLOT
    assert re.fullmatch(r"m[0-9a-f]{10}", manual_slot_id("anything at all: ✓"))


table_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
slots = st.one_of(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)).map(
        schedule_slot_id
    ),
    st.text(min_size=1, max_size=80).map(manual_slot_id),
)


@PROPERTY
@given(table=table_names, slot=slots, attempt=st.integers(min_value=1, max_value=20))
def test_run_name_is_deterministic_short_dns_label(table: str, slot: str, attempt: int) -> None:
    name = run_name(table, slot, attempt)
    assert name == run_name(table, slot, attempt)
    assert len(name) <= 63
    assert DNS_LABEL.fullmatch(name), name
    assert name.endswith(f"-{slot}-{attempt}")
    assert name.startswith(table if len(table) <= 40 else table[:33].rstrip("-"))


@PROPERTY
@given(table=table_names, a=slots, b=slots, n=st.integers(1, 20), m=st.integers(1, 20))
def test_run_names_of_one_table_differ_when_slot_or_attempt_differ(table: str, a: str, b: str, n: int, m: int) -> None:
    if (a, n) != (b, m):
        assert run_name(table, a, n) != run_name(table, b, m)
