"""An OffloadBackfill's decisions (iceberg_offload.operator.backfill): refusals, the lease,
the launch, following its SparkApplication, and what it writes (status, manifest).

Every case is an observation built the way the controller reads the API (backfill_observe).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core import repair
from iceberg_offload.core.tables import SpecError
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.job import cli as offload_job
from iceberg_offload.operator.backfill import (
    AppState,
    Decision,
    Observed,
    Progress,
    RetentionRead,
    backfill_run_name,
    decide,
    parse_backfill_spec,
    range_refusal,
)
from iceberg_offload.operator.backfill_manifest import backfill_application
from iceberg_offload.operator.backfill_observe import app_state, observe_backfill
from iceberg_offload.operator.backfill_status import BackfillStatus, Phase, backfill_status_patch
from iceberg_offload.operator.manifests import Defaults
from iceberg_offload.operator.spec import parse_spec
from test_status import undeclared

PROPERTY = settings(max_examples=200, deadline=None)
NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
WATERMARK = "2024-03-10T11:00:00.000000Z"
UID = "7a1b2c3d-0000-4000-8000-00000000beef"
RUN = backfill_run_name("fix-march", UID)
TABLE_SPEC: dict[str, Any] = {
    "layer": "bronze",
    "source": {
        "table": "bronze_trades_binance",
        "timestampColumn": "exchange_timestamp",
        "connection": {"host": "clickhouse", "passwordSecretRef": {"name": "ch", "key": "password"}},
    },
    "target": {"catalogRef": {"name": "iceberg-catalog"}, "table": "bronze_trades_binance"},
    "dependsOn": ["upstream-table"],
}
SEVEN_DAYS = RetentionRead(ttl=timedelta(days=7))
CRD = Path(__file__).resolve().parents[2] / "crds" / "offloadbackfills.offload.k2.io.yaml"
STATUS_SCHEMA: dict[str, Any] = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
    "properties"
]["status"]


def backfill_body(
    frm: str = "2024-03-09T00:00:00Z", to: str = "2024-03-10T00:00:00Z", *, status: Any = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "fix-march", "namespace": "trading", "uid": UID, "generation": 1},
        "spec": {"table": "bronze-trades-binance", "from": frm, "to": to, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def table_body(watermark: str | None = WATERMARK) -> dict[str, Any]:
    status = {"watermark": {"timestamp": watermark}} if watermark else {}
    return {"metadata": {"name": "bronze-trades-binance"}, "spec": TABLE_SPEC, "status": status}


def app(name: str, state: str = "RUNNING", *, backfill: bool = False, generation: int = 1) -> dict[str, Any]:
    labels = {"offload.k2.io/table": "bronze-trades-binance", "offload.k2.io/generation": str(generation)}
    if backfill:
        labels["offload.k2.io/backfill-of"] = "bronze-trades-binance"
    status: dict[str, Any] = {"applicationState": {"state": state}}
    if state == "FAILED":
        status["applicationState"]["errorMessage"] = "driver exited with code 1"
    if state in ("COMPLETED", "FAILED"):
        status["terminationTime"] = "2024-03-10T12:05:00Z"
    return {"metadata": {"name": name, "labels": labels}, "status": status}


def observed(
    body: dict[str, Any] | None = None,
    *,
    table: dict[str, Any] | str | None = "default",
    apps: tuple[dict[str, Any], ...] = (),
    retention: RetentionRead | None = SEVEN_DAYS,
    progress: Progress | None = None,
    now: datetime = NOW,
    table_error: str | None = None,
) -> Observed:
    found = table_body() if table == "default" else table
    assert not isinstance(found, str)
    spec = parse_spec("bronze-trades-binance", found["spec"]) if found is not None and table_error is None else None
    return observe_backfill(
        body or backfill_body(),
        now,
        table=found,
        table_spec=spec,
        table_error=table_error,
        apps=apps,
        retention=retention,
        progress=progress,
    )


def reason(decision: Decision) -> str | None:
    complete = decision.status.condition("Complete")
    return complete.reason if complete else None


def events(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


# --- refused before anything runs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("observation", "why", "words"),
    [
        pytest.param(observed(table=None), "TableNotFound", "does not exist", id="unknown-table"),
        pytest.param(
            observed(backfill_body("2024-03-10T00:00:00Z", "2024-03-09T00:00:00Z")),
            "InvalidRange",
            "empty or inverted",
            id="inverted",
        ),
        pytest.param(
            observed(backfill_body("2024-03-09T00:00:00Z", "2024-03-09T00:00:00Z"), table=None),
            "InvalidRange",
            "empty or inverted",
            id="empty-range-refused-before-the-table-is-looked-up",
        ),
        pytest.param(
            observed(backfill_body(to="2024-03-10T11:00:00.000001Z")),
            "BeyondWatermark",
            "beyond the committed watermark",
            id="beyond-watermark",
        ),
        pytest.param(
            observed(table=table_body(watermark=None)), "BeyondWatermark", "no committed watermark", id="no-watermark"
        ),
        pytest.param(
            observed(backfill_body("2024-03-03T12:00:00Z")), "BeforeRetention", "allowDeletes", id="before-ttl"
        ),
        pytest.param(
            observed({**backfill_body(), "spec": {"table": "t", "from": "yesterday", "to": "2024-03-10T00:00:00Z"}}),
            "InvalidSpec",
            "spec.from",
            id="unparseable",
        ),
    ],
)
def test_refusals_fail_at_once_with_their_reason(observation: Observed, why: str, words: str) -> None:
    decision = decide(observation)
    assert decision.status.phase is Phase.FAILED and decision.create is None
    assert reason(decision) == why and words in (decision.status.message or "")
    failed = decision.status.condition("Failed")
    assert failed is not None and (failed.status, failed.reason) == ("True", why)
    assert events(decision) == ["Refused"] and decision.status.finished_at == NOW


def test_allow_deletes_lets_it_start_before_the_horizon() -> None:
    decision = decide(observed(backfill_body("2024-03-03T12:00:00Z", allowDeletes=True)))
    assert decision.status.phase is Phase.RUNNING and decision.create is not None
    assert decision.create.allow_deletes


def test_no_ttl_keeps_every_row() -> None:
    decision = decide(observed(backfill_body("2020-01-01T00:00:00Z"), retention=RetentionRead(ttl=None)))
    assert decision.create is not None


@given(
    lower=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 4, 1), timezones=st.just(UTC)),
    span=st.timedeltas(min_value=timedelta(hours=-5), max_value=timedelta(days=10)),
    mark=st.none()
    | st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 4, 1), timezones=st.just(UTC)),
    horizon=st.none()
    | st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 4, 1), timezones=st.just(UTC)),
    allow=st.booleans(),
)
@PROPERTY
def test_the_operator_refuses_exactly_what_the_job_refuses(
    lower: datetime, span: timedelta, mark: datetime | None, horizon: datetime | None, allow: bool
) -> None:
    watermark = Watermark(mark) if mark else None
    refusal = range_refusal(lower, lower + span, watermark, horizon, allow)
    try:
        repair.check_backfill(lower, lower + span, watermark, horizon, allow_deletes=allow)
    except repair.RepairError as exc:
        assert refusal is not None and refusal[1] == str(exc)
    else:
        assert refusal is None


# --- waiting, then the launch --------------------------------------------------------------------


def test_waits_while_the_tables_run_is_active_then_starts() -> None:
    first = decide(observed(apps=(app("bronze-trades-binance-202403101200-1"),)))
    assert first.status.phase is Phase.WAITING and reason(first) == "TableRunActive"
    assert first.create is None and events(first) == ["Waiting"]
    again = decide(
        observed(backfill_body(status=first.status.to_dict()), apps=(app("bronze-trades-binance-202403101200-1"),))
    )
    assert again.status == replace(first.status) and events(again) == []  # a repeated tick says nothing new
    done = (app("bronze-trades-binance-202403101200-1", "COMPLETED"),)
    started = decide(observed(backfill_body(status=again.status.to_dict()), apps=done))
    assert started.status.phase is Phase.RUNNING and started.create is not None
    assert events(started) == ["Started"]


def test_waits_for_another_backfill_of_the_table() -> None:
    decision = decide(observed(apps=(app("other-bf-00000000", backfill=True),)))
    assert decision.status.phase is Phase.WAITING and reason(decision) == "BackfillActive"


def test_the_ttl_is_read_only_when_about_to_start() -> None:
    assert decide(observed(retention=None)).needs_retention
    assert not decide(observed(retention=None, apps=(app("bronze-trades-binance-202403101200-1"),))).needs_retention
    assert not decide(observed(table=None, retention=None)).needs_retention


def test_an_unreadable_ttl_or_table_is_retried_not_guessed() -> None:
    decision = decide(observed(retention=RetentionRead(error="Secret trading/ch cannot be read: Forbidden")))
    assert decision.status.phase is Phase.PENDING and reason(decision) == "RetentionUnknown"
    assert decision.create is None and "retrying" in (decision.status.message or "")
    broken = decide(observed(table_error="ConfigMap iceberg-catalog cannot be read"))
    assert broken.status.phase is Phase.PENDING and reason(broken) == "TableNotReady"


def test_launch_plans_the_range_and_counts_its_buckets() -> None:
    decision = decide(observed(backfill_body(reason="late kraken rows")))
    plan = decision.create
    assert plan is not None and plan.name == RUN and plan.backfill == "fix-march"
    assert (plan.lower, plan.upper) == (datetime(2024, 3, 9, tzinfo=UTC), datetime(2024, 3, 10, tzinfo=UTC))
    status = decision.status
    assert (status.buckets_total, status.commits, status.rows_written) == (24, 0, 0)
    assert status.spark_application == RUN and status.started_at == NOW
    assert "late kraken rows" in decision.events[0].message


def test_a_backfill_replaces_the_buckets_its_tables_runs_audit() -> None:
    table = table_body()
    table["spec"] = {**table["spec"], "lateData": {"bucket": "15m"}}
    decision = decide(observed(table=table))
    plan = decision.create
    assert plan is not None and plan.bucket == timedelta(minutes=15)
    assert decision.status.buckets_total == 96


# --- following the run ---------------------------------------------------------------------------


def running() -> dict[str, Any]:
    return decide(observed()).status.to_dict()


@pytest.mark.parametrize(
    ("state", "progress", "phase", "why", "event"),
    [
        ("", None, Phase.RUNNING, "Running", []),
        ("RUNNING", Progress(2, 40), Phase.RUNNING, "Running", []),
        ("COMPLETED", Progress(3, 70), Phase.SUCCEEDED, "Succeeded", ["Succeeded"]),
        ("COMPLETED", None, Phase.RUNNING, "Running", []),  # not Succeeded before its commits are read
        ("FAILED", Progress(1, 5), Phase.FAILED, "RunFailed", ["Failed"]),
        ("FAILED", None, Phase.FAILED, "RunFailed", ["Failed"]),
    ],
)
def test_follows_its_run(state: str, progress: Progress | None, phase: Phase, why: str, event: list[str]) -> None:
    decision = decide(
        observed(backfill_body(status=running()), apps=(app(RUN, state, backfill=True),), progress=progress)
    )
    assert decision.status.phase is phase and reason(decision) == why and events(decision) == event
    assert decision.create is None
    if progress is not None:
        assert (decision.status.commits, decision.status.rows_written) == (progress.commits, progress.rows)
    if phase.terminal:
        assert decision.status.finished_at == datetime(2024, 3, 10, 12, 5, tzinfo=UTC)


def test_a_run_whose_table_was_deleted_meanwhile_is_still_followed_to_its_end() -> None:
    apps = (app(RUN, "RUNNING", backfill=True),)
    assert decide(observed(backfill_body(status=running()), table=None, apps=apps)).status.phase is Phase.RUNNING
    apps = (app(RUN, "COMPLETED", backfill=True),)
    assert decide(observed(backfill_body(status=running()), table=None, apps=apps)).status.phase is Phase.SUCCEEDED


def test_a_run_that_vanished_fails_the_backfill() -> None:
    decision = decide(observed(backfill_body(status=running())))
    assert decision.status.phase is Phase.FAILED and reason(decision) == "RunVanished"


def test_its_own_run_is_found_even_when_the_status_write_was_lost() -> None:
    decision = decide(observed(apps=(app(RUN, "RUNNING", backfill=True),), progress=Progress(0, 0)))
    assert decision.create is None and decision.status.phase is Phase.RUNNING
    assert decision.status.spark_application == RUN


def test_a_spec_change_after_the_start_is_ignored_and_said_so() -> None:
    body = {**backfill_body("2024-03-01T00:00:00Z", status=running()), "metadata": {**backfill_body()["metadata"]}}
    body["metadata"]["generation"] = 2
    decision = decide(observed(body, apps=(app(RUN, "RUNNING", backfill=True, generation=1),), progress=Progress(0, 0)))
    changed = decision.status.condition("SpecChanged")
    assert changed is not None and changed.reason == "SpecChangedAfterStart" and "ignored" in str(changed.message)
    assert decision.status.phase is Phase.RUNNING and decision.create is None


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_backfill_is_final(phase: str) -> None:
    status = {"phase": phase, "message": "done", "commits": 3}
    decision = decide(observed(backfill_body(status=status), apps=(app("bronze-trades-binance-1", "RUNNING"),)))
    assert decision.status.phase.value == phase and decision.create is None and decision.events == []


# --- properties ----------------------------------------------------------------------------------

APP_STATES = st.sampled_from(["", "SUBMITTED", "RUNNING", "COMPLETED", "FAILED", "SUBMISSION_FAILED"])
WORLDS = st.fixed_dictionaries(
    {
        "table": st.sampled_from(["default", None]),
        "frm": st.sampled_from(["2024-03-01T00:00:00Z", "2024-03-09T00:00:00Z", "2024-03-10T10:30:00Z"]),
        "to": st.sampled_from(["2024-03-09T00:00:00Z", "2024-03-10T11:00:00Z", "2024-03-11T00:00:00Z"]),
        "table_run": st.none() | APP_STATES,
        "other_backfill": st.none() | APP_STATES,
        "own": st.none() | APP_STATES,
        "progress": st.none() | st.builds(Progress, st.integers(0, 50), st.integers(0, 10**6)),
    }
)


def world(w: dict[str, Any], status: dict[str, Any] | None) -> Observed:
    apps = []
    if w["table_run"] is not None:
        apps.append(app("bronze-trades-binance-202403101200-1", w["table_run"]))
    if w["other_backfill"] is not None:
        apps.append(app("other-bf-00000000", w["other_backfill"], backfill=True))
    own = w["own"] is not None and status is not None and bool(status.get("sparkApplication"))
    if own:
        apps.append(app(RUN, w["own"], backfill=True))
    body = backfill_body(w["frm"], w["to"], status=status)
    # The controller reads the progress of its own run only.
    return observed(body, table=w["table"], apps=tuple(apps), progress=w["progress"] if own else None)


@given(worlds=st.lists(WORLDS, min_size=1, max_size=6))
@PROPERTY
def test_never_starts_beside_another_run_and_phases_only_move_forward(worlds: list[dict[str, Any]]) -> None:
    status: dict[str, Any] | None = None
    created = 0
    for w in worlds:
        before = BackfillStatus.from_dict(status)
        obs = world(w, status)
        decision = decide(obs)
        after = decision.status
        if decision.create is not None:
            created += 1
            assert all(a.finished for a in obs.apps), "started beside a run in flight"
            obs = replace(obs, apps=(*obs.apps, AppState(RUN, generation=1)))  # what the next read finds
        if before.phase.terminal:
            assert after.phase is before.phase and decision.create is None
        if before.phase is Phase.RUNNING:
            assert after.phase in (Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED)
        assert not undeclared(after.to_dict(), STATUS_SCHEMA)
        # Level-based: the world as the decision left it gives the same status and posts nothing new.
        again = decide(replace(obs, status=BackfillStatus.from_dict(after.to_dict())))
        assert again.status == after and again.events == [] and again.create is None
        status = after.to_dict()
    assert created <= 1


# --- names, spec, status, manifest ---------------------------------------------------------------


@given(name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,250}[a-z0-9])?", fullmatch=True), uid=st.uuids())
@PROPERTY
def test_run_names_fit_and_differ_per_object(name: str, uid: Any) -> None:
    run = backfill_run_name(name, str(uid))
    assert len(run) <= 58 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", run), run
    assert run != backfill_run_name(name, "0" * 8 + str(uid)[8:]) or str(uid).startswith("00000000")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"from": "2024-03-09T00:00:00Z", "to": "2024-03-10T00:00:00Z"}, "spec.table"),
        ({"table": "t", "to": "2024-03-10T00:00:00Z"}, "spec.from"),
        (
            {"table": "t", "from": "2024-03-09T00:00:00Z", "to": "2024-03-10T00:00:00Z", "allowDeletes": "yes"},
            "allowDeletes",
        ),
    ],
)
def test_spec_errors_name_the_field(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        parse_backfill_spec(spec)


def test_status_round_trips_and_the_patch_clears_what_is_gone() -> None:
    decision = decide(observed())
    written = decision.status.to_dict()
    assert BackfillStatus.from_dict(written) == decision.status and not undeclared(written, STATUS_SCHEMA)
    patch = backfill_status_patch({**written, "stale": 1}, BackfillStatus(Phase.PENDING))
    assert patch["stale"] is None and patch["sparkApplication"] is None and patch["phase"] == "Pending"


def test_app_state_reads_labels_and_status() -> None:
    got = app_state(app(RUN, "FAILED", backfill=True, generation=3))
    assert got == AppState(
        RUN, "FAILED", "bronze-trades-binance", 3, datetime(2024, 3, 10, 12, 5, tzinfo=UTC), "driver exited with code 1"
    )


def test_manifest_is_the_tables_run_in_backfill_mode_owned_by_the_backfill() -> None:
    plan = decide(observed(backfill_body(allowDeletes=True, reason="late rows"))).create
    assert plan is not None
    table = parse_spec("bronze-trades-binance", TABLE_SPEC)
    defaults = Defaults("img", "spark", "local:///offload.py")
    manifest = backfill_application(
        namespace="trading",
        owner={"name": "fix-march", "uid": UID},
        table=table,
        plan=plan,
        catalog="lake",
        defaults=defaults,
    )
    meta = manifest["metadata"]
    assert meta["name"] == RUN and meta["namespace"] == "trading"
    assert meta["labels"]["offload.k2.io/table"] == "bronze-trades-binance"
    assert meta["labels"]["offload.k2.io/backfill-of"] == "bronze-trades-binance"
    assert meta["labels"]["offload.k2.io/backfill"] == "fix-march"
    assert meta["annotations"]["offload.k2.io/backfill-reason"] == "late rows"
    assert meta["ownerReferences"][0]["kind"] == "OffloadBackfill" and meta["ownerReferences"][0]["uid"] == UID
    for pod in ("driver", "executor"):
        assert manifest["spec"][pod]["labels"] == meta["labels"]
    args = manifest["spec"]["arguments"]
    assert "--upstream" not in args  # a backfill reads no upstream watermark
    request = offload_job.request_from_args(offload_job.parser().parse_args(args))
    assert request.backfill is not None and request.backfill.name == RUN and request.backfill.allow_deletes
    assert (request.backfill.lower, request.backfill.upper) == (plan.lower, plan.upper)
    assert request.late_data is not None and request.late_data.bucket == timedelta(hours=1)
    assert request.spec.target.identifier == "lake.cold.bronze_trades_binance" and not request.mirror


def test_the_example_backfill_names_an_example_table_and_parses() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    (doc,) = yaml.safe_load_all((examples / "backfill-bronze-trades-binance.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("offload.k2.io/v1alpha1", "OffloadBackfill")
    spec = parse_backfill_spec(doc["spec"])
    tables = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in examples.glob("[1-9]*.yaml")}
    assert spec.table in tables and spec.lower < spec.upper and spec.reason
