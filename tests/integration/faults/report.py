"""The fault suite's seeds and its report: which schedules run, and the one line that sums them up.

Seeds: ``FAULT_SEED=S[,S...]`` replays exactly those schedules; otherwise ``FAULT_SCHEDULES``
(default :data:`DEFAULT_SCHEDULES`) seeds are drawn from a master seed, ``FAULT_MASTER_SEED`` or
a fresh one, printed in the summary so that the whole set replays too.

``python tests/integration/faults/report.py REPORT.json`` (``make fault-suite``) prints each
failing schedule (seed, steps, findings) and ends with exactly one line::

    fault-suite: N schedules, D duplicates, G gaps, X extra, R regressions

exiting 1 when any count is not zero or no schedule ran. A count is of distinct findings per
schedule (a key duplicated, missing or extra at any step; a watermark moving back), summed.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_SCHEDULES = 16
KINDS = ("duplicates", "gaps", "extra", "regressions")


@dataclass(frozen=True)
class SeedSet:
    seeds: list[int]
    master: int | None  # None: the seeds were given one by one


def seeds_from_env(environ: dict[str, str] | None = None) -> SeedSet:
    env = dict(os.environ if environ is None else environ)
    given = env.get("FAULT_SEED", "").strip()
    if given:
        return SeedSet([int(s) for s in given.replace(" ", ",").split(",") if s], None)
    count = int(env.get("FAULT_SCHEDULES", "").strip() or DEFAULT_SCHEDULES)
    master_text = env.get("FAULT_MASTER_SEED", "").strip()
    master = int(master_text) if master_text else random.SystemRandom().randrange(2**31)
    rng = random.Random(master)
    return SeedSet([rng.randrange(2**31) for _ in range(count)], master)


@dataclass(frozen=True)
class ScheduleReport:
    seed: int
    steps: list[str]  # each step and what happened
    counts: dict[str, int]  # per kind in KINDS
    notes: list[str]  # the findings, by step
    seconds: float

    @property
    def failed(self) -> bool:
        return any(self.counts.values())

    def describe(self) -> str:
        head = f"FAILED seed {self.seed} (replay: FAULT_SEED={self.seed} make fault-suite): " + ", ".join(
            f"{self.counts[k]} {k}" for k in KINDS
        )
        return "\n".join([head, *(f"  {s}" for s in self.steps), *(f"  ! {n}" for n in self.notes)])


def summary_line(reports: list[ScheduleReport]) -> str:
    totals = {k: sum(r.counts[k] for r in reports) for k in KINDS}
    return f"fault-suite: {len(reports)} schedules, " + ", ".join(f"{totals[k]} {k}" for k in KINDS)


def save(path: Path, reports: list[ScheduleReport], master: int | None) -> None:
    path.write_text(json.dumps({"master": master, "schedules": [asdict(r) for r in reports]}, indent=1))


def load(path: Path) -> tuple[list[ScheduleReport], int | None]:
    text = path.read_text() if path.exists() else ""
    if not text.strip():  # no schedule ended
        return [], None
    data = json.loads(text)
    return [ScheduleReport(**r) for r in data["schedules"]], data["master"]


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    reports, master = load(path)
    for r in reports:
        if r.failed:
            print(r.describe())
    if reports:
        seconds = sum(r.seconds for r in reports)
        origin = f"master seed {master} (FAULT_MASTER_SEED={master})" if master is not None else "seeds as given"
        print(f"{origin}; {seconds:.0f} s in schedules, {seconds / len(reports):.1f} s per schedule")
    print(summary_line(reports))
    return 1 if not reports or any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
