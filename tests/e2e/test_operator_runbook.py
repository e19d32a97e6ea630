"""The runbook on Kubernetes: its nine OffloadTables from ``kubectl apply``, run by the operator.

Real kube-apiserver; the operator as its container runs it (``kopf run``); the Spark Operator
stand-in executes every SparkApplication with the real offload job on a warm Spark session,
against the embedded ClickHouse (password-protected) and a SQLite Iceberg catalog.

Scheduled runs happen on minute boundaries, so the slow part of these tests is waiting for the
clock. Everything that needs a schedule slot is therefore started together, in one module-scoped
fixture: the runbook's nine tables (two cycles), a suspended table and a table whose schedule is
changed later. Each has its own namespace, operator, ClickHouse database and Iceberg namespace;
the tests then check each of them, waiting only for what has not happened yet.

The runbook's two cycles are two one-minute slots, the second set once the first cycle has
completed: a dependent table's due slot is always the newest one, so on an every-minute schedule
a machine too busy to finish bronze, silver and gold within a minute would keep gold waiting for
ever. One slot at a time, every layer runs each cycle however long the chain takes.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core.planning import floor_to_interval
from iceberg_offload.core.result import RUN_ID
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.watermark import INITIAL_WATERMARK, Watermark, Window, parse_timestamp
from iceberg_offload.operator.spec import parse_duration
from prometheus_client.parser import text_string_to_metric_families
from pyiceberg.table import Table
from standin.harness import (
    EVERY_MINUTE,
    FAR_AWAY,
    RUN_TIMEOUT,
    Feeder,
    RunRecord,
    Scenario,
    StandInProcess,
    bronze_table,
    condition,
    created_at,
    feed_trades,
    localize,
    minute_of,
    next_minute,
    parse_time,
    runbook_manifests,
    slot_of,
    utc_now,
    wait_for,
)

RUNBOOK = (
    "bronze-trades-binance",
    "bronze-trades-kraken",
    "silver-trades",
    "gold-ohlcv-1m",
    "gold-ohlcv-5m",
    "gold-ohlcv-15m",
    "gold-ohlcv-30m",
    "gold-ohlcv-1h",
    "gold-ohlcv-1d",
)
BRONZE = RUNBOOK[:2]
GOLD = RUNBOOK[3:]
TABLE = "binance"  # the single table of the suspend and schedule-change scenarios
# Up to a minute to a cycle's slot, and the chain (longer on a busy machine).
CYCLE_TIMEOUT = 600.0


@dataclass
class Worlds:
    runbook: Scenario
    suspend: Scenario
    schedule: Scenario
    bad_specs: Scenario
    feeder: Feeder
    specs: dict[str, dict[str, Any]]  # the runbook's OffloadTable specs as applied
    first_slot: datetime  # the runbook's first cycle


def one_slot(at: datetime) -> str:
    """A schedule whose one slot this year is the minute ``at`` (UTC, the tables' time zone)."""
    return f"{at.minute} {at.hour} {at.day} {at.month} *"


def _schedule_runbook(s: Scenario, standin: StandInProcess, schedule: str) -> list[dict[str, Any]]:
    """``kubectl apply`` the runbook's nine tables, localized, on ``schedule``."""
    tables = [localize(doc, standin, schedule=schedule, safety_buffer="10s") for doc in runbook_manifests()]
    assert [t["metadata"]["name"] for t in tables] == list(RUNBOOK), "examples/ changed: update this test"
    s.apply(tables)
    return tables


def _single_table_world(cluster: Any, standin: StandInProcess, label: str, workdir: Path, **spec: Any) -> Scenario:
    s = Scenario.create(cluster, standin, label, workdir)
    clickhouse = s.create_sources()
    now = utc_now()
    feed_trades(clickhouse, now - timedelta(minutes=30), now)
    s.apply_connections()
    s.apply([bronze_table(standin, TABLE, database=s.database, target_namespace=s.iceberg_namespace, **spec)])
    s.start_operator()
    return s


BAD_SPECS = {
    "bad-cron": ("InvalidSpec", ["spec.schedule", "61 * * * *"]),
    "cycle-a": ("DependencyCycle", ["cycle-a -> cycle-b -> cycle-a"]),
    "cycle-b": ("DependencyCycle", ["cycle-b -> cycle-a -> cycle-b"]),
    "orphan": ("UnknownUpstream", ["no-such-table"]),
}


def _bad_specs_world(cluster: Any, standin: StandInProcess, workdir: Path) -> Scenario:
    """Specs the schema cannot catch; every minute otherwise, so a slot passes while we look."""
    s = Scenario.create(cluster, standin, "bad-specs", workdir)
    s.apply_connections()

    def table(name: str, schedule: str = EVERY_MINUTE, **spec: Any) -> dict[str, Any]:
        return bronze_table(standin, name, schedule=schedule, database=s.database, **spec)

    s.apply(
        [
            table("bad-cron", schedule="61 * * * *"),
            table("cycle-a", dependsOn=["cycle-b"]),
            table("cycle-b", dependsOn=["cycle-a"]),
            table("orphan", dependsOn=["no-such-table"]),
        ]
    )
    s.start_operator()
    return s


@pytest.fixture(scope="module")
def worlds(control_plane: Any, standin: StandInProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worlds]:
    workdir = tmp_path_factory.mktemp("runbook")
    runbook = Scenario.create(
        control_plane, standin, "runbook", workdir / "runbook", database="default", iceberg_namespace="cold"
    )
    made = [runbook]
    feeder: Feeder | None = None
    try:
        # The runbook as written: ClickHouse database `default`, Iceberg namespace `cold` (both
        # created by the stand-in at start). History from an hour before the last midnight, so
        # that even the daily candle has closed; then live trades, every second.
        clickhouse = runbook.clickhouse()
        now = utc_now()
        history = floor_to_interval(now - timedelta(minutes=1), timedelta(days=1)) - timedelta(hours=1)
        feed_trades(clickhouse, history, now)
        feeder = Feeder(standin.clickhouse(), now).start()
        runbook.apply_connections()
        # Created without a slot, then given their first: the minute after the last of them was
        # created (due at once if it has passed by the time the change lands).
        _schedule_runbook(runbook, standin, FAR_AWAY)
        first_slot = next_minute(max(parse_time(t["metadata"]["creationTimestamp"]) for t in runbook.tables()))
        tables = _schedule_runbook(runbook, standin, one_slot(first_slot))
        runbook.start_operator()
        # The scenarios that need a schedule slot go at the same time (their waits overlap).
        suspend = _single_table_world(
            control_plane, standin, "suspend", workdir / "suspend", schedule=EVERY_MINUTE, suspend=True
        )
        made.append(suspend)
        schedule = _single_table_world(control_plane, standin, "schedule", workdir / "schedule", schedule=FAR_AWAY)
        made.append(schedule)
        bad_specs = _bad_specs_world(control_plane, standin, workdir / "bad-specs")
        made.append(bad_specs)
        specs = {t["metadata"]["name"]: t["spec"] for t in tables}
        yield Worlds(runbook, suspend, schedule, bad_specs, feeder, specs, first_slot)
    finally:
        if feeder is not None:
            feeder.stop()
        for scenario in made:
            scenario.close()


# --- two cycles of the runbook -----------------------------------------------------------


@dataclass(frozen=True)
class Cycles:
    """Per table, the stand-in's records of its first two completed scheduled runs."""

    runs: dict[str, list[RunRecord]]


def _completed(standin: StandInProcess, namespace: str) -> dict[str, list[RunRecord]]:
    done: dict[str, list[RunRecord]] = {name: [] for name in RUNBOOK}
    for record in standin.runs(namespace):
        if record.state == "COMPLETED" and record.table in done:
            done[record.table].append(record)
    return done


@pytest.fixture(scope="module")
def cycles(worlds: Worlds, standin: StandInProcess) -> Cycles:
    """Waits for two completed cycles of all nine tables (the operator's status included)."""
    s = worlds.runbook

    def cycle(number: int) -> Callable[[], dict[str, list[RunRecord]] | None]:
        def completed() -> dict[str, list[RunRecord]] | None:
            worlds.feeder.check()
            done = _completed(standin, s.namespace)
            if any(len(runs) < number for runs in done.values()):
                return None
            for name, runs in done.items():
                last = s.status(name).get("lastRun") or {}
                if last.get("name") not in [r.name for r in runs[number - 1 :]]:
                    return None  # the operator has not recorded this cycle yet
            return done

        return completed

    s.wait(cycle(1), timeout=CYCLE_TIMEOUT, what="the first completed cycle of the nine runbook tables")
    # The second slot: this minute if the first cycle took longer than one, else the next minute.
    _schedule_runbook(s, standin, one_slot(max(minute_of(utc_now()), next_minute(worlds.first_slot))))
    done = s.wait(cycle(2), timeout=CYCLE_TIMEOUT, what="the second completed cycle of the nine runbook tables")
    failed = [r for r in standin.runs(s.namespace) if r.state == "FAILED"]
    assert not failed, f"runs failed: {[(r.name, r.error) for r in failed]}"
    return Cycles({name: runs[:2] for name, runs in done.items()})


def _summary(snapshot: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (snapshot.summary.additional_properties if snapshot.summary else {}).items()}


def _watermark_at(table: Table, at_seconds: float) -> Watermark | None:
    """The table's committed watermark as of a moment: its newest snapshot committed by then."""
    marks = [
        (s.timestamp_ms, s)
        for s in iceberg_io.lineage(table)
        if s.timestamp_ms <= at_seconds * 1000 and _has_mark(_summary(s))
    ]
    if not marks:
        return None
    return _mark(_summary(max(marks, key=lambda m: m[0])[1]))


def _has_mark(summary: Mapping[str, str]) -> bool:
    return "offload.watermark.before" in summary or "offload.watermark.timestamp" in summary


def _mark(summary: Mapping[str, str]) -> Watermark:
    """A commit's watermark: "every row before" (this protocol) or the first version's position."""
    if "offload.watermark.before" in summary:
        return Watermark(parse_timestamp(summary["offload.watermark.before"]))
    return Watermark(
        parse_timestamp(summary["offload.watermark.timestamp"]), int(summary["offload.watermark.sequence"])
    )


def _status_mark(mark: Mapping[str, Any]) -> Watermark:
    sequence = mark.get("sequence")
    return Watermark(parse_timestamp(mark["timestamp"]), None if sequence is None else int(sequence))


def _run_snapshot(table: Table, run: str) -> dict[str, str] | None:
    for snapshot in iceberg_io.lineage(table):
        summary = _summary(snapshot)
        if summary.get(RUN_ID) == run:
            return {**summary, "added-records": str(snapshot.summary.get("added-records") if snapshot.summary else 0)}
    return None


def _source(spec: Mapping[str, Any]) -> SourceSpec:
    source = spec["source"]
    return SourceSpec(source["database"], source["table"], source["timestampColumn"], source.get("sequenceColumn"))


def test_runbook_tables_complete_two_cycles_exactly_once(
    worlds: Worlds, cycles: Cycles, standin: StandInProcess
) -> None:
    s = worlds.runbook
    clickhouse = s.clickhouse()
    iceberg = {name: standin.iceberg_table("cold", worlds.specs[name]["target"]["table"]) for name in RUNBOOK}

    # Exactly once: per table, ClickHouse rows up to the committed watermark == Iceberg rows.
    mismatches = []
    for name in RUNBOOK:
        table = iceberg[name]
        mark = iceberg_io.committed_watermark(table)
        assert mark is not None, f"{name}: no committed watermark after two cycles"
        source_rows = clickhouse_io.window_stats(
            clickhouse, _source(worlds.specs[name]), Window(INITIAL_WATERMARK, mark)
        )
        if source_rows.rows != iceberg_io.row_count(table):
            mismatches.append(
                f"{name}: ClickHouse {source_rows.rows} rows through {mark}, Iceberg {iceberg_io.row_count(table)}"
            )
    assert not mismatches, "\n".join(mismatches)

    # Two cycles, trades fed between them: the second bronze runs added rows.
    for name in BRONZE:
        first, second = cycles.runs[name]
        assert (second.rows or 0) > 0, f"{name}: the second cycle added no rows although trades kept arriving"
        assert first.outcome == "committed" and second.outcome == "committed", (first, second)
    for name, (first, _) in cycles.runs.items():
        assert first.outcome == "committed", f"{name}: the first cycle did not commit: {first}"

    # The status of each table, as the runbook reader sees it. Runs go on every minute: the
    # Iceberg table is loaded after the status is read, so the run it records is committed in it.
    for name in RUNBOOK:
        obj = s.table(name)
        status = obj["status"]
        committed = standin.iceberg_table("cold", worlds.specs[name]["target"]["table"])
        last = status["lastRun"]
        assert last["outcome"] in ("Succeeded", "Skipped"), f"{name}: lastRun {last}"
        assert status.get("consecutiveFailures") == 0, f"{name}: {status}"
        assert status.get("lastSuccessfulRun"), f"{name}: no lastSuccessfulRun: {status}"
        ready = condition(obj, "Ready")
        # Succeeded, or WaitingForUpstream once the next cycle's slot has come.
        assert ready.get("status") == "True" and ready.get("reason") in ("Succeeded", "WaitingForUpstream"), (
            f"{name}: Ready {ready}"
        )
        assert "activeRun" not in status or status["activeRun"] is None or status["activeRun"]["name"] != last["name"]
        assert status.get("watermark", {}).get("timestamp"), f"{name}: no watermark in the status"
        if last["outcome"] == "Succeeded":
            commit = _run_snapshot(committed, last["name"])
            assert commit is not None, f"{name}: no Iceberg snapshot carries run {last['name']}"
            assert _mark(commit) == _status_mark(status["watermark"]), (
                f"{name}: status watermark {status['watermark']} != the run's commit {commit}"
            )
            assert status["rowCount"] == int(commit["total-records"]), f"{name}: rowCount {status['rowCount']}"
            assert last["rows"] == int(commit["added-records"]), f"{name}: lastRun.rows {last['rows']}"
        else:  # Skipped: nothing new closed (a candle longer than a cycle); the watermark stayed
            assert name in GOLD and name != "gold-ohlcv-1m", f"{name} skipped a cycle: {last}"


def test_dependent_layers_never_run_past_their_upstream(
    worlds: Worlds, cycles: Cycles, standin: StandInProcess
) -> None:
    """Silver's window ends at or before both bronze watermarks as they were when it started;
    gold's at or before silver's (from the Iceberg snapshots and the stand-in's run records)."""

    def table(name: str) -> Table:
        return standin.iceberg_table("cold", worlds.specs[name]["target"]["table"])

    checked = 0
    for name, upstream in [("silver-trades", BRONZE), *[(g, ("silver-trades",)) for g in GOLD]]:
        for run in standin.runs(worlds.runbook.namespace):
            if run.table != name or run.state != "COMPLETED" or run.outcome != "committed":
                continue
            commit = _run_snapshot(table(name), run.name)
            assert commit is not None and run.started_at is not None
            upper = _mark(commit).timestamp
            for up in upstream:
                mark = _watermark_at(table(up), run.started_at)
                assert mark is not None, f"{run.name} ran before {up} had committed anything"
                assert upper <= mark.timestamp, (
                    f"{run.name} offloaded through {upper.isoformat()}, past {up}'s watermark {mark} at its start"
                )
            checked += 1
    assert checked >= len(GOLD) + 2, f"only {checked} dependent runs to check"


# --- what the runbook reader looks at ----------------------------------------------------


def kubectl_table(text: str) -> list[dict[str, str]]:
    """Rows of ``kubectl get`` output by column; header names may hold one space (LAST SUCCESS)."""
    header, *rows = text.rstrip("\n").splitlines()
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=\s\s))\S", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [{n: row[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)} for row in rows]


