"""Table maintenance end to end: the operator starts a maintenance SparkApplication on
offload.k2.io/maintain-now and at the slots of spec.maintenance.schedule, never beside a run of
the table; the table's run waits while it is in flight; status.maintenance and the events
report it.

Real kube-apiserver, the operator as ``kopf run``, the Spark Operator stand-in executing the real
job. Runs in flight are made observable by the stand-in's hold (a held SparkApplication stays
RUNNING until released), never by sleeps; the one scheduled slot is waited for with a timeout
that spans the next minute boundary.

The job's maintenance mode (``--maintain``) is written apart from the operator: until it is in
this checkout, the maintenance run fails in the job's argument parsing, and the test asserts the
operator's reporting of that failure instead of the figures (JOB_MAINTAINS).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from iceberg_offload.job.cli import parser
from standin.harness import (
    EVERY_MINUTE,
    FAR_AWAY,
    RUN_TIMEOUT,
    Scenario,
    bronze_table,
    condition,
    feed_trades,
    parse_time,
    utc_now,
)

TRIGGER = "offload.k2.io/trigger"
MAINTAIN = "offload.k2.io/maintain-now"
MAINTENANCE_OF = "offload.k2.io/maintenance-of"
TABLE = "binance"
JOB_MAINTAINS = "--maintain" in parser().format_help()


def state(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("applicationState") or {}).get("state") or "")


def maintenance_apps(s: Scenario) -> list[dict[str, Any]]:
    return [a for a in s.apps(TABLE) if MAINTENANCE_OF in a["metadata"]["labels"]]


def table_runs(s: Scenario) -> list[dict[str, Any]]:
    return [a for a in s.apps(TABLE) if MAINTENANCE_OF not in a["metadata"]["labels"]]


def without(args: list[str], *flags: str) -> list[str]:
    """The arguments without these flags and their values."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            kept.append(arg)
    return kept


def maintenance_status(s: Scenario) -> dict[str, Any]:
    return dict(s.status(TABLE).get("maintenance") or {})


def standin_state(s: Scenario, name: str) -> str | None:
    return next((r.state for r in s.standin.runs(s.namespace) if r.name == name), None)


