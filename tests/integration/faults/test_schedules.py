"""The schedule generator's promises (no engines): the same seed gives the same schedule, every
row is on time (at or after the frontier) but the late ones (before it), and the steps the suite
relies on do occur."""

from __future__ import annotations

from collections import Counter

from schedules import BRONZE, MAX_STEPS, SILVER, Insert, Overlap, Reset, Run, Schedule, Step, schedule

SEEDS = range(1500)


def runs_of(step: Step) -> list[Run]:
    if isinstance(step, Run):
        return [step]
    return list(step.runs) if isinstance(step, Overlap) else []


def test_a_seed_gives_one_schedule() -> None:
    for seed in range(50):
        assert schedule(seed) == schedule(seed)
        assert schedule(seed).describe() == schedule(seed).describe()
    assert len({schedule(s).describe() for s in range(50)}) == 50


def test_every_row_but_a_late_one_is_at_or_after_the_frontier() -> None:
    for seed in SEEDS:
        frontier = 0
        for step in schedule(seed).steps:
            if isinstance(step, Insert) and not step.late:
                assert step.at_ms >= frontier, f"seed {seed}: {step.describe()} before the frontier {frontier}"
            if isinstance(step, Insert) and step.late:
                assert 0 <= step.at_ms < frontier, f"seed {seed}: {step.describe()} not behind the frontier {frontier}"
            for run in runs_of(step):
                frontier = max(frontier, run.slot.bound_ms)


def test_clocks_never_go_back() -> None:
    """From step to step (the runs of one overlap may be of different clocks, in any order)."""
    for seed in SEEDS:
        latest = 0
        for step in schedule(seed).steps:
            nows = [run.slot.now_ms for run in runs_of(step)]
            assert all(now >= latest for now in nows), f"seed {seed}: {step.describe()} after a clock of {latest}"
            latest = max([latest, *nows])


def test_shapes() -> None:
    kills = 0
    for seed in SEEDS:
        plan = schedule(seed)
        assert 3 <= len(plan.steps) <= MAX_STEPS, plan.describe()
        assert isinstance(plan.steps[0], Insert) and not isinstance(plan.steps[-1], Insert), plan.describe()
        for step in plan.steps:
            if isinstance(step, Overlap):
                assert 2 <= len(step.runs) <= 3 and Counter(step.order) == {i: 4 for i in range(len(step.runs))}
            if isinstance(step, Run) and step.failpoint:
                assert step.table in BRONZE and step.die_at is None
        kills += sum(1 for s in plan.steps if isinstance(s, Run) and s.failpoint)
        assert plan.kills == any(isinstance(s, Run) and s.failpoint for s in plan.steps)
    assert 0.07 < kills / len(SEEDS) < 0.2, f"{kills} job processes in {len(SEEDS)} schedules"


def count(plans: list[Schedule], what: str) -> int:
    """How many schedules have a step of the kind `what` (the suite's coverage of each fault)."""
    checks = {
        "rows at a window end": lambda p, i, s: isinstance(s, Insert) and _at_window_end(p, i, s),
        "same-millisecond rows of both exchanges": lambda p, i, s: isinstance(s, Insert) and len(s.exchanges) == 2,
        "three overlapping runs": lambda p, i, s: isinstance(s, Overlap) and len(s.runs) == 3,
        "in-process deaths": lambda p, i, s: any(r.die_at for r in runs_of(s)),
        "retries": lambda p, i, s: isinstance(s, Run) and s.retry,
        "resets": lambda p, i, s: isinstance(s, Reset) and not s.dry,
        "dry resets": lambda p, i, s: isinstance(s, Reset) and s.dry,
        "silver runs": lambda p, i, s: any(r.table == SILVER for r in runs_of(s)),
        "requested ends": lambda p, i, s: any(r.slot.to_ms is not None for r in runs_of(s)),
        "late rows": lambda p, i, s: isinstance(s, Insert) and s.late,
        "late rows then a repairing run": lambda p, i, s: (
            isinstance(s, Insert) and s.late and any(r.repair for t in p.steps[i + 1 :] for r in runs_of(t))
        ),
        "overlapping repairing runs": lambda p, i, s: isinstance(s, Overlap) and sum(r.repair for r in s.runs) >= 2,
        "deaths after a repair": lambda p, i, s: any(
            r.repair and "repaired" in (r.die_at, r.failpoint) for r in runs_of(s)
        ),
    }
    return sum(any(checks[what](p, i, s) for i, s in enumerate(p.steps)) for p in plans)


def _at_window_end(plan: Schedule, index: int, insert: Insert) -> bool:
    """A row at exactly the bound of a run before or after it."""
    return any(insert.at_ms == r.slot.bound_ms for s in plan.steps for r in runs_of(s))


def test_each_fault_occurs() -> None:
    plans = [schedule(seed) for seed in SEEDS]
    for what in (
        "rows at a window end",
        "same-millisecond rows of both exchanges",
        "three overlapping runs",
        "in-process deaths",
        "retries",
        "resets",
        "dry resets",
        "silver runs",
        "requested ends",
        "late rows",
        "late rows then a repairing run",
        "overlapping repairing runs",
        "deaths after a repair",
    ):
        assert count(plans, what) >= len(plans) // 50, f"only {count(plans, what)} schedules with {what}"