def test_kubectl_get_and_describe_read_like_the_runbook(worlds: Worlds, cycles: Cycles) -> None:
    s = worlds.runbook
    listed = s.kubectl("get", "offloadtables")
    assert listed.returncode == 0, listed.stderr
    rows = {r["NAME"]: r for r in kubectl_table(listed.stdout)}
    assert sorted(rows) == sorted(RUNBOOK), f"kubectl get offloadtables:\n{listed.stdout}"
    header = listed.stdout.splitlines()[0]
    for column in ("READY", "LAYER", "WATERMARK", "LAST SUCCESS", "FAILURES"):
        assert column in header, f"no {column} column:\n{listed.stdout}"
    for name, row in rows.items():
        layer = name.split("-")[0]
        assert (row["READY"], row["LAYER"], row["FAILURES"]) == ("True", layer, "0"), f"{name}: {row}"
        assert re.match(r"\d{4}-\d\d-\d\dT", row["WATERMARK"]), f"{name}: watermark column {row['WATERMARK']!r}"
        assert re.match(r"^\d+[smhd]", row["LAST SUCCESS"]), f"{name}: last success column {row['LAST SUCCESS']!r}"

    wide = s.kubectl("get", "offloadtables", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    wide_rows = {r["NAME"]: r for r in kubectl_table(wide.stdout)}
    # Succeeded (the message names the watermark), or already waiting for the next cycle's upstream.
    message_starts = {"Succeeded": "watermark 20", "WaitingForUpstream": "waiting for "}
    for name, row in wide_rows.items():
        assert row["REASON"] in message_starts, f"{name}: REASON {row['REASON']!r}\n{wide.stdout}"
        assert row["MESSAGE"].startswith(message_starts[row["REASON"]]), f"{name}: MESSAGE {row['MESSAGE']!r}"

    described = s.kubectl("describe", "offloadtable", "silver-trades")
    assert described.returncode == 0, described.stderr
    text = described.stdout
    for expected in ("Conditions:", "Ready", "Watermark:", "Last Run:", "Events:", "RunStarted", "RunSucceeded"):
        assert expected in text, f"kubectl describe lacks {expected!r}:\n{text}"
    # The events tell the story in words: started for rows up to ..., committed N rows; watermark ...
    assert re.search(r"RunStarted\s+.*started silver-trades-\d{12}-1 for rows up to", text), text
    assert re.search(r"RunSucceeded\s+.*committed \d+ rows; watermark", text), text


def test_offload_watermarks_mirror_matches_the_status(worlds: Worlds, cycles: Cycles) -> None:
    """The runbook's own query: one row per table, status 'success', the status's watermark."""
    s = worlds.runbook
    clickhouse = s.clickhouse()

    def problems() -> list[str]:
        found = []
        rows = clickhouse.query("SELECT table_name, count() FROM offload_watermarks FINAL GROUP BY table_name")
        counts: dict[str, int] = {str(r[0]): int(r[1]) for r in rows.result_rows}
        for name in RUNBOOK:
            source = worlds.specs[name]["source"]["table"]
            status = s.status(name)
            row = clickhouse_io.read_mirror(clickhouse, source)
            if row is None or counts.get(source) != 1:
                found.append(f"{source}: {counts.get(source, 0)} rows in offload_watermarks")
                continue
            mark = status.get("watermark") or {}
            status_mark = _status_mark(mark) if mark else None
            # The mirror keeps the runbook's columns: the timestamp, and 0 as the sequence of this protocol.
            expected = (status_mark.timestamp, status_mark.sequence or 0) if status_mark else None
            got = (row.last_offload_timestamp, row.last_offload_max_sequence)
            if (row.status, row.failure_count, got) != ("success", 0, expected):
                found.append(f"{source}: mirror {row.status}/{row.failure_count}/{got}, status watermark {expected}")
        return found

    # Runs go on every minute and the mirror is written just before the status: look again
    # until one reading has both agree.
    last: list[str] = []

    def agree() -> bool:
        last[:] = problems()
        return not last

    wait_for(
        agree,
        timeout=45,
        what="offload_watermarks to agree with every OffloadTable's status",
        diagnostics=lambda: "\n".join(last),
    )


# --- metrics and alerts -------------------------------------------------------------------


def _scrape(port: int) -> dict[tuple[str, str], float]:
    """(metric name, table) -> value, for the runbook namespace's series of /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            table = sample.labels.get("table")
            if table is not None and not sample.labels.get("le") and not sample.labels.get("outcome"):
                values[(sample.name, table)] = float(sample.value)
            if sample.labels.get("outcome") == "Succeeded":
                values[(f"{sample.name}:Succeeded", str(table))] = float(sample.value)
    return values


def test_metrics_show_the_status_figures_and_no_alert_fires(worlds: Worlds, cycles: Cycles) -> None:
    """The operator's /metrics, scraped during the runbook scenario, carry each table's status
    figures; the chart's three alert expressions, evaluated on them, are all quiet."""
    s = worlds.runbook
    operator = s.operators[-1]
    last: list[str] = []

    def agree() -> bool:
        before = time.time()
        figures = _scrape(operator.metrics_port)
        after = time.time()
        found = []
        for name in RUNBOOK:
            status = s.status(name)
            mark = parse_timestamp(status["watermark"]["timestamp"]).timestamp()
            candle = worlds.specs[name]["source"].get("candleInterval")
            candle_seconds = parse_duration(candle, "candle").total_seconds() if candle else 0.0
            expected = {
                "iceberg_offload_watermark_timestamp_seconds": mark,
                "iceberg_offload_consecutive_failures": float(status.get("consecutiveFailures") or 0),
                "iceberg_offload_iceberg_rows": float(status["rowCount"]),
                "iceberg_offload_candle_interval_seconds": candle_seconds,
            }
            for metric, value in expected.items():
                if figures.get((metric, name)) != value:
                    found.append(f"{name}: {metric} = {figures.get((metric, name))}, status says {value}")
            lag = figures.get(("iceberg_offload_lag_seconds", name), -1.0)
            if not before - mark - 1 <= lag <= after - mark + 1:
                found.append(f"{name}: lag {lag} is not now - watermark")
            if figures.get(("iceberg_offload_runs_total:Succeeded", name), 0) < 1:
                found.append(f"{name}: no succeeded run counted")
            # The PrometheusRule's expressions (helm/iceberg-offload/templates/prometheusrule.yaml).
            if figures.get(("iceberg_offload_consecutive_failures", name), 0) > 3:
                found.append(f"{name}: IcebergOffloadFailing would fire")
            if lag - candle_seconds > 1800:
                found.append(f"{name}: IcebergOffloadLagging would fire")
        last[:] = found
        return not found

    wait_for(
        agree,
        timeout=45,
        what="/metrics to agree with every OffloadTable's status",
        diagnostics=lambda: "\n".join(last),
    )


# --- secrets -----------------------------------------------------------------------------


def test_passwords_reach_runs_only_as_secret_references(
    worlds: Worlds, cycles: Cycles, standin: StandInProcess
) -> None:
    secrets = {"ClickHouse password": standin.password, "catalog password": standin.catalog_password}

    def leaked(text: str | bytes) -> list[str]:
        """Which secrets appear in the text, by name (a failure message never shows a value)."""
        data = text.encode() if isinstance(text, str) else text
        return [what for what, secret in secrets.items() if secret.encode() in data]

    scenarios = (worlds.runbook, worlds.suspend, worlds.schedule, worlds.bad_specs)
    apps = [app for s in scenarios for app in s.apps()]
    assert len(apps) >= 2 * len(RUNBOOK), "too few SparkApplications to inspect"
    for app in apps:
        name = app["metadata"]["name"]
        assert leaked(json.dumps(app)) == [], f"SparkApplication {name} holds a password"
        for role in ("driver", "executor"):
            env = {e["name"]: e for e in app["spec"][role]["env"]}
            for variable, secret_name in (
                ("ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD", "clickhouse-offload"),
                ("ICEBERG_OFFLOAD_CATALOG_PASSWORD", "iceberg-catalog"),
            ):
                entry = env.get(variable)
                assert entry is not None, f"{name}: {role} has no {variable}"
                assert "value" not in entry, f"{name}: {role} {variable} is a literal value"
                assert entry["valueFrom"] == {"secretKeyRef": {"name": secret_name, "key": "password"}}, entry
        assert not any(a.startswith("--password") for a in app["spec"]["arguments"]), app["spec"]["arguments"]
    texts: dict[str, str | bytes] = {}
    for s in scenarios:
        for item in s.tables():
            texts[f"OffloadTable {s.namespace}/{item['metadata']['name']}"] = json.dumps(item)
        texts[f"events of {s.namespace}"] = json.dumps(s.events())
        for operator in s.operators:
            texts[f"operator log {operator.namespace}"] = operator.log_text()
        for run in standin.runs(s.namespace):
            if run.log_file:
                texts[f"run log {run.name}"] = Path(run.log_file).read_text(errors="replace")
    texts["stand-in log"] = standin.log_text()
    # The runs succeeded against the password-protected ClickHouse, and the stand-in process never
    # had the password in its environment (it gets it on stdin): the executors got it from the
    # Secret, through the SparkApplication's env (kubelet-style resolution).
    texts["the stand-in's process environment"] = Path(f"/proc/{standin.proc.pid}/environ").read_bytes()
    found = {where: names for where, text in texts.items() if (names := leaked(text))}
    assert found == {}, f"passwords found in: {found}"


# --- suspend and schedule changes --------------------------------------------------------


def _created(s: Scenario) -> datetime:
    return parse_time(s.table(TABLE)["metadata"]["creationTimestamp"])


def test_suspended_table_starts_nothing_until_resumed(worlds: Worlds) -> None:
    s = worlds.suspend
    slot = next_minute(_created(s))
    s.wait(lambda: utc_now() > slot + timedelta(seconds=4), timeout=80, what=f"the schedule slot {slot} to pass")
    table = s.table(TABLE)
    assert s.apps() == [], f"a suspended table started runs: {s.app_names()}"
    suspended = condition(table, "Suspended")
    assert suspended.get("status") == "True", f"Suspended condition: {suspended}"
    ready = condition(table, "Ready")
    assert (ready.get("status"), ready.get("reason")) == ("False", "Suspended"), f"Ready: {ready}"
    assert not table["status"].get("nextRun"), f"a suspended table announces a next run: {table['status']}"

    # The resumed run is held RUNNING while it is looked at: with concurrencyPolicy Forbid no
    # later slot can start meanwhile, whatever minute it is.
    s.standin.hold(s.namespace)
    resumed = utc_now()
    s.patch_table(TABLE, {"spec": {"suspend": False}})
    (app,) = s.wait(lambda: s.apps(TABLE), timeout=75, what="a scheduled run after resuming", table=TABLE)
    assert app["metadata"]["labels"]["offload.k2.io/slot"].isdigit(), app["metadata"]["labels"]
    # The newest slot when the operator saw the change (one that passed while suspended, or a
    # later one if a minute began since): never an older one.
    assert slot <= minute_of(resumed) <= slot_of(app) <= minute_of(created_at(app)), (
        f"resumed at {resumed}, run {app['metadata']['name']} created {created_at(app)}"
    )
    s.standin.release(s.namespace)
    name = app["metadata"]["name"]
    outcome = s.wait(lambda: s.recorded_outcome(TABLE, name), timeout=RUN_TIMEOUT, what=f"{name} recorded", table=TABLE)
    assert outcome == "Succeeded", s.diagnostics(TABLE)
    table = s.table(TABLE)
    assert condition(table, "Suspended")["status"] == "False"
    assert condition(table, "Ready")["status"] == "True"


def test_schedule_change_takes_effect_at_once(worlds: Worlds) -> None:
    s = worlds.schedule
    before = s.wait(
        lambda: (status := s.status(TABLE)).get("nextRun") and status,
        timeout=30,
        what="the first status",
        table=TABLE,
    )
    assert parse_time(before["nextRun"]) - utc_now() > timedelta(days=1), before
    assert s.apps() == [], "a table with a far-away schedule started a run"

    # The first run on the new schedule is held RUNNING while its slot is checked: with
    # concurrencyPolicy Forbid no later slot can start (and move lastScheduleTime) meanwhile.
    s.standin.hold(s.namespace)
    changed = utc_now()
    s.patch_table(TABLE, {"spec": {"schedule": EVERY_MINUTE}})
    s.wait(
        lambda: (n := s.status(TABLE).get("nextRun")) and parse_time(n) <= next_minute(utc_now()),
        timeout=10,
        what="status.nextRun to move to the next minute",
        table=TABLE,
    )
    (app,) = s.wait(lambda: s.apps(TABLE), timeout=75, what="a run on the new schedule", table=TABLE)
    name, slot_time = app["metadata"]["name"], slot_of(app)
    # The newest slot of the new schedule when the operator saw the change: not a slot before the
    # change, nor one after the minute the run was created in.
    assert slot_time >= _created(s), f"slot {slot_time} before the table existed"
    assert minute_of(changed) <= slot_time <= min(next_minute(changed), minute_of(created_at(app))), (
        f"slot {slot_time}: changed at {changed}, {name} created {created_at(app)}"
    )
    status = s.wait(
        lambda: ((status := s.status(TABLE)).get("activeRun") or {}).get("name") == name and status,
        timeout=30,
        what=f"{name} recorded as the active run",
        table=TABLE,
    )
    assert status["lastScheduleTime"] == slot_time.strftime("%Y-%m-%dT%H:%M:%SZ"), status

    s.standin.release(s.namespace)
    outcome = s.wait(lambda: s.recorded_outcome(TABLE, name), timeout=RUN_TIMEOUT, what=f"{name} recorded", table=TABLE)
    assert outcome == "Succeeded", s.diagnostics(TABLE)
    # Finishing the run keeps its slot: lastScheduleTime is it, or the slot of a later run (read
    # after the status, so such a run is listed).
    last = parse_time(s.status(TABLE)["lastScheduleTime"])
    slots = [slot_of(a) for a in s.apps(TABLE)]
    assert last == slot_time or (last > slot_time and last in slots), (last, slots)


# --- specs only the operator can judge -----------------------------------------------------


def test_specs_the_schema_cannot_catch_are_reported_and_never_run(worlds: Worlds) -> None:
    """A bad cron, a dependsOn cycle, an unknown upstream: Ready=False with a reason and a message
    that say what is wrong, a Warning event, and no SparkApplication ever (not at a schedule
    slot, not on a manual trigger)."""
    s = worlds.bad_specs

    def reported() -> bool:
        for name, (reason, _) in BAD_SPECS.items():
            ready = condition(s.table(name), "Ready")
            if (ready.get("status"), ready.get("reason")) != ("False", reason):
                return False
        return True

    s.wait(reported, timeout=30, what="Ready=False with the specific reason on every bad table")
    for name, (reason, words) in BAD_SPECS.items():
        obj = s.table(name)
        ready = condition(obj, "Ready")
        for word in words:
            assert word in ready["message"], f"{name}: Ready message {ready['message']!r} lacks {word!r}"
        assert not obj["status"].get("nextRun"), f"{name}: a table that can never run announces {obj['status']}"
        events = [(e["type"], e["reason"]) for e in s.events(name)]
        assert ("Warning", reason) in events, f"{name}: no Warning {reason} event: {events}"
        s.annotate(name, "offload.k2.io/trigger", "please")  # not even a manual trigger may start one
    s.holds(lambda: s.apps() == [], seconds=4, what="no SparkApplication for any bad table, even triggered")
    # Nor at a schedule slot (the rest of each spec says every minute).
    slot = next_minute(max(parse_time(t["metadata"]["creationTimestamp"]) for t in s.tables()))
    s.wait(lambda: utc_now() > slot + timedelta(seconds=3), timeout=75, what=f"the schedule slot {slot} to pass")
    assert s.apps() == [], f"a bad table started runs: {s.app_names()}"
