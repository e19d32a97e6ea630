"""Fault schedules drawn from a seed: a pure generator, no engine and no clock.

A schedule is a short list of steps on one fresh set of tables (both bronze tables and silver):
inserts into bronze (silver follows by ClickHouse's materialized views), late inserts behind the
windows already read, runs at explicit clocks (many auditing and repairing late data first, as
the operator's runs do), overlapping runs of one table in an interleaving the scheduler decides,
runs that die at a phase (in process, or a real job process at a failpoint), operator-style
retries, resets, and table maintenance (the operator's, or a user's own by hand).

Times are milliseconds after the schedule's base instant (ClickHouse keeps milliseconds). Every
insert but a late one is at or after the *frontier*, the newest upper bound a run already started
has used (``max(now - buffer)``, or its ``--to`` where that is earlier); a late insert is before it.
The same seed always gives the same schedule: ``schedule(seed)`` draws from ``random.Random(seed)``
only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

MINUTE = 60_000
BUFFER_MS = 5 * MINUTE  # the runbook tables' safety buffer
BRONZE = ("bronze_trades_binance", "bronze_trades_kraken")
SILVER = "silver_trades"
TABLES = (*BRONZE, SILVER)
EXCHANGES = ("binance", "kraken")
IN_PROCESS_DEATHS = ("planned", "repaired", "staged", "committed")
FAILPOINTS = ("planned", "repaired", "mid-read", "staged", "committed")
REPAIR_SHARE = 0.6  # of runs that audit and repair late data first
LATE_MAX_MS = 30 * MINUTE  # how far behind the frontier a late row may be
MAX_STEPS = 8  # a run and its retry, or an overlap and its retry, may end a schedule at 8
# Reset targets, resolved against the committed watermark when the step runs: at it, at a
# millisecond holding offloaded rows, or some milliseconds before it.
ResetKind = Literal["watermark", "row", "shift"]
RESET_KINDS: tuple[ResetKind, ...] = ("watermark", "row", "row", "shift")


@dataclass(frozen=True)
class Insert:
    """`count` rows at the one millisecond `at_ms` into each exchange's bronze table, in order;
    `late`: behind the frontier (rows a window already read past)."""

    exchanges: tuple[str, ...]
    at_ms: int
    count: int
    late: bool = False

    def describe(self) -> str:
        late = "late " if self.late else ""
        return f"insert {self.count} {late}row(s) at +{self.at_ms}ms into {'+'.join(self.exchanges)}"


@dataclass(frozen=True)
class Slot:
    """The clock of one run: `now` and, if asked, `--to` (requested_to)."""

    now_ms: int
    to_ms: int | None = None

    @property
    def bound_ms(self) -> int:
        """The upper bound the run uses (before any upstream cap)."""
        bound = self.now_ms - BUFFER_MS
        return bound if self.to_ms is None else min(bound, self.to_ms)

    def describe(self) -> str:
        return f"now=+{self.now_ms}ms" + ("" if self.to_ms is None else f" to=+{self.to_ms}ms")


@dataclass(frozen=True)
class Run:
    """One run in this process (`die_at`: the phase hook raises there), or, with `failpoint`, a
    real job process that dies at that failpoint. `retry`: the operator running a failed run again;
    `repair`: the run audits its lookback and repairs late data before its window."""

    table: str
    slot: Slot
    die_at: str | None = None
    failpoint: str | None = None
    retry: bool = False
    repair: bool = False

    def describe(self) -> str:
        how = f" in a job process dying at {self.failpoint}" if self.failpoint else ""
        death = f" dying at {self.die_at}" if self.die_at else ""
        repair = " repairing" if self.repair else ""
        return f"{'retry' if self.retry else 'run'}{repair} {self.table} {self.slot.describe()}{how}{death}"


@dataclass(frozen=True)
class Overlap:
    """Runs of one table at once, in threads. Each run stops at every phase; `order` lists which
    run moves next (to its next phase, or to its end): its first mention starts it."""

    table: str
    runs: tuple[Run, ...]
    order: tuple[int, ...]

    def describe(self) -> str:
        runs = "; ".join(f"{chr(65 + i)}: {r.describe()}" for i, r in enumerate(self.runs))
        return f"overlap {self.table} [{runs}] order {''.join(chr(65 + i) for i in self.order)}"


@dataclass(frozen=True)
class Reset:
    """`iceberg-offload reset` of a table to a position at or before its committed watermark
    (`dry`: without --yes, which must change nothing)."""

    table: str
    kind: ResetKind
    pick: int
    shift_ms: int
    dry: bool = False

    def describe(self) -> str:
        where = {"watermark": "its watermark", "row": f"offloaded row millisecond #{self.pick}"}
        target = where.get(self.kind, f"{self.shift_ms}ms before its watermark")
        return f"reset{' (dry run)' if self.dry else ''} {self.table} to {target}"


@dataclass(frozen=True)
class Maintain:
    """Table maintenance between runs: the operator's (compaction, manifest rewrite, expiry
    keeping one snapshot, orphan removal, with the watermark carried) or a user's own by hand
    (Spark's rewrite_data_files, then expire_snapshots keeping one snapshot)."""

    table: str
    by: Literal["operator", "user"]

    def describe(self) -> str:
        return f"maintenance of {self.table} by {'the operator' if self.by == 'operator' else 'hand'}"


Step = Insert | Run | Overlap | Reset | Maintain


@dataclass(frozen=True)
class Schedule:
    seed: int
    steps: tuple[Step, ...]
    kills: bool  # whether a step starts a real job process

    def describe(self) -> str:
        lines = [f"seed {self.seed} (replay: FAULT_SEED={self.seed} make fault-suite)"]
        lines += [f"  {i + 1}. {s.describe()}" for i, s in enumerate(self.steps)]
        return "\n".join(lines)


@dataclass
class _Draw:
    """The generator's state: the frontier, the clock, and the next run's slot (drawn ahead, so
    that rows can be put exactly at the bound of the window that will close on them)."""

    rng: random.Random
    frontier: int = 0
    now: int = 10 * MINUTE
    pending: Slot = Slot(10 * MINUTE)
    steps: list[Step] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # the tables runs have started on, in order

    def table(self) -> str:
        """A table to run: silver once both bronze tables have run (before, its runs only skip);
        often the last one run again (its new rows then sit at its watermark's millisecond)."""
        if self.ran and self.rng.random() < 0.4:
            table = self.ran[-1]
        else:
            table = self.rng.choice((*BRONZE, SILVER, SILVER) if set(self.ran) >= set(BRONZE) else BRONZE)
        self.ran.append(table)
        return table

    def take_slot(self) -> Slot:
        """The pending slot, used by the run about to start; the next one is drawn after it."""
        slot = self.pending
        self.frontier = max(self.frontier, slot.bound_ms)
        self.now += self.rng.choice((0, 1, 1, 2, 3)) * MINUTE + self.rng.choice((0, 0, self.rng.randrange(MINUTE)))
        to = None
        if self.rng.random() < 0.25:
            to = self.now - BUFFER_MS - self.rng.choice((0, self.rng.randrange(1, 2 * MINUTE)))
        self.pending = Slot(self.now, to)
        return slot

    def row_time(self) -> int:
        """A millisecond at or after the frontier: often exactly the last window's end (a row the
        next window must take) or the next one's (a row that run must leave for the one after)."""
        draw = self.rng.random()
        if draw < 0.4:
            return self.frontier
        if draw < 0.6 and self.pending.bound_ms >= self.frontier:
            return self.pending.bound_ms
        return self.frontier + self.rng.randrange(0, 3 * MINUTE)


def _exchanges(d: _Draw) -> tuple[str, ...]:
    return d.rng.choice((("binance",), ("kraken",), ("binance", "kraken"), ("kraken", "binance")))


def _insert(d: _Draw) -> Insert:
    return Insert(_exchanges(d), d.row_time(), d.rng.choice((1, 1, 2, 3, 5)))


def _late_insert(d: _Draw) -> Insert:
    """Rows behind the frontier: 1 ms, or up to LATE_MAX_MS (never before the base instant)."""
    behind = d.rng.choice((1, d.rng.randrange(1, LATE_MAX_MS)))
    return Insert(_exchanges(d), max(0, d.frontier - behind), d.rng.choice((1, 2, 3)), late=True)


def _repair(d: _Draw) -> bool:
    return d.rng.random() < REPAIR_SHARE


def _run(d: _Draw, kill: bool) -> list[Step]:
    """A run, perhaps dying; a failed run is often run again at the same clock, as the operator does."""
    slot = d.take_slot()
    repair = _repair(d)
    if kill:
        run = Run(d.rng.choice(BRONZE), slot, failpoint=d.rng.choice(FAILPOINTS), repair=repair)
        d.ran.append(run.table)
    elif d.rng.random() < 0.35:
        run = Run(d.table(), slot, die_at=d.rng.choice(IN_PROCESS_DEATHS), repair=repair)
    else:
        return [Run(d.table(), slot, repair=repair)]
    if d.rng.random() < 0.8:
        return [run, Run(run.table, slot, retry=True, repair=repair)]
    return [run]


def _cycle(d: _Draw) -> list[Step]:
    """A scheduler's cycle: every table at one clock, bronze first, as the operator runs them."""
    slot = d.take_slot()
    tables = (*d.rng.sample(BRONZE, 2), SILVER)
    d.ran.extend(tables)
    repair = _repair(d)
    return [Run(t, slot, repair=repair) for t in tables]


def _overlap(d: _Draw) -> list[Step]:
    """Two or three runs of one table at once; usually at one clock, sometimes at the next ones."""
    table = d.table()
    first = d.take_slot()
    slots = [first] + [first if d.rng.random() < 0.6 else d.take_slot() for _ in range(d.rng.choice((1, 1, 2)))]
    runs = tuple(
        Run(table, s, die_at=d.rng.choice(IN_PROCESS_DEATHS) if d.rng.random() < 0.15 else None, repair=_repair(d))
        for s in slots
    )
    # Four moves each: start (to "planned"), to "staged", to "committed", to the end.
    order = [i for i in range(len(runs)) for _ in range(4)]
    d.rng.shuffle(order)
    steps: list[Step] = [Overlap(table, runs, tuple(order))]
    if d.rng.random() < 0.7:
        steps.append(Run(table, max(slots, key=lambda s: s.now_ms), retry=True, repair=_repair(d)))
    return steps


def _reset(d: _Draw) -> Reset:
    return Reset(
        table=d.table(),
        kind=d.rng.choice(RESET_KINDS),
        pick=d.rng.randrange(1000),
        shift_ms=d.rng.choice((1, d.rng.randrange(1, 3 * MINUTE))),
        dry=d.rng.random() < 0.15,
    )


def _kind(d: _Draw, last: bool) -> str:
    """The next step's kind: no insert last (nothing would read it), fewer inserts in a row, no
    cycle (three runs) past 8 steps, and late rows only once a window has been read."""
    after_insert = isinstance(d.steps[-1], Insert)
    room = len(d.steps) + 3 <= MAX_STEPS
    late = 0 if last or d.frontier == 0 else 30
    weights = (0 if last else 15 if after_insert else 30, 30, 15 if room else 0, 15, 12 if d.ran else 0, late)
    kinds = ("insert", "run", "cycle", "overlap", "reset", "late", "maintain")
    return d.rng.choices(kinds, weights=(*weights, 5 if d.ran else 0))[0]


def schedule(seed: int, kill_share: float = 1 / 8) -> Schedule:
    """The schedule of a seed: 3 to 8 steps, the first an insert; a real job process (one kill)
    in about `kill_share` of schedules."""
    d = _Draw(random.Random(seed))
    length = d.rng.randint(3, MAX_STEPS - 1)
    kill_at = d.rng.randrange(1, length) if d.rng.random() < kill_share else None
    d.steps.append(Insert(EXCHANGES, d.row_time(), d.rng.choice((1, 3, 5))))
    while len(d.steps) < length:
        kill = kill_at is not None and len(d.steps) >= kill_at
        kind = "run" if kill else _kind(d, last=len(d.steps) == length - 1)
        if kind == "insert":
            d.steps.append(_insert(d))
        elif kind == "late":
            d.steps.append(_late_insert(d))
        elif kind == "reset":
            d.steps.append(_reset(d))
        elif kind == "maintain":
            d.steps.append(Maintain(d.table(), d.rng.choice(("operator", "user"))))
        elif kind == "overlap":
            d.steps.extend(_overlap(d))
        elif kind == "cycle":
            d.steps.extend(_cycle(d))
        else:
            d.steps.extend(_run(d, kill=kill))
            kill_at = None if kill else kill_at
    steps = tuple(d.steps)
    return Schedule(seed, steps, kills=any(isinstance(s, Run) and s.failpoint for s in steps))
