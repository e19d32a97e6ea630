"""Table maintenance from the spec to the SparkApplication and back: spec.maintenance parsed,
the maintenance app's manifest, observe keeping it out of the runs, the backfill's lease, the
metrics, and one reconcile that starts one and one that records it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from decide_kit import PROPERTY, at, make_spec, observe
from hypothesis import given
from hypothesis import strategies as st
from iceberg_offload.adapters import iceberg_io, maintenance_io
from iceberg_offload.core.maintenance import MaintenancePolicy, MaintenanceRecord
from iceberg_offload.core.result import OffloadResult
from iceberg_offload.core.tables import SpecError
from iceberg_offload.job import cli as job_cli
from iceberg_offload.operator.backfill import AppState
from iceberg_offload.operator.backfill import decide as decide_backfill
from iceberg_offload.operator.backfill_observe import app_state
from iceberg_offload.operator.decide import decide
from iceberg_offload.operator.maintenance import MaintenancePlan, MaintenanceView
from iceberg_offload.operator.maintenance_manifest import maintenance_application
from iceberg_offload.operator.manifests import Defaults, job_arguments, spark_application
from iceberg_offload.operator.metrics import OffloadMetrics
from iceberg_offload.operator.observe import Reading
from iceberg_offload.operator.observe import observe as observe_reading
from iceberg_offload.operator.runs import RunPlan
from iceberg_offload.operator.spec import parse_quantity
from test_backfill import backfill_body
from test_backfill import observed as backfill_observed
from test_maintenance import M13_NAME, RECORD, RUNNING, mapp
from test_observe import CATALOG, table
from test_reconciler import CATALOG_PASSWORD, FakeKube, Tick
from test_reconciler import table as reconciler_table

# --- spec.maintenance ----------------------------------------------------------------------


def test_defaults() -> None:
    m = make_spec().maintenance
    assert m.enabled and m.schedule == "17 3 * * *" and m.policy == MaintenancePolicy()


def test_a_full_maintenance_spec() -> None:
    m = make_spec(
        maintenance={
            "enabled": False,
            "schedule": "30 2 * * 0",
            "snapshotRetention": {"maxAge": "2d", "retainLast": 5},
            "targetFileSize": "256Mi",
            "orphanFileAge": "96h",
        }
    ).maintenance
    assert not m.enabled and m.schedule == "30 2 * * 0"
    assert m.policy == MaintenancePolicy(timedelta(days=2), 5, 256 * 2**20, timedelta(hours=96))


@pytest.mark.parametrize(
    ("maintenance", "message"),
    [
        ({"enabled": "yes"}, "spec.maintenance.enabled: expected true or false"),
        ({"schedule": "61 * * * *"}, "spec.maintenance.schedule: '61 * * * *' is not a 5-field cron"),
        ({"snapshotRetention": {"maxAge": "1w"}}, "spec.maintenance.snapshotRetention.maxAge: '1w' is not a duration"),
        (
            {"snapshotRetention": {"retainLast": 0}},
            "spec.maintenance.snapshotRetention.retainLast: snapshots to retain",
        ),
        (
            {"snapshotRetention": {"retainLast": "3"}},
            "spec.maintenance.snapshotRetention.retainLast: expected an integer",
        ),
        ({"targetFileSize": "1.5Gi"}, "spec.maintenance.targetFileSize: '1.5Gi' is not a number of bytes"),
        ({"targetFileSize": 4096}, "spec.maintenance.targetFileSize: target file size must be at least 1 MiB"),
        ({"orphanFileAge": "12h"}, "spec.maintenance.orphanFileAge: orphan file age must be at least 1 day, 0:00:00"),
    ],
)
def test_a_bad_value_names_its_field_in_one_line(maintenance: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        make_spec(maintenance=maintenance)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_schedule_is_checked_in_the_tables_time_zone() -> None:
    with pytest.raises(SpecError, match="timeZone"):
        make_spec(timeZone="Mars/Olympus")  # the table's own schedule check names it first
    assert make_spec(timeZone="Europe/Berlin", maintenance={"schedule": "0 4 * * *"}).maintenance.schedule


@pytest.mark.parametrize(
    ("value", "got"),
    [(134217728, 134217728), ("128Mi", 128 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("2k", 2000), ("7", 7)],
)
def test_quantities(value: Any, got: int) -> None:
    assert parse_quantity(value, "x") == got


@PROPERTY
@given(n=st.integers(0, 10**6), unit=st.sampled_from(["", "k", "M", "G", "Ki", "Mi", "Gi", "Ti"]))
def test_a_quantity_is_its_number_times_its_unit(n: int, unit: str) -> None:
    factor = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
    assert parse_quantity(f"{n}{unit}", "x") == n * factor


# --- the manifest ----------------------------------------------------------------------------

SPEC = make_spec(
    dependsOn=["bronze-trades"],
    source={
        "table": "trades",
        "timestampColumn": "ts",
        "connection": {"host": "clickhouse", "passwordSecretRef": {"name": "ch", "key": "password"}},
    },
    maintenance={"targetFileSize": "64Mi", "snapshotRetention": {"maxAge": "12h", "retainLast": 2}},
)
PLAN = MaintenancePlan("trades-mt-202403010317", "202403010317", 4, at(3, 17), SPEC.maintenance.policy)
DEFAULTS = Defaults("img:1", "spark", "local:///offload.py")
OWNER = {"name": "trades", "uid": "uid-1"}


def test_the_manifest_is_the_tables_run_in_maintenance_mode_owned_by_the_table() -> None:
    app = maintenance_application(namespace="ns", owner=OWNER, table=SPEC, plan=PLAN, catalog="lake", defaults=DEFAULTS)
    meta = app["metadata"]
    assert meta["name"] == PLAN.name
    assert meta["labels"]["offload.k2.io/maintenance-of"] == "trades"
    assert meta["labels"]["offload.k2.io/table"] == "trades"
    assert meta["ownerReferences"][0]["kind"] == "OffloadTable" and meta["ownerReferences"][0]["uid"] == "uid-1"
    run = RunPlan(PLAN.name, PLAN.slot, 1, 4, PLAN.started)
    table_args = job_arguments(replace(SPEC, depends_on=()), run, "lake", {})
    assert "--upstream" not in table_args
    at_to = table_args.index("--to")
    window_less = table_args[:at_to] + table_args[at_to + 2 :]  # a maintenance run has no window
    assert app["spec"]["arguments"] == [
        *window_less,
        "--maintain", PLAN.name,
        "--snapshot-max-age-seconds", "43200",
        "--retain-last", "2",
        "--target-file-size-bytes", str(64 * 2**20),
        "--orphan-age-seconds", str(72 * 3600),
    ]  # fmt: skip
    # The job takes these arguments as one maintenance run of the table.
    args = job_cli.parser().parse_args(app["spec"]["arguments"])
    request = job_cli.maintenance_request(args, job_cli.request_from_args(args).spec)
    assert request is not None and (request.run_id, request.policy) == (PLAN.name, PLAN.policy)
    plain = spark_application(
        namespace="ns", owner=OWNER, spec=SPEC, plan=run, catalog="lake",
        upstream_targets={"bronze-trades": "lake.raw.trades"}, defaults=DEFAULTS,
    )  # fmt: skip
    for key in ("image", "mainApplicationFile", "sparkConf", "sparkVersion"):
        assert app["spec"][key] == plain["spec"][key], key
    for pod in ("driver", "executor"):
        assert app["spec"][pod]["env"] == plain["spec"][pod]["env"]
        assert app["spec"][pod]["labels"] == meta["labels"]
    env = {e["name"]: e for e in app["spec"]["driver"]["env"]}
    assert env["ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "ch", "key": "password"}


# --- observe and the backfill's lease ------------------------------------------------------


def item(name: str, state: str, *, maintenance: bool) -> dict[str, Any]:
    labels = {"offload.k2.io/table": "trades", "offload.k2.io/slot": "202403011300"}
    if maintenance:
        labels["offload.k2.io/maintenance-of"] = "trades"
    meta = {"name": name, "creationTimestamp": "2024-03-01T13:00:01Z", "labels": labels}
    return {"metadata": meta, "status": {"applicationState": {"state": state}}}


def test_observe_keeps_maintenance_out_of_the_tables_runs() -> None:
    items = [item("trades-202403011300-1", "COMPLETED", maintenance=False), item("t-mt-1", "RUNNING", maintenance=True)]
    body = table(successfulRunHistoryLimit=0)
    body["metadata"]["annotations"] = {"offload.k2.io/maintain-now": "please"}
    observed = observe_reading(Reading(body=body, now=at(13, 5), runs=items, catalog=CATALOG))
    assert [r.name for r in observed.runs] == ["trades-202403011300-1"]
    assert observed.maintenance_active == ("t-mt-1",) and observed.maintenance.trigger == "please"
    decision = decide(observed)
    assert "t-mt-1" not in decision.delete  # neither a run to clean up nor one to record
    assert decision.status.last_run is not None and decision.status.last_run.name == "trades-202403011300-1"


def test_a_backfill_waits_for_the_tables_maintenance() -> None:
    assert app_state(item("t-mt-1", "RUNNING", maintenance=True)) == AppState(
        "t-mt-1", "RUNNING", maintenance_of="trades"
    )
    got = backfill_observed(backfill_body(), apps=(item("t-mt-1", "RUNNING", maintenance=True),))
    decision = decide_backfill(got)
    assert decision.create is None and decision.status.phase.value == "Waiting"
    complete = next(c for c in decision.status.conditions if c.type == "Complete")
    assert complete.reason == "MaintenanceActive" and "t-mt-1" in str(complete.message)


# --- metrics -------------------------------------------------------------------------------


def test_maintenance_runs_are_counted_and_the_table_gauges_follow_the_record() -> None:
    done = mapp(state="COMPLETED", terminated=at(13, 4))
    view = MaintenanceView(apps=(done,), record_read=True, record=RECORD)
    status = {"observedGeneration": 1, "lastScheduleTime": "2024-03-01T13:00:00Z", "maintenance": RUNNING}
    decision = decide(
        observe(at(13, 5), spec=make_spec(maintenance={"schedule": "0 * * * *"}), status=status, maintenance=view)
    )
    metrics = OffloadMetrics()
    metrics.observe("ns", "trades", decision)
    metrics.observe("ns", "trades", decide(observe(at(13, 6), status=decision.status.to_dict(), maintenance=view)))
    sample = metrics.registry.get_sample_value
    labels = {"namespace": "ns", "table": "trades"}
    assert sample("iceberg_offload_maintenance_runs_total", {**labels, "outcome": "Succeeded"}) == 1.0
    assert sample("iceberg_offload_table_snapshots", labels) == 2.0
    assert sample("iceberg_offload_table_data_files", labels) == 4.0
    assert M13_NAME in decision.events[0].message


# --- one reconcile ---------------------------------------------------------------------------


def test_a_reconcile_starts_maintenance_on_maintain_now_and_records_it_from_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = reconciler_table("silver-trades", dependsOn=[], maintenance={"schedule": "0 0 1 1 *"})
    body["metadata"]["annotations"] = {"offload.k2.io/maintain-now": "first"}
    body["status"] = {"lastTrigger": "now", "lastScheduleTime": "2024-03-01T12:00:00Z"}
    kube = FakeKube()
    harness = Tick(kube)
    harness.run(body, {})
    (app,) = kube.created
    name = app["metadata"]["name"]
    assert app["metadata"]["labels"]["offload.k2.io/maintenance-of"] == "silver-trades"
    assert "--maintain" in app["spec"]["arguments"]
    assert ("Normal", "MaintenanceStarted") in [e[:2] for e in harness.events]

    # It finished: the record is read from the table's properties and written to the status.
    app["status"] = {"applicationState": {"state": "COMPLETED"}, "terminationTime": "2024-03-01T12:25:00Z"}
    app["metadata"]["creationTimestamp"] = "2024-03-01T12:20:00Z"
    kube.runs = [app]
    record = MaintenanceRecord(name, "2024-03-01T12:25:00Z", snapshots_after=3, data_files_after=8, snapshots_expired=4)
    monkeypatch.setattr(iceberg_io, "open_catalog", lambda catalog: object())
    monkeypatch.setattr(iceberg_io, "load_table", lambda catalog, identifier: object())
    monkeypatch.setattr(maintenance_io, "maintenance_record", lambda loaded: record)
    body["status"] = harness.statuses[-1]
    harness.run(body, {})
    written = harness.statuses[-1]["maintenance"]
    assert written["lastRun"] == name and written["outcome"] == "Succeeded"
    assert (written["snapshotsAfter"], written["dataFilesAfter"], written["snapshotsExpired"]) == (3, 8, 4)
    assert written["lastFinishTime"] == "2024-03-01T12:25:00Z" and written["error"] is None
    assert ("Normal", "MaintenanceSucceeded") in [e[:2] for e in harness.events]
    assert len(kube.created) == 1


def test_a_failed_maintenance_run_reports_the_jobs_own_error_line_with_the_password_masked() -> None:
    name = "silver-trades-mt-202403010317"
    app = {
        "metadata": {
            "name": name,
            "creationTimestamp": "2024-03-01T03:17:01Z",
            "labels": {"offload.k2.io/slot": "202403010317", "offload.k2.io/maintenance-of": "silver-trades"},
        },
        "status": {
            "applicationState": {"state": "FAILED", "errorMessage": "driver container failed"},
            "terminationTime": "2024-03-01T03:20:00Z",
            "driverInfo": {"podName": f"{name}-driver"},
        },
    }
    kube = FakeKube(runs=[app])
    error = f"cannot open catalog with password {CATALOG_PASSWORD}!"
    kube.logs[f"{name}-driver"] = OffloadResult(table="trades", run_id=name, outcome="failed", error=error).to_line()
    tick = Tick(kube)
    running = {"lastRun": name, "outcome": "Running", "lastStartTime": "2024-03-01T03:17:00Z"}
    body = reconciler_table("silver-trades", dependsOn=[])
    body["status"] = {"lastTrigger": "now", "lastScheduleTime": "2024-03-01T12:00:00Z", "maintenance": running}
    tick.run(body, {})
    written = tick.statuses[-1]["maintenance"]
    assert written["outcome"] == "Failed" and written["error"] == "cannot open catalog with password ***!"
    (event,) = [e for e in tick.events if e[1] == "MaintenanceFailed"]
    assert event[0] == "Warning" and CATALOG_PASSWORD not in event[2]