def finished_maintenance(s: Scenario, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        m = maintenance_status(s)
        return m if m.get("lastRun") == name and m.get("outcome") in ("Succeeded", "Failed") else None

    return s.wait(done, timeout=RUN_TIMEOUT, what=f"maintenance {name} recorded", table=TABLE)


def check_reported(s: Scenario, name: str, m: dict[str, Any], *, scheduled: bool) -> None:
    """status.maintenance and the event of a finished maintenance run; the figures only once the
    job's maintenance mode is here."""
    reasons = {e["reason"]: e for e in s.events(TABLE) if name in (e.get("message") or "")}
    assert "MaintenanceStarted" in reasons, reasons
    assert m["lastStartTime"] and m["lastFinishTime"], m
    assert bool(m.get("nextRun")) is scheduled, m  # only while the schedule is enabled
    if JOB_MAINTAINS:
        assert m["outcome"] == "Succeeded" and not m.get("error"), m
        for key in ("snapshotsExpired", "dataFilesRewritten", "dataFilesAdded", "snapshotsAfter", "dataFilesAfter"):
            assert isinstance(m.get(key), int), (key, m)
        assert m["snapshotsAfter"] >= 1, m
        assert reasons["MaintenanceSucceeded"]["type"] == "Normal", reasons
    else:
        assert m["outcome"] == "Failed" and "--maintain" in m["error"] and "\n" not in m["error"], m
        assert reasons["MaintenanceFailed"]["type"] == "Warning", reasons
    assert s.standin.password not in str(m) and s.catalog_password not in str(m)


def test_maintenance_takes_turns_with_the_tables_runs_and_reports(scenario: Callable[..., Scenario]) -> None:
    s = scenario("maintenance")
    clickhouse = s.create_sources()
    now = utc_now()
    feed_trades(clickhouse, now - timedelta(minutes=30), now)
    s.apply_connections()
    table = bronze_table(
        s.standin,
        TABLE,
        schedule=FAR_AWAY,
        database=s.database,
        target_namespace=s.iceberg_namespace,
        maintenance={"enabled": False, "snapshotRetention": {"maxAge": "0s", "retainLast": 1}},
    )
    s.apply([table])
    s.start_operator()

    # 1. A run of the table in flight (held): a maintain-now waits for it.
    s.standin.hold(s.namespace)
    s.annotate(TABLE, TRIGGER, "first")
    (run,) = s.wait(
        lambda: [a for a in table_runs(s) if state(a) == "RUNNING"] or None,
        timeout=30,
        what="the table's run held",
        table=TABLE,
    )
    s.annotate(TABLE, MAINTAIN, "now-1")
    s.holds(lambda: maintenance_apps(s) == [], seconds=4, what="no maintenance beside the table's run", table=TABLE)
    # Let the run go, and hold again once it executes: the maintenance run that follows is held.
    s.standin.release(s.namespace)
    s.wait(
        lambda: standin_state(s, run["metadata"]["name"]) in ("RUNNING", "COMPLETED", "FAILED"),
        timeout=30,
        what="the table's run released",
    )
    s.standin.hold(s.namespace)
    s.wait(
        lambda: (s.status(TABLE).get("lastRun") or {}).get("outcome") == "Succeeded",
        timeout=RUN_TIMEOUT,
        what="the first run recorded as Succeeded",
        table=TABLE,
    )
    (app,) = s.wait(
        lambda: [a for a in maintenance_apps(s) if state(a) == "RUNNING"] or None,
        timeout=30,
        what="the maintenance run started after the table's run, held",
        table=TABLE,
    )

    # 2. The maintenance SparkApplication: labels, owner, the table's arguments and its own.
    meta, spec = app["metadata"], app["spec"]
    name = meta["name"]
    assert name.startswith(f"{TABLE}-mt-m"), name  # a manual trigger's slot
    assert meta["labels"][MAINTENANCE_OF] == TABLE and meta["labels"]["offload.k2.io/table"] == TABLE
    (owner,) = meta["ownerReferences"]
    assert owner["kind"] == "OffloadTable" and owner["name"] == TABLE and owner["controller"] is True
    args = spec["arguments"]
    assert args[args.index("--maintain") + 1] == name
    assert args[args.index("--snapshot-max-age-seconds") + 1] == "0"
    assert args[args.index("--retain-last") + 1] == "1"
    assert args[args.index("--target-file-size-bytes") + 1] == str(128 * 2**20)
    assert args[args.index("--orphan-age-seconds") + 1] == str(72 * 3600)
    table_args = args[: args.index("--maintain")]
    assert without(table_args, "--to", "--run-id") == without(run["spec"]["arguments"], "--to", "--run-id")
    assert table_args[table_args.index("--run-id") + 1] == name
    assert spec["driver"]["env"] == run["spec"]["driver"]["env"]
    s.wait(
        lambda: maintenance_status(s).get("outcome") == "Running" and maintenance_status(s).get("lastRun") == name,
        timeout=30,
        what="status.maintenance Running",
        table=TABLE,
    )

    # 3. While it is in flight, the table's next run waits for it.
    runs_before = len(table_runs(s))
    s.annotate(TABLE, TRIGGER, "second")
    s.wait(
        lambda: "waits for maintenance" in condition(s.table(TABLE), "Running").get("message", ""),
        timeout=30,
        what="the Running condition to say the next run waits for maintenance",
        table=TABLE,
    )
    s.holds(lambda: len(table_runs(s)) == runs_before, seconds=3, what="no table run beside maintenance", table=TABLE)

    # 4. Released: the maintenance run is recorded, then the table's run starts.
    s.standin.release(s.namespace)
    check_reported(s, name, finished_maintenance(s, name), scheduled=False)
    s.wait(
        lambda: (
            len(table_runs(s)) == runs_before + 1
            and (s.status(TABLE).get("lastRun") or {}).get("name") == table_runs(s)[-1]["metadata"]["name"]
            and (s.status(TABLE).get("lastRun") or {}).get("outcome") in ("Succeeded", "Skipped")
        ),
        timeout=RUN_TIMEOUT,
        what="the table's waiting run started and recorded after the maintenance",
        table=TABLE,
    )

    # 5. On its schedule: one maintenance run at the next slot, named after it.
    patched = utc_now()
    s.patch_table(TABLE, {"spec": {"maintenance": {"enabled": True, "schedule": EVERY_MINUTE}}})
    (scheduled,) = s.wait(
        lambda: [a for a in maintenance_apps(s) if a["metadata"]["name"] != name] or None,
        timeout=150,
        what="a maintenance run at the next slot",
        table=TABLE,
    )
    slot = scheduled["metadata"]["labels"]["offload.k2.io/slot"]
    assert scheduled["metadata"]["name"] == f"{TABLE}-mt-{slot}"
    slot_time = parse_time(f"{slot[:4]}-{slot[4:6]}-{slot[6:8]}T{slot[8:10]}:{slot[10:12]}:00Z")
    assert patched - timedelta(minutes=1) < slot_time <= utc_now(), (slot, patched)
    check_reported(
        s, scheduled["metadata"]["name"], finished_maintenance(s, scheduled["metadata"]["name"]), scheduled=True
    )
