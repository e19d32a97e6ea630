"""Exactly once under faults: randomized schedules of inserts, runs, overlapping runs, deaths at
every phase (in process and as a killed job process), retries, resets and table maintenance
(the operator's, or a user's own compaction and expiry), on the real engines,
with an independent oracle (oracle.py) after every step.

One test per schedule, its seed in its id (``FAULT_SEED=<seed>`` replays it; ``FAULT_SCHEDULES``
and ``FAULT_MASTER_SEED`` choose a set: report.py). Each schedule's report goes to
``FAULT_REPORT`` (JSON, if set) as it ends; the last schedule sums them up in one line.
``make fault-suite SCHEDULES=N`` runs N schedules and ends with that line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from oracle import Oracle
from report import KINDS, ScheduleReport, save, seeds_from_env, summary_line
from runner import FaultRunner, oracle_of
from schedules import TABLES, Insert, Schedule, schedule

SEEDS = seeds_from_env()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fault_seed" in metafunc.fixturenames:
        metafunc.parametrize("fault_seed", SEEDS.seeds, ids=[f"seed{s}" for s in SEEDS.seeds])


@pytest.fixture(scope="module")
def fault_reports(request: pytest.FixtureRequest) -> Iterator[list[ScheduleReport]]:
    """The reports of the schedules run; at the end, the one line that sums them up."""
    reports: list[ScheduleReport] = []
    yield reports
    plugins = request.config.pluginmanager
    terminal, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if terminal is None or capture is None or not reports:
        return
    with capture.global_and_fixture_disabled():  # past the output capture, as a summary
        if SEEDS.master is not None:
            terminal.write_line(f"\nfault suite: master seed {SEEDS.master} (FAULT_MASTER_SEED={SEEDS.master})")
        terminal.write_line("\n" + summary_line(reports))


def play(plan: Schedule, runner: FaultRunner, oracle: Oracle, setup: float) -> list[str]:
    """Each step, then the oracle; after late rows, a repairing cycle and the oracle's final check
    (late rows included): what happened, step by step."""
    oracle.check(0)
    done = [f"0. fresh tables ({setup:.1f} s)"]
    for number, step in enumerate(plan.steps, 1):
        began = time.monotonic()
        outcome, resets = runner.step(number, step)
        ran = time.monotonic()
        oracle.check(number, resets)
        took = f"{ran - began:.1f} s + {time.monotonic() - ran:.1f} s check"
        done.append(f"{number}. {step.describe()} -> {outcome} ({took})")
    if not any(isinstance(step, Insert) and step.late for step in plan.steps):
        return done  # without late rows the last step's check was the final one
    closing = len(plan.steps) + 1
    outcome = runner.close(closing, plan.steps)
    oracle.check(closing, final=True)
    done.append(f"{closing}. closing cycle, repairing -> {outcome}")
    return done


def test_schedule_keeps_exactly_once(
    fault_seed: int, make_env: Any, base: datetime, fault_reports: list[ScheduleReport]
) -> None:
    plan = schedule(fault_seed)
    started = time.monotonic()
    env = make_env(f"fault_{fault_seed}", tables=TABLES)
    oracle = oracle_of(env)
    setup = time.monotonic() - started
    done = play(plan, FaultRunner(env, base, oracle, label=f"fault{fault_seed}"), oracle, setup)
    found = oracle.findings
    report = ScheduleReport(
        seed=fault_seed,
        steps=done,
        counts=dict(zip(KINDS, found.counts(), strict=True)),
        notes=found.notes + found.regressions,
        seconds=round(time.monotonic() - started, 1),
    )
    fault_reports.append(report)
    if target := os.environ.get("FAULT_REPORT", "").strip():
        save(Path(target), fault_reports, SEEDS.master)
    assert not report.failed, report.describe()
