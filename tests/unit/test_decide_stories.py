"""decide() over several ticks against an in-memory cluster (decide_kit.Cluster): retries,
triggers, upstream waits, warnings, and the defects found so far."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from decide_kit import (
    MANUAL_SLOT,
    N1,
    N2,
    N3,
    NAME,
    R1,
    R1_FAILED,
    R2,
    REPLACE,
    SLOT1,
    SLOT2,
    SPEC,
    SUSPENDED,
    TRIGGER,
    UPSTREAM,
    Cluster,
    at,
    body,
    conditions,
    failed_status,
    make_spec,
    observe,
    record,
    running_status,
    srun,
    started,
    ts,
    upstream_at,
)
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.decide import (
    ObservedRun,
    decide,
    manual_slot_id,
    run_name,
)
from iceberg_offload.operator.spec import OffloadTableSpec

# --- stories over several ticks -----------------------------------------------------------------


def test_finished_run_is_recorded_once() -> None:
    cluster = Cluster()
    cluster.tick(SLOT1)
    cluster.finish(N1, "COMPLETED", at(12, 20))
    first = cluster.tick(at(12, 21))
    [done] = first.finished
    assert done.name == N1 and done.rows == 10
    assert done.watermark == Watermark(at(12, 10))
    second = cluster.tick(at(12, 21))
    assert second.finished == []
    assert [e.reason for e in second.events] == []
    assert body(second)["lastRun"] == body(first)["lastRun"]
    third = cluster.tick(at(12, 22))
    assert third.finished == [] and third.create is None


def test_retry_ladder_then_schedule_survives_failure() -> None:
    cluster = Cluster()
    assert cluster.tick(SLOT1).create is not None
    cluster.finish(N1, "FAILED", at(12, 16))
    assert cluster.tick(at(12, 16, 30)).create is None  # the 60 s delay
    assert started(cluster.tick(at(12, 17))) == N2
    cluster.finish(N2, "FAILED", at(12, 18))
    cluster.tick(at(12, 18, 10))
    assert cluster.status["consecutiveFailures"] == 2
    assert started(cluster.tick(at(12, 19, 30))) == N3
    cluster.finish(N3, "FAILED", at(12, 20), error="still broken")
    exhausted = cluster.tick(at(12, 20, 10))
    assert cluster.status["consecutiveFailures"] == 3
    assert cluster.condition("Failing") == ("True", "RetriesExhausted")
    assert cluster.condition("Ready") == ("False", "RetriesExhausted")
    assert ("Warning", "RetriesExhausted") in [(e.type, e.reason) for e in exhausted.events]
    for minute in (22, 25, 29):
        quiet = cluster.tick(at(12, minute))
        assert quiet.create is None
        assert quiet.events == []  # the warning is not repeated
    nxt = cluster.tick(SLOT2)
    assert nxt.create is not None and nxt.create.name == "trades-202403011230-1"
    cluster.finish(nxt.create.name, "FAILED", at(12, 31))
    cluster.tick(at(12, 31, 5))
    assert cluster.status["consecutiveFailures"] == 4
    assert cluster.condition("Failing") == ("False", "NotFailing")
    assert cluster.condition("Ready") == ("True", "Retrying")
    retry = cluster.tick(at(12, 32, 5))
    assert retry.create is not None and retry.create.name == "trades-202403011230-2"
    cluster.finish(retry.create.name, "COMPLETED", at(12, 33))
    cluster.tick(at(12, 33, 5))
    assert cluster.status["consecutiveFailures"] == 0
    assert cluster.condition("Ready") == ("True", "Succeeded")
    assert cluster.condition("Failing") == ("False", "NotFailing")
    assert cluster.created == [N1, N2, N3, "trades-202403011230-1", "trades-202403011230-2"]


def test_spec_fix_after_exhaustion_recovers_without_waiting_for_the_schedule() -> None:
    cluster = Cluster(spec=make_spec(retryPolicy={"maxAttempts": 1}))
    cluster.tick(SLOT1)
    cluster.finish(N1, "FAILED", at(12, 16))
    cluster.tick(at(12, 16, 5))
    assert cluster.condition("Ready") == ("False", "RetriesExhausted")
    assert cluster.tick(at(12, 18)).create is None
    cluster.generation = 2  # the user fixes the spec
    fix = cluster.tick(at(12, 19))
    assert fix.create is not None and fix.create.name == N2 and fix.create.generation == 2
    assert cluster.condition("Ready")[1] != "RetriesExhausted"
    cluster.finish(N2, "COMPLETED", at(12, 21))
    cluster.tick(at(12, 21, 5))
    assert cluster.condition("Ready") == ("True", "Succeeded")
    assert cluster.status["consecutiveFailures"] == 0


def test_trigger_blocked_by_forbid_runs_after_the_active_run() -> None:
    cluster = Cluster()
    cluster.tick(SLOT1)
    cluster.trigger = TRIGGER
    for minute in (16, 17, 18):
        assert cluster.tick(at(12, minute)).create is None
        assert cluster.status.get("lastTrigger") is None
    cluster.finish(N1, "COMPLETED", at(12, 19))
    manual = cluster.tick(at(12, 19, 5))
    assert manual.create is not None and manual.create.slot == MANUAL_SLOT
    assert cluster.status["lastTrigger"] == TRIGGER
    assert cluster.tick(at(12, 19, 10)).create is None
    cluster.finish(manual.create.name, "COMPLETED", at(12, 20))
    assert cluster.tick(at(12, 20, 5)).create is None  # handled once
    assert cluster.tick(at(12, 25)).create is None


def test_new_trigger_value_starts_another_manual_run() -> None:
    cluster = Cluster(trigger="a")
    first = cluster.tick(at(12, 9))
    assert first.create is not None
    cluster.finish(first.create.name, "COMPLETED", at(12, 10))
    cluster.tick(at(12, 10, 5))
    cluster.trigger = "b"
    second = cluster.tick(at(12, 11))
    assert second.create is not None and second.create.name != first.create.name
    assert second.create.slot == manual_slot_id("b")


def test_blocked_upstream_then_caught_up() -> None:
    cluster = Cluster(spec=UPSTREAM, upstream=upstream_at(at(12, 0)))
    for second in (0, 30):
        decision = cluster.tick(at(12, 15, second))
        assert decision.create is None
        assert cluster.condition("Blocked") == ("True", "WaitingForUpstream")
    cluster.upstream = upstream_at(at(12, 10))
    decision = cluster.tick(at(12, 16))
    assert decision.create is not None and decision.create.name == N1
    assert cluster.condition("Blocked") == ("False", "Clear")
    assert cluster.status["lastScheduleTime"] == "2024-03-01T12:15:00Z"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(SUSPENDED, "Suspended", id="Suspended"),
        pytest.param(make_spec(dependsOn=["ghost"]), "UnknownUpstream", id="UnknownUpstream"),
        pytest.param(None, "InvalidSpec", id="InvalidSpec"),
    ],
)
def test_warning_only_on_transition_into_a_failure_reason(spec: OffloadTableSpec | None, reason: str) -> None:
    cluster, now = Cluster(spec=spec), SLOT1
    first = cluster.tick(now)
    assert [(e.type, e.reason) for e in first.events] == [("Warning", reason)]
    since = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
    for minutes in (1, 2, 20):
        again = cluster.tick(now + timedelta(minutes=minutes))
        assert again.events == []
        ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == ("False", reason, since)


def test_warning_again_after_recovering_and_failing_anew() -> None:
    cluster = Cluster(spec=SUSPENDED)
    assert [e.reason for e in cluster.tick(at(12, 10)).events] == ["Suspended"]
    cluster.spec, cluster.generation = SPEC, 2
    assert cluster.tick(at(12, 11)).events == []
    assert cluster.condition("Ready") == ("True", "Scheduled")
    cluster.spec, cluster.generation = SUSPENDED, 3
    assert [e.reason for e in cluster.tick(at(12, 12)).events] == ["Suspended"]


def test_ready_transition_time_moves_only_when_status_changes() -> None:
    cluster = Cluster()
    cluster.tick(at(12, 8))
    ready = dict(next(c for c in cluster.status["conditions"] if c["type"] == "Ready"))
    cluster.tick(SLOT1)  # a run starts: Ready stays True
    cluster.finish(N1, "COMPLETED", at(12, 20))
    cluster.tick(at(12, 21))  # Ready True, reason Succeeded
    after = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert after["reason"] == "Succeeded"
    assert after["lastTransitionTime"] == ready["lastTransitionTime"] == "2024-03-01T12:08:00Z"
    running = next(c for c in cluster.status["conditions"] if c["type"] == "Running")
    assert (running["status"], running["lastTransitionTime"]) == ("False", "2024-03-01T12:21:00Z")


# --- bugs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", [pytest.param(1, id="retry-after-delay"), pytest.param(2, id="spec-fix")])
def test_replace_does_not_stop_its_own_retry(generation: int) -> None:
    cluster = Cluster(spec=REPLACE, generation=generation)
    cluster.status = failed_status(R1_FAILED, 1)
    cluster.runs = {N1: R1_FAILED}
    retry = cluster.tick(at(12, 21, 1))
    assert retry.create is not None and retry.create.name == N2
    following = cluster.tick(at(12, 21, 30))
    assert following.delete == []
    assert "Replaced" not in [e.reason for e in following.events]


def test_replace_does_not_stop_a_newer_slot_for_an_older_retry() -> None:
    cluster = Cluster(spec=REPLACE)
    cluster.status = failed_status(R1_FAILED, 1, lastScheduleTime=ts(SLOT2))
    newer = srun(SLOT2)
    cluster.status["activeRun"] = record(newer, "Running")
    cluster.runs = {N1: R1_FAILED, newer.name: newer}
    decision = cluster.tick(at(12, 31))
    assert decision.delete == []
    assert decision.create is None


def test_replace_never_reuses_a_run_name() -> None:
    cluster = Cluster(spec=REPLACE)
    cluster.status = failed_status(R1_FAILED, 1)
    cluster.runs = {N1: R1_FAILED}
    assert started(cluster.tick(at(12, 21))) == N2
    cluster.trigger = TRIGGER
    manual = cluster.tick(at(12, 21, 10))  # the manual run replaces the retry
    assert manual.delete == [N2] and manual.create is not None
    again = cluster.tick(at(12, 21, 20))  # Cluster.apply asserts that no name is created twice
    assert again.create is None or again.create.name not in cluster.created


def test_manual_run_is_not_replaced_by_the_pending_slot() -> None:
    cluster = Cluster(spec=REPLACE, trigger=TRIGGER)
    manual = cluster.tick(SLOT1)
    assert manual.create is not None and manual.create.slot == MANUAL_SLOT
    following = cluster.tick(SLOT1 + timedelta(seconds=10))
    assert following.delete == []
    assert following.create is None


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(failed_status(R1_FAILED, 1), id="suspended-after-the-failure"),
        pytest.param(running_status(R1), id="active-run-left-to-finish-fails"),
    ],
)
def test_suspend_starts_no_retry(status: dict[str, Any]) -> None:
    decision = decide(observe(at(12, 20, 5), spec=SUSPENDED, status=status, runs=(R1_FAILED,), generation=2))
    assert decision.create is None


def test_own_retry_in_flight_is_not_blocked() -> None:
    status = failed_status(R1_FAILED, 1, activeRun=record(R2, "Running"))
    decision = decide(observe(at(12, 22), status=status, runs=(R1_FAILED, R2)))
    assert conditions(decision)["Blocked"]["status"] == "False"
    assert conditions(decision)["Ready"]["reason"] == "Retrying"


def test_concurrency_wait_is_not_reported_as_upstream_wait() -> None:
    decision = decide(observe(at(12, 31), status=running_status(R1), runs=(R1,)))
    assert conditions(decision)["Blocked"]["reason"] != "WaitingForUpstream"
    assert conditions(decision)["Ready"]["reason"] != "WaitingForUpstream"


def test_suspended_next_run_is_empty() -> None:
    decision = decide(observe(at(12, 20, 5), spec=SUSPENDED, status=failed_status(R1_FAILED, 1), runs=(R1_FAILED,)))
    assert decision.create is None
    assert body(decision)["nextRun"] is None


def test_run_names_of_different_tables_differ() -> None:
    prefix = "bronze-trades-binance-spot-usdt-perpetual"  # 41 characters
    assert run_name(prefix + "-eu", "202403011215", 1) != run_name(prefix + "-us", "202403011215", 1)


def test_reused_trigger_value_starts_a_new_run_under_a_new_name() -> None:
    old = ObservedRun(run_name(NAME, MANUAL_SLOT, 1), MANUAL_SLOT, 1, 1, at(12, 5), at(12, 10), "COMPLETED", at(12, 11))
    status = {"lastRun": record(old, "Succeeded"), "lastTrigger": "another", "activeRun": None}
    decision = decide(observe(at(12, 12), status=status, runs=(old,), trigger=TRIGGER))
    assert decision.create is not None and decision.create.name == run_name(NAME, MANUAL_SLOT, 2)
    assert body(decision)["activeRun"]["name"] == decision.create.name
    assert body(decision)["lastTrigger"] == TRIGGER
    assert conditions(decision)["Running"]["status"] == "True"


def test_failure_recorded_after_lost_status_patch() -> None:
    cluster = Cluster(spec=make_spec(retryPolicy={"delaySeconds": 0}))
    cluster.tick(SLOT1)
    before = dict(cluster.status)
    cluster.finish(N1, "FAILED", at(12, 16))
    retry = cluster.tick(at(12, 16, 5))
    assert retry.create is not None and body(retry)["consecutiveFailures"] == 1
    cluster.status = before  # the patch never reached the API server
    cluster.tick(at(12, 16, 15))
    assert cluster.status.get("consecutiveFailures") == 1
