"""What one reconcile read, turned into decide's Observed (iceberg_offload.operator.observe).

observe() is pure: every case is a `Reading` built by hand the way the API server returns the
objects (an OffloadTable body, SparkApplication items, the namespace's index entries, the catalog
ConfigMap's data).
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.settings import CatalogSettings, Settings
from iceberg_offload.core.tables import SpecError
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.decide import Readback, RunPlan, Upstream, run_name
from iceberg_offload.operator.manifests import Defaults, spark_application
from iceberg_offload.operator.observe import (
    CatalogRead,
    Reading,
    catalog_settings,
    index_entry,
    observe,
    observed_run,
    upstream_targets,
)
from iceberg_offload.operator.spec import parse_spec
from iceberg_offload.operator.status import OffloadTableStatus
from iceberg_offload.operator.upstream import upstream_of

PROPERTY = settings(max_examples=100, deadline=None)

NAME = "silver-trades"
NOW = datetime(2024, 3, 1, 12, 20, tzinfo=UTC)
CREATED = datetime(2024, 3, 1, 12, 7, 30, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "layer": "silver",
    "source": {"table": "trades", "timestampColumn": "ts", "connection": {"host": "clickhouse"}},
    "target": {"catalogRef": {"name": "iceberg-catalog"}, "table": "trades"},
}
CATALOG_DATA = {
    "ICEBERG_OFFLOAD_CATALOG_NAME": "lake",
    "ICEBERG_OFFLOAD_CATALOG_URI": "jdbc:postgresql://pg:5432/iceberg",
    "ICEBERG_OFFLOAD_CATALOG_WAREHOUSE": "s3://lake/warehouse",
}
CATALOG = CatalogRead("iceberg-catalog", CATALOG_DATA)
UNREADABLE = "ConfigMap market-data/iceberg-catalog cannot be read"


def table(name: str = NAME, *, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "market-data",
            "uid": "6f1c2b1e-0000-4000-8000-000000000001",
            "generation": 4,
            "creationTimestamp": "2024-03-01T12:07:30Z",
        },
        "spec": {**SPEC, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def reading(body: dict[str, Any] | None = None, **fields: Any) -> Reading:
    return Reading(**{"body": body or table(), "now": NOW, "catalog": CATALOG, **fields})


def entries(*bodies: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["metadata"]["name"]: index_entry(b) for b in bodies}


# --- SparkApplication items -> ObservedRun ------------------------------------------------------

FULL_ITEM = {
    "metadata": {
        "name": "silver-trades-202403011215-2",
        "creationTimestamp": "2024-03-01T12:15:01Z",
        "labels": {"offload.k2.io/slot": "202403011215", "offload.k2.io/attempt": "2", "offload.k2.io/generation": "3"},
        "annotations": {"offload.k2.io/window-to": "2024-03-01T12:10:00.000000Z"},
    },
    "status": {
        "applicationState": {"state": "FAILED", "errorMessage": "driver pod failed"},
        "terminationTime": "2024-03-01T12:16:40Z",
        "driverInfo": {"podName": "silver-trades-202403011215-2-driver"},
    },
}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            FULL_ITEM,
            {
                "name": "silver-trades-202403011215-2",
                "slot": "202403011215",
                "attempt": 2,
                "generation": 3,
                "window_to": datetime(2024, 3, 1, 12, 10, tzinfo=UTC),
                "created": datetime(2024, 3, 1, 12, 15, 1, tzinfo=UTC),
                "state": "FAILED",
                "terminated": datetime(2024, 3, 1, 12, 16, 40, tzinfo=UTC),
                "error": "driver pod failed",
            },
            id="every-field",
        ),
        pytest.param(
            {"metadata": {"name": "r", "creationTimestamp": "2024-03-01T12:15:01Z"}},
            {
                "slot": "",
                "attempt": 1,
                "generation": 0,
                "window_to": datetime(2024, 3, 1, 12, 15, 1, tzinfo=UTC),
                "state": "",
                "terminated": None,
                "error": "",
            },
            id="no-labels-no-status: attempt 1, window ends at creation",
        ),
        pytest.param(
            {"metadata": {"name": "r"}, "status": {"applicationState": {"state": "RUNNING"}}},
            {"created": NOW, "window_to": NOW, "state": "RUNNING", "terminated": None},
            id="not-yet-stamped: created now",
        ),
        pytest.param(
            {
                "metadata": {"name": "r", "creationTimestamp": "2024-03-01T12:15:01Z", "labels": {}},
                "status": {"applicationState": {"state": "COMPLETED"}, "terminationTime": "2024-03-01T12:17:00Z"},
            },
            {"state": "COMPLETED", "terminated": datetime(2024, 3, 1, 12, 17, tzinfo=UTC), "error": ""},
            id="completed",
        ),
        pytest.param(
            {
                "metadata": {"name": "r", "creationTimestamp": "2024-03-01T12:15:01Z"},
                "status": {"applicationState": None, "terminationTime": None},
            },
            {"state": "", "terminated": None},
            id="null-status-fields",
        ),
    ],
)
def test_run_items_become_observed_runs(item: dict[str, Any], expected: dict[str, Any]) -> None:
    run = observed_run(item, NOW)
    assert {k: getattr(run, k) for k in expected} == expected
    (from_reading,) = observe(reading(runs=[item])).runs
    assert from_reading == run


@PROPERTY
@given(
    slot=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
    attempt=st.integers(min_value=1, max_value=20),
    generation=st.integers(min_value=0, max_value=10**6),
)
def test_a_run_reads_back_as_manifests_wrote_it(slot: datetime, attempt: int, generation: int) -> None:
    slot = slot.replace(second=0, microsecond=0)
    slot_id = slot.strftime("%Y%m%d%H%M")
    plan = RunPlan(run_name(NAME, slot_id, attempt), slot_id, attempt, generation, slot - timedelta(minutes=5))
    defaults = Defaults("image", "sa", Settings().main_application_file)
    item = spark_application(
        namespace="market-data",
        owner={"name": NAME, "uid": "u"},
        spec=parse_spec(NAME, SPEC),
        plan=plan,
        catalog="lake",
        upstream_targets={},
        defaults=defaults,
    )
    run = observed_run(item, NOW)
    assert (run.name, run.slot, run.attempt, run.generation, run.window_to) == (
        plan.name,
        plan.slot,
        plan.attempt,
        plan.generation,
        plan.window_to,
    )


def test_failure_detail_replaces_the_error_of_its_run_only() -> None:
    other = copy.deepcopy(FULL_ITEM)
    other["metadata"]["name"] = "silver-trades-202403011200-1"
    observed = observe(
        reading(runs=[FULL_ITEM, other], failure_details={"silver-trades-202403011215-2": "ValueError: bad column"})
    )
    assert [r.error for r in observed.runs] == ["ValueError: bad column", "driver pod failed"]


def test_an_empty_failure_detail_keeps_the_spark_operators_error() -> None:
    observed = observe(reading(runs=[FULL_ITEM], failure_details={"silver-trades-202403011215-2": ""}))
    assert observed.runs[0].error == "driver pod failed"


# --- the OffloadTable itself --------------------------------------------------------------------


def test_the_table_itself() -> None:
    status = {"lastTrigger": "one", "watermark": {"timestamp": "2024-03-01T12:00:00.000000Z", "sequence": 2}}
    body = table(status=status)
    body["metadata"]["annotations"] = {"offload.k2.io/trigger": "two", "other": "x"}
    readback = Readback(Watermark(NOW), 10, 100)
    observed = observe(reading(body, readback=readback))
    assert observed.name == NAME
    assert observed.generation == 4
    assert observed.created == CREATED
    assert observed.now == NOW
    assert observed.spec == parse_spec(NAME, SPEC)
    assert observed.spec_error is None
    assert observed.status == OffloadTableStatus.from_dict(status)
    assert observed.status.last_trigger == "one"
    assert observed.status.watermark is not None and observed.status.watermark.mark.sequence == 2
    assert observed.trigger == "two"
    assert observed.readback == readback
    assert (observed.runs, observed.upstream, observed.dependency_cycle) == ([], {}, None)


@pytest.mark.parametrize(
    ("annotations", "trigger"),
    [
        pytest.param(None, None, id="no-annotations"),
        pytest.param({"kopf.zalando.org/last-handled-configuration": "{}"}, None, id="other-annotations"),
        pytest.param({"offload.k2.io/trigger": "2024-03-01T12:19"}, "2024-03-01T12:19", id="trigger"),
    ],
)
def test_trigger_annotation(annotations: dict[str, str] | None, trigger: str | None) -> None:
    body = table()
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    assert observe(reading(body)).trigger == trigger


def test_a_new_table_without_generation_or_timestamp() -> None:
    body = table()
    del body["metadata"]["generation"], body["metadata"]["creationTimestamp"]
    observed = observe(reading(body))
    assert (observed.generation, observed.created, observed.status) == (0, NOW, OffloadTableStatus())


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        pytest.param({"layer": "platinum"}, "spec.layer: 'platinum' is not one of", id="layer"),
        pytest.param({"schedule": "every day"}, "spec.schedule/timeZone:", id="schedule"),
        pytest.param({"target": {"table": "t"}}, "spec.target.catalogRef.name is required", id="no-catalog"),
        pytest.param({"dependsOn": [NAME]}, f"spec.dependsOn: {NAME} depends on itself", id="self"),
        pytest.param({"dependsOn": ["Bad_Name"]}, "spec.dependsOn: 'Bad_Name' is not an OffloadTable name", id="dep"),
    ],
)
def test_spec_errors(spec: dict[str, Any], error: str) -> None:
    observed = observe(reading(table(**spec), catalog=None))
    assert observed.spec is None
    assert observed.spec_error is not None and observed.spec_error.startswith(error)
    assert observed.upstream == {}


# --- the catalog ConfigMap ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("read", "error"),
    [
        pytest.param(
            CatalogRead("iceberg-catalog", None, error=f"{UNREADABLE}: Not Found"),
            f"{UNREADABLE}: Not Found",
            id="configmap-unreadable",
        ),
        pytest.param(
            CatalogRead("iceberg-catalog", {**CATALOG_DATA, "ICEBERG_OFFLOAD_CATALOG_PASSWORD": "s3cr3t"}),
            "ConfigMap iceberg-catalog holds a password: use target.catalogPasswordSecretRef",
            id="password-in-configmap",
        ),
        pytest.param(
            CatalogRead("iceberg-catalog", {"ICEBERG_OFFLOAD_CATALOG_password": "s3cr3t"}),
            "ConfigMap iceberg-catalog holds a password: use target.catalogPasswordSecretRef",
            id="password-in-configmap-any-case",
        ),
        pytest.param(
            CatalogRead(
                "iceberg-catalog",
                {**CATALOG_DATA, "ICEBERG_OFFLOAD_CATALOG_PASSWORD": "s3cr3t"},
                error="Secret market-data/catalog cannot be read: Forbidden",
            ),
            "ConfigMap iceberg-catalog holds a password: use target.catalogPasswordSecretRef",
            id="password-in-configmap-before-the-secret",
        ),
        pytest.param(
            CatalogRead("iceberg-catalog", CATALOG_DATA, error="Secret market-data/catalog has no key 'password'"),
            "Secret market-data/catalog has no key 'password'",
            id="secret-unreadable",
        ),
        pytest.param(
            CatalogRead(
                "iceberg-catalog",
                {**CATALOG_DATA, "ICEBERG_OFFLOAD_CATALOG_WAREHOUS": "x", "ICEBERG_OFFLOAD_CATALOG_BRANCH": "main"},
            ),
            "ConfigMap iceberg-catalog: unknown keys ICEBERG_OFFLOAD_CATALOG_BRANCH, ICEBERG_OFFLOAD_CATALOG_WAREHOUS",
            id="unknown-keys-all-listed",
        ),
        pytest.param(
            CatalogRead("iceberg-catalog", {**CATALOG_DATA, "ICEBERG_OFFLOAD_CATALOG_TYPE": "hive"}),
            "ConfigMap iceberg-catalog: ICEBERG_OFFLOAD_CATALOG_TYPE: expected 'jdbc' or 'rest', got 'hive'",
            id="catalog-type",
        ),
        pytest.param(
            CatalogRead("iceberg-catalog", {"ICEBERG_OFFLOAD_CATALOG_URI": "jdbc:mysql://db/iceberg"}),
            "ConfigMap iceberg-catalog: ICEBERG_OFFLOAD_CATALOG_URI: expected jdbc:sqlite:<path> or "
            "jdbc:postgresql://host:port/db, got 'jdbc:mysql://db/iceberg'",
            id="jdbc-uri",
        ),
    ],
)
def test_configmap_errors(read: CatalogRead, error: str) -> None:
    observed = observe(reading(catalog=read))
    assert (observed.spec, observed.spec_error) == (None, error)
    with pytest.raises(SpecError, match=f"^{re.escape(error)}$"):
        catalog_settings(read)


def test_a_usable_catalog_takes_its_password_from_the_secret_and_ignores_other_keys() -> None:
    data = {**CATALOG_DATA, "ICEBERG_OFFLOAD_SUBWINDOW_MAX": "8", "JAVA_TOOL_OPTIONS": "-Xmx1g"}
    read = CatalogRead("iceberg-catalog", data, password="s3cr3t")
    assert catalog_settings(read) == CatalogSettings(
        name="lake",
        uri="jdbc:postgresql://pg:5432/iceberg",
        warehouse="s3://lake/warehouse",
        password="s3cr3t",
    )
    observed = observe(reading(catalog=read))
    assert (observed.spec, observed.spec_error) == (parse_spec(NAME, SPEC), None)


def test_a_rest_catalog_uri_is_not_checked_as_jdbc() -> None:
    data = {"ICEBERG_OFFLOAD_CATALOG_TYPE": "rest", "ICEBERG_OFFLOAD_CATALOG_URI": "https://catalog.example/api"}
    assert catalog_settings(CatalogRead("c", data)).uri == "https://catalog.example/api"


# --- upstream tables ----------------------------------------------------------------------------

MARK = {"timestamp": "2024-03-01T12:10:00.000000Z", "sequence": 7}


@pytest.mark.parametrize(
    ("upstream_status", "expected"),
    [
        pytest.param(None, Upstream(True), id="no-status-yet"),
        pytest.param({"rowCount": 0}, Upstream(True), id="no-watermark-yet"),
        pytest.param({"watermark": {"timestamp": ""}}, Upstream(True), id="empty-watermark"),
        pytest.param(
            {"watermark": MARK},
            Upstream(True, Watermark(datetime(2024, 3, 1, 12, 10, tzinfo=UTC), 7)),
            id="legacy-watermark",
        ),
        pytest.param(
            {"watermark": {"timestamp": "2024-03-01T12:10:00Z"}},
            Upstream(True, Watermark(datetime(2024, 3, 1, 12, 10, tzinfo=UTC))),
            id="watermark-without-sequence",
        ),
        pytest.param(
            {"watermark": {"timestamp": "2024-03-01T12:10:00Z", "sequence": None}},
            Upstream(True, Watermark(datetime(2024, 3, 1, 12, 10, tzinfo=UTC))),
            id="watermark-with-null-sequence",
        ),
    ],
)
def test_upstream_existence_and_watermark(upstream_status: dict[str, Any] | None, expected: Upstream) -> None:
    bronze = table("bronze-trades", status=upstream_status)
    observed = observe(reading(table(dependsOn=["bronze-trades", "bronze-quotes"]), tables=entries(bronze)))
    assert observed.upstream == {"bronze-trades": expected, "bronze-quotes": Upstream(False)}


def test_only_the_dependencies_are_observed_upstream() -> None:
    others = entries(table("bronze-trades", status={"watermark": MARK}), table("gold-candles"))
    assert observe(reading(tables=others)).upstream == {}


def test_the_index_entry_reads_like_the_whole_table() -> None:
    status = {"watermark": MARK, "lastScheduleTime": "2024-03-01T12:15:00Z", "activeRun": None, "rowCount": 9}
    bronze = table("bronze-trades", status=status, dependsOn=["raw"])
    entry = index_entry(bronze)
    assert entry == {
        "metadata": {"name": "bronze-trades"},
        "spec": {"dependsOn": ["raw"], "target": SPEC["target"]},
        "status": {"watermark": MARK, "lastScheduleTime": "2024-03-01T12:15:00Z", "activeRun": None},
    }
    assert upstream_of(entry) == upstream_of(bronze)
    bronze["status"]["watermark"]["sequence"] = 8  # kopf's body changes; the index keeps what it saw
    assert entry["status"]["watermark"]["sequence"] == 7


def test_the_index_entry_keeps_what_a_settled_slot_is_read_from() -> None:
    # A failed last run with a retry to come means the upstream has not settled its slot.
    failed = {
        "name": "bronze-trades-202403011215-1",
        "slot": "202403011215",
        "attempt": 1,
        "generation": 1,
        "windowTo": "2024-03-01T12:05:00.000000Z",
        "outcome": "Failed",
        "startTime": "2024-03-01T12:15:01Z",
    }
    status = {"watermark": MARK, "lastScheduleTime": "2024-03-01T12:15:00Z", "activeRun": None, "lastRun": failed}
    bronze = table("bronze-trades", status=status)
    assert upstream_of(bronze).settled_slot is None
    assert upstream_of(index_entry(bronze)) == upstream_of(bronze)
    status["lastRun"] = {**failed, "outcome": "Succeeded"}
    settled = upstream_of(index_entry(table("bronze-trades", status=status)))
    assert settled.settled_slot == datetime(2024, 3, 1, 12, 15, tzinfo=UTC)


def test_an_index_entry_of_a_bare_table() -> None:
    bare = {"metadata": {"name": "t"}}
    assert index_entry(bare) == {"metadata": {"name": "t"}, "spec": {"dependsOn": [], "target": {}}, "status": {}}


def test_upstream_targets_name_the_catalog_and_existing_upstreams_only() -> None:
    spec = parse_spec(NAME, {**SPEC, "dependsOn": ["bronze-trades", "bronze-quotes", "missing"]})
    bronze = table("bronze-trades", target={"catalogRef": {"name": "c"}, "namespace": "raw", "table": "trades"})
    quotes = table("bronze-quotes", target={"catalogRef": {"name": "c"}, "table": "quotes"})
    assert upstream_targets(spec, entries(bronze, quotes), "lake") == {
        "bronze-trades": "lake.raw.trades",
        "bronze-quotes": "lake.cold.quotes",
    }


# --- dependency cycles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("own", "others", "cycle"),
    [
        pytest.param([], {}, None, id="no-dependencies"),
        pytest.param(["a"], {"a": []}, None, id="chain"),
        pytest.param(["a"], {}, None, id="unknown-upstream"),
        pytest.param(["a"], {"a": [NAME]}, f"spec.dependsOn forms a cycle: {NAME} -> a -> {NAME}", id="two"),
        pytest.param(
            ["a"], {"a": ["b"], "b": [NAME]}, f"spec.dependsOn forms a cycle: {NAME} -> a -> b -> {NAME}", id="three"
        ),
        pytest.param(["a"], {"a": ["b"], "b": ["a"]}, None, id="a-cycle-upstream-not-through-this-table"),
        pytest.param([], {"a": [NAME], NAME: ["a"]}, None, id="own-dependsOn-from-the-body-not-a-stale-entry"),
    ],
)
def test_dependency_cycle(own: list[str], others: dict[str, list[str]], cycle: str | None) -> None:
    tables = entries(*(table(name, dependsOn=deps) for name, deps in others.items()))
    observed = observe(reading(table(dependsOn=own), tables=tables))
    assert observed.dependency_cycle == cycle


def test_a_cycle_is_reported_even_when_the_spec_is_invalid() -> None:
    tables = entries(table("a", dependsOn=[NAME]))
    observed = observe(reading(table(dependsOn=["a"], layer="platinum"), tables=tables))
    assert observed.spec is None
    assert observed.dependency_cycle == f"spec.dependsOn forms a cycle: {NAME} -> a -> {NAME}"


# --- determinism --------------------------------------------------------------------------------


@PROPERTY
@given(
    sequence=st.integers(min_value=0, max_value=10**9),
    minute=st.integers(min_value=0, max_value=59),
    trigger=st.one_of(st.none(), st.text(max_size=10)),
)
def test_the_same_reading_gives_the_same_observation(sequence: int, minute: int, trigger: str | None) -> None:
    mark = {"timestamp": f"2024-03-01T12:{minute:02d}:00Z", "sequence": sequence}
    body = table(dependsOn=["bronze-trades"])
    if trigger is not None:
        body["metadata"]["annotations"] = {"offload.k2.io/trigger": trigger}
    read = reading(body, runs=[FULL_ITEM], tables=entries(table("bronze-trades", status={"watermark": mark})))
    before = copy.deepcopy(read)
    assert observe(read) == observe(read)
    assert read == before, "observe() changed what was read"
    assert observe(read).upstream["bronze-trades"].watermark == Watermark(
        datetime(2024, 3, 1, 12, minute, tzinfo=UTC), sequence
    )
