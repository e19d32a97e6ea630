"""Table maintenance in the operator (operator/maintenance.py and its part in decide.py): due at
its slots (missed ones collapse), on a maintain-now value once, never beside a run or backfill of
the table, holding the table's runs back while in flight, recorded from its MaintenanceRecord."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from decide_kit import CREATED, NAME, PROPERTY, SLOT1, at, make_spec, observe, running_status, srun
from hypothesis import given
from hypothesis import strategies as st
from iceberg_offload.core.maintenance import MaintenanceRecord
from iceberg_offload.operator.decide import Decision, decide
from iceberg_offload.operator.maintenance import MaintenanceStep, MaintenanceView, maintain, one_line
from iceberg_offload.operator.maintenance_status import MaintenanceOutcome, StatusMaintenance
from iceberg_offload.operator.runs import ObservedRun, maintenance_name, manual_slot_id, schedule_slot_id

EVERY_HOUR = make_spec(maintenance={"schedule": "0 * * * *"})  # the runs' schedule: */15
M13 = at(13, 0)
M13_NAME = maintenance_name(NAME, schedule_slot_id(M13))


def mapp(name: str = M13_NAME, *, state: str = "RUNNING", created: datetime | None = None, **more: Any) -> ObservedRun:
    """A maintenance SparkApplication as observe reads it."""
    made = created or M13 + timedelta(seconds=1)
    return ObservedRun(name, name.rsplit("-", 1)[-1], 1, 1, made, made, state, **more)


SEEN = {"nextRun": "2024-03-01T13:00:00Z"}  # status.maintenance as this operator writes it from the first tick


def status(**m: Any) -> dict[str, Any]:
    """An OffloadTable status whose slot 13:00 of the runs is handled (so no run is due then)."""
    return {"observedGeneration": 1, "lastScheduleTime": "2024-03-01T13:00:00Z", "maintenance": {**SEEN, **m}}


def step(
    now: datetime, *, busy: bool = False, spec: Any = EVERY_HOUR, view: MaintenanceView | None = None, **m: Any
) -> MaintenanceStep:
    before = StatusMaintenance.from_dict(m) if m else None
    return maintain(
        view or MaintenanceView(), spec, before, table=NAME, generation=1, created=CREATED, now=now, busy=busy
    )


# --- when it is due ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "handled", "due"),
    [
        pytest.param(at(12, 59), None, None, id="before-the-first-slot-after-creation"),
        pytest.param(at(13, 0), None, "202403011300", id="at-the-slot"),
        pytest.param(at(13, 30), "2024-03-01T13:00:00Z", None, id="slot-handled"),
        pytest.param(at(16, 5), "2024-03-01T13:00:00Z", "202403011600", id="missed-slots-collapse-into-the-newest"),
    ],
)
def test_due_at_its_slots_one_per_slot(now: datetime, handled: str | None, due: str | None) -> None:
    before: dict[str, Any] = {"lastScheduleTime": handled, "lastRun": "x", "outcome": "Succeeded"} if handled else {}
    got = step(now, **before)
    assert (got.create.slot if got.create else None) == due
    if due:
        assert got.create is not None and got.create.name == maintenance_name(NAME, due)
        assert got.status is not None and got.status.outcome is MaintenanceOutcome.RUNNING
        assert got.status.last_schedule_time is not None and schedule_slot_id(got.status.last_schedule_time) == due
    assert got.status is not None and got.status.next_run == now.replace(minute=0) + timedelta(hours=1)


@pytest.mark.parametrize(
    ("spec", "trigger", "starts"),
    [
        pytest.param(make_spec(suspend=True, maintenance={"schedule": "0 * * * *"}), None, False, id="suspended"),
        pytest.param(make_spec(suspend=True), "now-1", False, id="suspended-trigger"),
        pytest.param(make_spec(maintenance={"enabled": False, "schedule": "0 * * * *"}), None, False, id="disabled"),
        pytest.param(make_spec(maintenance={"enabled": False}), "now-1", True, id="disabled-but-asked"),
        pytest.param(make_spec(), "now-1", True, id="maintain-now"),
    ],
)
def test_suspended_runs_none_disabled_only_when_asked(spec: Any, trigger: str | None, starts: bool) -> None:
    got = step(at(13, 5), spec=spec, view=MaintenanceView(trigger=trigger))
    assert (got.create is not None) is starts
    if starts:
        assert got.create is not None and got.create.slot == manual_slot_id("now-1")
        assert got.status is not None and got.status.last_trigger == "now-1"
    if spec.suspend or not spec.maintenance.enabled:
        assert got.status is not None and got.status.next_run is None


def test_a_maintain_now_value_starts_one_run_once() -> None:
    view = MaintenanceView(trigger="now-1")
    first = step(at(12, 30), view=view)
    assert first.create is not None and first.status is not None
    again = maintain(
        replace(view, apps=(mapp(first.create.name, state="COMPLETED", created=at(12, 30)),)),
        EVERY_HOUR,
        first.status,
        table=NAME,
        generation=1,
        created=CREATED,
        now=at(12, 40),
        busy=False,
    )
    assert again.create is None


def test_waits_while_busy_and_starts_once_free() -> None:
    waiting = step(at(13, 1), busy=True)
    assert waiting.create is None and waiting.events == []
    assert waiting.status is not None and waiting.status.last_schedule_time is None  # still due
    free = step(at(13, 2))
    assert free.create is not None and free.create.name == M13_NAME


def test_a_restart_after_creating_it_follows_it() -> None:
    # Created, but the status write was lost: the next tick finds it and creates nothing.
    got = step(at(13, 1), view=MaintenanceView(apps=(mapp(),)))
    assert got.create is None and got.status is not None
    assert got.status.last_run == M13_NAME and got.status.outcome is MaintenanceOutcome.RUNNING


# --- following and recording ---------------------------------------------------------------

RECORD = MaintenanceRecord(
    M13_NAME, "2024-03-01T13:04:00Z", None, 9, 2, 7, 40, 4, 36, 4, 10_000, 3, 5, 20
)  # fmt: skip
RUNNING: dict[str, Any] = {
    "lastRun": M13_NAME,
    "outcome": "Running",
    "lastStartTime": "2024-03-01T13:00:00Z",
    "lastScheduleTime": "2024-03-01T13:00:00Z",
}


def test_a_finished_run_is_recorded_with_its_record() -> None:
    done = mapp(state="COMPLETED", terminated=at(13, 4))
    waiting = step(at(13, 5), view=MaintenanceView(apps=(done,)), **RUNNING)
    assert waiting.finished == [] and waiting.status is not None
    assert waiting.status.outcome is MaintenanceOutcome.RUNNING  # until the record is read back
    got = step(at(13, 5), view=MaintenanceView(apps=(done,), record_read=True, record=RECORD), **RUNNING)
    m = got.status
    assert m is not None and m.outcome is MaintenanceOutcome.SUCCEEDED and m.last_finish_time == at(13, 4)
    assert (m.snapshots_expired, m.data_files_rewritten, m.data_files_added, m.bytes_rewritten) == (7, 36, 4, 10_000)
    assert (m.orphans_removed, m.snapshots_after, m.data_files_after) == (5, 2, 4)
    assert [(e.type, e.reason) for e in got.events] == [("Normal", "MaintenanceSucceeded")]
    assert "7 snapshots expired" in got.events[0].message
    assert [d.outcome for d in got.finished] == [MaintenanceOutcome.SUCCEEDED]


def test_another_runs_record_gives_no_figures() -> None:
    done = mapp(state="COMPLETED", terminated=at(13, 4))
    other = replace(RECORD, run_id="someone-else")
    got = step(at(13, 5), view=MaintenanceView(apps=(done,), record_read=True, record=other), **RUNNING)
    assert got.status is not None and got.status.outcome is MaintenanceOutcome.SUCCEEDED
    assert got.status.snapshots_after is None and "no maintenance record" in got.events[0].message


def test_a_failed_run_is_recorded_with_its_error_in_one_line() -> None:
    done = mapp(state="FAILED", terminated=at(13, 4), error="\noffload: error: table is locked\ntraceback")
    got = step(at(13, 5), view=MaintenanceView(apps=(done,)), **RUNNING, snapshotsAfter=3)
    m = got.status
    assert m is not None and m.outcome is MaintenanceOutcome.FAILED and m.error == "offload: error: table is locked"
    assert m.snapshots_after is None
    assert [(e.type, e.reason) for e in got.events] == [("Warning", "MaintenanceFailed")]
    # recorded once: the next tick posts nothing
    again = maintain(
        MaintenanceView(apps=(done,)),
        EVERY_HOUR,
        m,
        table=NAME,
        generation=1,
        created=CREATED,
        now=at(13, 6),
        busy=False,
    )
    assert again.events == [] and again.finished == []


def test_vanished_and_past_the_deadline_are_failures() -> None:
    gone = step(at(13, 5), **RUNNING)
    assert gone.status is not None and gone.status.outcome is MaintenanceOutcome.FAILED
    assert "deleted before it finished" in str(gone.status.error)
    late = step(
        at(14, 30), view=MaintenanceView(apps=(mapp(),)), **{**RUNNING, "lastScheduleTime": "2024-03-01T14:00:00Z"}
    )
    assert late.delete == [M13_NAME] and late.status is not None
    assert late.status.outcome is MaintenanceOutcome.FAILED and "did not finish within 3600s" in str(late.status.error)


def test_history_limits_keep_the_newest_recorded_runs() -> None:
    apps = tuple(
        mapp(maintenance_name(NAME, f"20240301{h:02}00"), state="COMPLETED", created=at(h, 0), terminated=at(h, 1))
        for h in range(1, 7)
    )
    recorded: dict[str, Any] = {
        "lastRun": apps[-1].name,
        "outcome": "Succeeded",
        "lastStartTime": "2024-03-01T06:00:00Z",
    }
    got = step(at(6, 30), view=MaintenanceView(apps=apps), **recorded, lastScheduleTime="2024-03-01T06:00:00Z")
    assert sorted(got.delete) == sorted(a.name for a in apps[:3])


@PROPERTY
@given(
    ticks=st.lists(st.integers(min_value=1, max_value=240), min_size=1, max_size=12),
    busy=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_at_most_one_run_per_slot_and_none_while_one_is_in_flight(ticks: list[int], busy: list[bool]) -> None:
    """Whatever the ticks and the lease: never two runs at once, never two for one slot, and
    each run is named after its slot."""
    now, state = CREATED, None
    apps: list[ObservedRun] = []
    slots: list[str] = []
    for minutes, held in zip(ticks, busy, strict=False):
        now += timedelta(minutes=minutes)
        apps = [replace(a, state="COMPLETED", terminated=now) for a in apps]  # each ends by the next tick
        view = MaintenanceView(apps=tuple(apps), record_read=True)
        got = maintain(view, EVERY_HOUR, state, table=NAME, generation=1, created=CREATED, now=now, busy=held)
        state = got.status
        if got.create is not None:
            assert not held and got.create.name == maintenance_name(NAME, got.create.slot)
            assert got.create.slot not in slots
            slots.append(got.create.slot)
            apps.append(mapp(got.create.name, created=now))
        assert state is not None and state.next_run is not None and state.next_run > now
    assert slots == sorted(slots)


# --- the lease in decide ---------------------------------------------------------------------


def _running_message(decision: Decision) -> str:
    return str(next(c for c in decision.status.conditions if c.type == "Running").message)


def test_the_tables_run_waits_while_maintenance_is_in_flight() -> None:
    view = MaintenanceView(apps=(mapp(created=at(12, 14)),))
    waiting = decide(observe(SLOT1, spec=EVERY_HOUR, maintenance=view, maintenance_active=view.active))
    assert waiting.create is None and f"waits for maintenance {M13_NAME}" in _running_message(waiting)
    assert waiting.status.last_schedule_time is None  # the slot is still due
    later = decide(observe(SLOT1 + timedelta(minutes=1), spec=EVERY_HOUR, status=waiting.status.to_dict()))
    assert later.create is not None


def test_maintenance_waits_for_the_tables_run_and_for_backfills() -> None:
    run = srun(at(13, 0))
    during_run = decide(observe(at(13, 2), spec=EVERY_HOUR, runs=(run,), status=running_status(run, at(13, 0))))
    assert during_run.maintenance is not None and during_run.maintenance.create is None
    during_backfill = decide(observe(at(13, 2), spec=EVERY_HOUR, status=status(), backfills_active=("x-bf-1",)))
    assert during_backfill.maintenance is not None and during_backfill.maintenance.create is None
    # a run and maintenance due at once: the run goes first
    both = decide(observe(at(13, 0), spec=EVERY_HOUR))
    assert both.create is not None and both.maintenance is not None and both.maintenance.create is None
    free = decide(observe(at(13, 2), spec=EVERY_HOUR, status=status()))
    assert free.create is None and free.maintenance is not None and free.maintenance.create is not None
    assert "MaintenanceStarted" in [e.reason for e in free.events]
    assert free.status.maintenance is not None and free.status.maintenance.last_run == M13_NAME


def test_an_invalid_spec_still_follows_maintenance_and_starts_none() -> None:
    done = mapp(state="FAILED", terminated=at(13, 4), error="boom")
    got = decide(observe(at(13, 5), spec=None, status=status(**RUNNING), maintenance=MaintenanceView(apps=(done,))))
    assert got.status.maintenance is not None and got.status.maintenance.outcome is MaintenanceOutcome.FAILED
    assert "MaintenanceFailed" in [e.reason for e in got.events]


def test_after_an_upgrade_the_first_maintenance_is_at_the_next_slot_not_at_once() -> None:
    """A table reconciled before by an operator without maintenance has a status, but no
    status.maintenance: its missed slots are not caught up (that would be every table at once)."""
    old = {"observedGeneration": 1, "lastScheduleTime": "2024-03-01T13:00:00Z"}
    upgraded = decide(observe(at(13, 2), spec=EVERY_HOUR, status=old))
    assert upgraded.maintenance is not None and upgraded.maintenance.create is None
    m = upgraded.status.maintenance
    assert m is not None and m.last_schedule_time == M13 and m.next_run == at(14, 0)
    later = {**upgraded.status.to_dict(), "lastScheduleTime": "2024-03-01T14:00:00Z"}  # the runs' slot handled
    at_the_slot = decide(observe(at(14, 0), spec=EVERY_HOUR, status=later))
    assert at_the_slot.maintenance is not None and at_the_slot.maintenance.create is not None
    fresh = {"lastScheduleTime": "2024-03-01T13:00:00Z"}  # never reconciled (no observedGeneration); created 12:07
    new_table = decide(observe(at(13, 2), spec=EVERY_HOUR, status=fresh))
    assert new_table.maintenance is not None and new_table.maintenance.create is not None


def test_one_line() -> None:
    assert one_line("") == ""
    assert one_line("  \n a \n b") == "a"
    assert len(one_line("x" * 900)) == 500
