"""Properties of decide() over many generated ticks: idempotent, one run at a time, never a
name twice, failures counted."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from decide_kit import (
    PROPERTY,
    Cluster,
    body,
    make_spec,
)
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from iceberg_offload.operator.decide import (
    Decision,
    Observed,
    ObservedRun,
    decide,
)
from iceberg_offload.operator.spec import OffloadTableSpec

# --- properties over many ticks -----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    seconds: int  # clock advance before the tick
    finish: str | None  # the active run ends before the tick: COMPLETED, FAILED or None (still running)
    action: str  # tick, trigger (a new annotation value), edit (generation bump), restart
    commit: bool  # a COMPLETED run's readback shows a commit (else Skipped)


steps = st.builds(
    Step,
    seconds=st.one_of(st.integers(1, 120), st.integers(121, 1800)),
    finish=st.sampled_from([None, None, "COMPLETED", "FAILED", "FAILED"]),
    action=st.sampled_from(["tick", "tick", "tick", "trigger", "edit", "restart"]),
    commit=st.booleans(),
)


def specs(policy: str) -> st.SearchStrategy[OffloadTableSpec]:
    return st.builds(
        lambda attempts, delay, schedule, zone: make_spec(
            concurrencyPolicy=policy,
            retryPolicy={"maxAttempts": attempts, "delaySeconds": delay},
            schedule=schedule,
            timeZone=zone,
            runDeadlineSeconds=86400,  # the simulated runs always end; deadlines have their own cases
        ),
        attempts=st.integers(1, 4),
        delay=st.sampled_from([0, 60, 600]),
        schedule=st.sampled_from(["*/15 * * * *", "*/5 * * * *", "0 * * * *", "30 1 * * *"]),
        zone=st.sampled_from(["UTC", "Europe/London"]),
    )


# Whole seconds, as Kubernetes timestamps are; the range crosses the 2024 DST change in London.
starts = st.datetimes(min_value=datetime(2024, 3, 30), max_value=datetime(2024, 4, 1), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=0)
)
plans = st.lists(steps, min_size=1, max_size=40)


def check_idempotent(observed: Observed, decision: Decision) -> None:
    """Deciding again on the decision's own status (and its new run, not finished) at the same
    clock starts nothing, records nothing and stops nothing new."""
    runs = list(observed.runs)
    if decision.create is not None:
        plan = decision.create
        runs.append(ObservedRun(plan.name, plan.slot, plan.attempt, plan.generation, plan.window_to, observed.now))
    again = decide(replace(observed, status=decision.status, runs=tuple(runs), readback=None))
    assert again.create is None, f"second run {again.create} after {decision.create}"
    assert again.finished == [], "a finished run recorded twice"
    assert "RunStarted" not in [e.reason for e in again.events]
    assert set(again.delete) <= set(decision.delete), f"{again.delete} deleted on repetition"


def simulate(spec: OffloadTableSpec, start: datetime, plan: list[Step], idempotent: bool) -> None:
    """Run the plan against a Cluster, checking the invariants after every tick."""
    cluster = Cluster(spec=spec)
    now = start
    outcomes: list[str] = []  # how every run ended, in order: the simulation's own record
    triggers = 0
    for step in plan:
        now += timedelta(seconds=step.seconds)
        if step.finish is not None:
            for name in cluster.active():
                cluster.finish(name, step.finish, now)
                outcomes.append(step.finish)
        cluster.rows = 10 if step.commit else None
        if step.action == "trigger":
            triggers += 1
            cluster.trigger = f"trigger-{triggers}"
        elif step.action == "edit":
            cluster.generation += 1
        elif step.action == "restart":
            cluster.tick(now, act=False)  # decided, then the operator restarted before acting

        observed = cluster.observe(now)
        decision = decide(observed)
        if idempotent:
            check_idempotent(observed, decision)
        cluster.apply(decision, now)  # asserts that no name is ever created twice

        assert len(cluster.active()) <= 1, cluster.active()
        if spec.concurrency_policy == "Forbid":
            successes = [i for i, outcome in enumerate(outcomes) if outcome == "COMPLETED"]
            failures_since_success = len(outcomes) - (successes[-1] + 1 if successes else 0)
            assert int(cluster.status.get("consecutiveFailures") or 0) == failures_since_success


@PROPERTY
@given(spec=specs("Forbid"), start=starts, plan=plans)
def test_forbid_ticks_are_idempotent_unique_single_and_count_failures(
    spec: OffloadTableSpec, start: datetime, plan: list[Step]
) -> None:
    simulate(spec, start, plan, idempotent=True)


@settings(PROPERTY, derandomize=True, phases=[Phase.generate])  # failing as expected: no shrinking
@given(spec=specs("Replace"), start=starts, plan=plans)
def test_replace_ticks_never_duplicate_names_or_run_two_at_once(
    spec: OffloadTableSpec, start: datetime, plan: list[Step]
) -> None:
    simulate(spec, start, plan, idempotent=False)


@settings(PROPERTY, derandomize=True, phases=[Phase.generate])  # failing as expected: no shrinking
@given(spec=specs("Replace"), start=starts, plan=plans)
def test_replace_ticks_are_idempotent(spec: OffloadTableSpec, start: datetime, plan: list[Step]) -> None:
    simulate(spec, start, plan, idempotent=True)


@PROPERTY
@given(
    spec=st.one_of(specs("Forbid"), specs("Replace")),
    now=starts,
    created=starts,
    trigger=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
)
def test_first_reconcile_is_idempotent(
    spec: OffloadTableSpec, now: datetime, created: datetime, trigger: str | None
) -> None:
    if spec.concurrency_policy == "Replace" and trigger is not None:
        return  # a known bug: see test_manual_run_is_not_replaced_by_the_pending_slot
    observed = replace(Cluster(spec=spec, trigger=trigger).observe(max(now, created)), created=created)
    decision = decide(observed)
    check_idempotent(observed, decision)
    if decision.create is not None:
        assert body(decision)["activeRun"]["name"] == decision.create.name
