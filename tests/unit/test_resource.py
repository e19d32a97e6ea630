"""The OffloadTable spec: defaults, checks and the dependsOn graph (iceberg_offload.operator.spec)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.repair import LateDataMode, LateDataPolicy
from iceberg_offload.core.tables import SourceSpec, SpecError, TableSpec, TargetSpec
from iceberg_offload.operator.spec import (
    Connection,
    OffloadTableSpec,
    SecretRef,
    SparkSpec,
    dependency_cycle,
    parse_duration,
    parse_quantity,
    parse_spec,
)

PROPERTY = settings(max_examples=200, deadline=None)

DELETE = object()
CRD = Path(__file__).resolve().parents[2] / "crds" / "offloadtables.offload.k2.io.yaml"
MINIMAL: dict[str, Any] = {
    "layer": "bronze",
    "source": {"table": "trades", "timestampColumn": "exchange_timestamp", "connection": {"host": "clickhouse"}},
    "target": {"catalogRef": {"name": "iceberg-catalog"}, "table": "bronze_trades"},
}
FULL: dict[str, Any] = {
    "layer": "silver",
    "source": {
        "database": "market",
        "table": "silver_trades",
        "timestampColumn": "ts",
        "sequenceColumn": "seq",
        "candleInterval": "1h",
        "connection": {
            "host": "ch.example",
            "port": 8443,
            "secure": True,
            "user": "offload",
            "passwordSecretRef": {"name": "ch-secret", "key": "password"},
        },
    },
    "target": {
        "catalogRef": {"name": "cat"},
        "catalogPasswordSecretRef": {"name": "cat-secret", "key": "pw"},
        "namespace": "lake",
        "table": "silver",
    },
    "dependsOn": ["bronze-a", "bronze-b"],
    "schedule": "0 * * * *",
    "timeZone": "Europe/London",
    "safetyBuffer": "10m",
    "concurrencyPolicy": "Replace",
    "suspend": True,
    "retryPolicy": {"maxAttempts": 5, "delaySeconds": 0},
    "runDeadlineSeconds": 600,
    "spark": {
        "image": "registry/spark:1",
        "imagePullPolicy": "Always",
        "sparkVersion": "3.5.9",
        "serviceAccount": "spark-sa",
        "driver": {"cores": 2, "memory": "2g"},
        "executor": {"instances": 4, "cores": 3, "memory": "8g"},
        "sparkConf": {"spark.sql.shuffle.partitions": "8"},
    },
    "successfulRunHistoryLimit": 1,
    "failedRunHistoryLimit": 0,
    "lateData": {"mode": "report", "lookback": "6h", "bucket": "15m"},
}


def with_(path: str, value: Any, base: dict[str, Any] = MINIMAL) -> dict[str, Any]:
    """A copy of base with path (dotted) set to value; value DELETE removes the key."""
    spec = copy.deepcopy(base)
    node = spec
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


# --- defaults ------------------------------------------------------------------------------------


DEFAULTS = [
    ("name", "trades-bronze"),
    ("layer", "bronze"),
    ("source", SourceSpec("default", "trades", "exchange_timestamp", None)),
    ("connection", Connection("clickhouse", 8123, False, "default", None)),
    ("catalog_config_map", "iceberg-catalog"),
    ("catalog_password", None),
    ("target_namespace", "cold"),
    ("target_table", "bronze_trades"),
    ("depends_on", ()),
    ("schedule", "*/15 * * * *"),
    ("time_zone", "UTC"),
    ("buffer", timedelta(minutes=5)),
    ("candle_interval", None),
    ("concurrency_policy", "Forbid"),
    ("suspend", False),
    ("max_attempts", 3),
    ("retry_delay", timedelta(seconds=60)),
    ("run_deadline", timedelta(seconds=3600)),
    ("spark", SparkSpec()),
    ("successful_history", 3),
    ("failed_history", 3),
    ("late_data", LateDataPolicy(LateDataMode.REPAIR, timedelta(hours=24), timedelta(hours=1))),
]


@pytest.mark.parametrize(("attribute", "expected"), [pytest.param(a, e, id=a) for a, e in DEFAULTS])
def test_defaults(attribute: str, expected: Any) -> None:
    assert getattr(parse_spec("trades-bronze", MINIMAL), attribute) == expected


def test_spark_defaults() -> None:
    spark = SparkSpec()
    assert (spark.image, spark.service_account) == (None, None)  # the operator's settings fill these in
    assert (spark.image_pull_policy, spark.spark_version) == ("IfNotPresent", "3.5.9")
    assert (spark.driver_cores, spark.driver_memory) == (1, "1g")
    assert (spark.executor_instances, spark.executor_cores, spark.executor_memory) == (1, 1, "1g")
    assert dict(spark.spark_conf) == {}


def crd_defaults() -> dict[str, Any]:
    """Every default in the CRD's spec schema, by dotted path."""
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found: dict[str, Any] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        if "default" in node and node["default"] != {}:
            found[path] = node["default"]
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}" if path else name)

    walk(schema["properties"]["spec"], "")
    return found


SPEC_ATTRIBUTE: dict[str, Callable[[OffloadTableSpec], Any]] = {
    "source.database": lambda s: s.source.database,
    "source.connection.port": lambda s: s.connection.port,
    "source.connection.secure": lambda s: s.connection.secure,
    "source.connection.user": lambda s: s.connection.user,
    "target.namespace": lambda s: s.target_namespace,
    "schedule": lambda s: s.schedule,
    "timeZone": lambda s: s.time_zone,
    "safetyBuffer": lambda s: s.buffer,
    "concurrencyPolicy": lambda s: s.concurrency_policy,
    "suspend": lambda s: s.suspend,
    "retryPolicy.maxAttempts": lambda s: s.max_attempts,
    "retryPolicy.delaySeconds": lambda s: int(s.retry_delay.total_seconds()),
    "runDeadlineSeconds": lambda s: int(s.run_deadline.total_seconds()),
    "spark.imagePullPolicy": lambda s: s.spark.image_pull_policy,
    "spark.sparkVersion": lambda s: s.spark.spark_version,
    "spark.driver.cores": lambda s: s.spark.driver_cores,
    "spark.driver.memory": lambda s: s.spark.driver_memory,
    "spark.executor.instances": lambda s: s.spark.executor_instances,
    "spark.executor.cores": lambda s: s.spark.executor_cores,
    "spark.executor.memory": lambda s: s.spark.executor_memory,
    "successfulRunHistoryLimit": lambda s: s.successful_history,
    "failedRunHistoryLimit": lambda s: s.failed_history,
    "lateData.mode": lambda s: s.late_data.mode.value,
    "lateData.lookback": lambda s: s.late_data.lookback,
    "lateData.bucket": lambda s: s.late_data.bucket,
    "maintenance.enabled": lambda s: s.maintenance.enabled,
    "maintenance.schedule": lambda s: s.maintenance.schedule,
    "maintenance.snapshotRetention.maxAge": lambda s: s.maintenance.policy.max_snapshot_age,
    "maintenance.snapshotRetention.retainLast": lambda s: s.maintenance.policy.retain_last,
    "maintenance.targetFileSize": lambda s: s.maintenance.policy.target_file_size,
    "maintenance.orphanFileAge": lambda s: s.maintenance.policy.orphan_age,
    "schemaEvolution": lambda s: s.schema_evolution,
}
DURATIONS = {
    "safetyBuffer",
    "lateData.lookback",
    "lateData.bucket",
    "maintenance.snapshotRetention.maxAge",
    "maintenance.orphanFileAge",
}
QUANTITIES = {"maintenance.targetFileSize"}


def test_parse_spec_defaults_match_the_crd() -> None:
    """A spec that never went through the API server's defaulting parses like one that did."""
    defaults = crd_defaults()
    assert set(defaults) == set(SPEC_ATTRIBUTE)
    parsed = parse_spec("t", MINIMAL)
    for path, default in defaults.items():
        expected = parse_duration(default, path) if path in DURATIONS else default
        expected = parse_quantity(default, path) if path in QUANTITIES else expected
        assert SPEC_ATTRIBUTE[path](parsed) == expected, path
        defaulted = parse_spec("t", with_(path, default))
        assert defaulted == parsed, path


def test_full_spec() -> None:
    spec = parse_spec("silver-trades", FULL)
    assert spec == OffloadTableSpec(
        name="silver-trades",
        layer="silver",
        source=SourceSpec("market", "silver_trades", "ts", "seq"),
        connection=Connection("ch.example", 8443, True, "offload", SecretRef("ch-secret", "password")),
        catalog_config_map="cat",
        catalog_password=SecretRef("cat-secret", "pw"),
        target_namespace="lake",
        target_table="silver",
        depends_on=("bronze-a", "bronze-b"),
        schedule="0 * * * *",
        time_zone="Europe/London",
        buffer=timedelta(minutes=10),
        candle_interval=timedelta(hours=1),
        concurrency_policy="Replace",
        suspend=True,
        max_attempts=5,
        retry_delay=timedelta(0),
        run_deadline=timedelta(seconds=600),
        spark=SparkSpec(
            image="registry/spark:1",
            image_pull_policy="Always",
            spark_version="3.5.9",
            service_account="spark-sa",
            driver_cores=2,
            driver_memory="2g",
            executor_instances=4,
            executor_cores=3,
            executor_memory="8g",
            spark_conf={"spark.sql.shuffle.partitions": "8"},
        ),
        successful_history=1,
        failed_history=0,
        late_data=LateDataPolicy(LateDataMode.REPORT, timedelta(hours=6), timedelta(minutes=15)),
    )


def test_table_spec_is_the_jobs_view() -> None:
    spec = parse_spec("silver-trades", FULL)
    assert spec.table_spec("demo") == TableSpec(
        name="silver_trades",  # the source table: the row key of offload_watermarks
        layer="silver",
        source=SourceSpec("market", "silver_trades", "ts", "seq"),
        target=TargetSpec("demo", "lake", "silver"),
        buffer=timedelta(minutes=10),  # upstream tables reach the job as --upstream arguments
        candle_interval=timedelta(hours=1),
    )


@pytest.mark.parametrize(
    ("path", "value", "attribute", "expected"),
    [
        pytest.param("safetyBuffer", "0s", "buffer", timedelta(0), id="zero-buffer"),
        pytest.param("retryPolicy", None, "max_attempts", 3, id="null-retry-policy"),
        pytest.param("spark", None, "spark", SparkSpec(), id="null-spark"),
        pytest.param("spark.sparkConf", None, "spark", SparkSpec(), id="null-spark-conf"),
        pytest.param("dependsOn", None, "depends_on", (), id="null-depends-on"),
        pytest.param("source.candleInterval", "1d", "candle_interval", timedelta(days=1), id="candle-1d"),
        pytest.param("retryPolicy", {"delaySeconds": 0}, "retry_delay", timedelta(0), id="no-retry-delay"),
        pytest.param("successfulRunHistoryLimit", 0, "successful_history", 0, id="keep-no-history"),
    ],
)
def test_edge_values(path: str, value: Any, attribute: str, expected: Any) -> None:
    assert getattr(parse_spec("t", with_(path, value)), attribute) == expected


# --- lateData ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("late_data", "expected"),
    [
        pytest.param(None, LateDataPolicy(), id="null"),
        pytest.param({}, LateDataPolicy(), id="empty"),
        pytest.param({"mode": "report"}, LateDataPolicy(mode=LateDataMode.REPORT), id="report"),
        pytest.param(
            {"lookback": "2d", "bucket": "30m"},
            LateDataPolicy(lookback=timedelta(days=2), bucket=timedelta(minutes=30)),
            id="long-lookback-small-buckets",
        ),
        pytest.param(
            {"lookback": "1h", "bucket": "1h"},
            LateDataPolicy(lookback=timedelta(hours=1), bucket=timedelta(hours=1)),
            id="one-bucket",
        ),
        pytest.param(
            {"lookback": "90m", "bucket": "1h"},
            LateDataPolicy(lookback=timedelta(minutes=90), bucket=timedelta(hours=1)),
            id="bucket-need-not-divide-the-lookback",
        ),
    ],
)
def test_late_data(late_data: Any, expected: LateDataPolicy) -> None:
    assert parse_spec("t", with_("lateData", late_data)).late_data == expected


@pytest.mark.parametrize(
    ("late_data", "field", "shown"),
    [
        pytest.param({"mode": "fix"}, "spec.lateData.mode", "'fix'", id="mode-unknown"),
        pytest.param({"mode": "Repair"}, "spec.lateData.mode", "'Repair'", id="mode-case"),
        pytest.param({"lookback": "0h"}, "spec.lateData.lookback", "'0h'", id="lookback-zero"),
        pytest.param({"lookback": "1 day"}, "spec.lateData.lookback", "'1 day'", id="lookback-not-duration"),
        pytest.param({"bucket": "0s"}, "spec.lateData.bucket", "'0s'", id="bucket-zero"),
        pytest.param({"bucket": "1w"}, "spec.lateData.bucket", "'1w'", id="bucket-unit"),
        pytest.param({"lookback": "1h", "bucket": "2h"}, "spec.lateData.bucket", "'2h'", id="bucket-over-lookback"),
        pytest.param({"bucket": "25h"}, "spec.lateData.bucket", "'25h'", id="bucket-over-default-lookback"),
    ],
)
def test_late_data_error_is_one_line_naming_the_field(late_data: dict[str, Any], field: str, shown: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("t", with_("lateData", late_data))
    message = str(info.value)
    assert message.startswith(f"{field}: ") and shown in message and "\n" not in message


@PROPERTY
@given(lookback=st.integers(1, 10**6), bucket=st.integers(1, 10**6))
def test_late_data_bucket_is_accepted_exactly_when_within_the_lookback(lookback: int, bucket: int) -> None:
    spec = with_("lateData", {"lookback": f"{lookback}s", "bucket": f"{bucket}s"})
    if bucket <= lookback:
        policy = parse_spec("t", spec).late_data
        assert (policy.lookback, policy.bucket) == (timedelta(seconds=lookback), timedelta(seconds=bucket))
    else:
        with pytest.raises(SpecError, match=r"^spec\.lateData\.bucket: "):
            parse_spec("t", spec)


# --- errors: each names the field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        pytest.param("layer", DELETE, "spec.layer", id="layer-missing"),
        pytest.param("layer", "platinum", "spec.layer", id="layer-unknown"),
        pytest.param("source.table", DELETE, "spec.source.table", id="source-table-missing"),
        pytest.param("source.table", "", "spec.source.table", id="source-table-empty"),
        pytest.param("source.table", "my-table", "spec.source", id="source-table-not-identifier"),
        pytest.param("source.database", "1db", "spec.source", id="source-database-not-identifier"),
        pytest.param("source.timestampColumn", DELETE, "spec.source.timestampColumn", id="timestamp-column-missing"),
        pytest.param("source.timestampColumn", "ts col", "spec.source", id="timestamp-column-not-identifier"),
        pytest.param("source.sequenceColumn", "seq-no", "spec.source", id="sequence-column-not-identifier"),
        pytest.param("source.candleInterval", "1w", "spec.source.candleInterval", id="candle-interval-unit"),
        pytest.param("source.connection", DELETE, "spec.source.connection.host", id="connection-missing"),
        pytest.param("source.connection.host", "", "spec.source.connection.host", id="host-empty"),
        pytest.param("source.connection.port", 0, "spec.source.connection.port", id="port-zero"),
        pytest.param("source.connection.port", 65536, "spec.source.connection.port", id="port-too-big"),
        pytest.param("source.connection.port", "8123", "spec.source.connection.port", id="port-string"),
        pytest.param("source.connection.port", True, "spec.source.connection.port", id="port-bool"),
        pytest.param(
            "source.connection.passwordSecretRef",
            {"name": "s"},
            "spec.source.connection.passwordSecretRef",
            id="password-ref-without-key",
        ),
        pytest.param(
            "source.connection.passwordSecretRef",
            "s/password",
            "spec.source.connection.passwordSecretRef",
            id="password-ref-not-object",
        ),
        pytest.param(
            "target.catalogPasswordSecretRef",
            {"key": "pw"},
            "spec.target.catalogPasswordSecretRef",
            id="catalog-password-ref-without-name",
        ),
        pytest.param("target.table", DELETE, "spec.target.table", id="target-table-missing"),
        pytest.param("target.catalogRef", DELETE, "spec.target.catalogRef.name", id="catalog-ref-missing"),
        pytest.param("target.catalogRef.name", "", "spec.target.catalogRef.name", id="catalog-ref-name-empty"),
        pytest.param("dependsOn", ["Bronze_Trades"], "spec.dependsOn", id="depends-on-not-a-name"),
        pytest.param("dependsOn", ["t"], "spec.dependsOn", id="depends-on-itself"),
        pytest.param("schedule", "every 5 minutes", "spec.schedule", id="schedule-not-cron"),
        pytest.param("schedule", "*/5 * * * * *", "spec.schedule", id="schedule-six-fields"),
        pytest.param("schedule", "@hourly", "spec.schedule", id="schedule-macro"),
        pytest.param("schedule", "61 * * * *", "spec.schedule", id="schedule-minute-out-of-range"),
        pytest.param("timeZone", "Mars/Olympus_Mons", "timeZone", id="time-zone-unknown"),
        pytest.param("timeZone", "", "timeZone", id="time-zone-empty"),
        pytest.param("safetyBuffer", "5 minutes", "spec.safetyBuffer", id="buffer-not-duration"),
        pytest.param("safetyBuffer", "-5m", "spec.safetyBuffer", id="buffer-negative"),
        pytest.param("concurrencyPolicy", "Allow", "spec.concurrencyPolicy", id="policy-allow"),
        pytest.param("retryPolicy.maxAttempts", 0, "spec.retryPolicy.maxAttempts", id="max-attempts-zero"),
        pytest.param("retryPolicy.maxAttempts", 2.5, "spec.retryPolicy.maxAttempts", id="max-attempts-float"),
        pytest.param("retryPolicy.delaySeconds", -1, "spec.retryPolicy.delaySeconds", id="delay-negative"),
        pytest.param("runDeadlineSeconds", 0, "spec.runDeadlineSeconds", id="deadline-zero"),
        pytest.param("spark.driver.cores", 0, "spec.spark.driver.cores", id="driver-cores-zero"),
        pytest.param("spark.executor.instances", 0, "spec.spark.executor.instances", id="executor-instances-zero"),
        pytest.param("spark.executor.cores", "2", "spec.spark.executor.cores", id="executor-cores-string"),
        pytest.param("spark.sparkConf", {"spark.x": 1}, "spec.spark.sparkConf", id="spark-conf-not-string"),
        pytest.param("successfulRunHistoryLimit", -1, "spec.successfulRunHistoryLimit", id="history-negative"),
        pytest.param("failedRunHistoryLimit", "3", "spec.failedRunHistoryLimit", id="failed-history-string"),
    ],
)
def test_spec_error_names_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("t", with_(path, value))
    assert field in str(info.value)
    if isinstance(value, str) and value and "SecretRef" not in path:
        assert value in str(info.value)  # and shows the value at fault


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param("target.table", "bad-table", id="target-table"),
        pytest.param("target.namespace", "bad-ns", id="target-namespace"),
    ],
)
def test_target_identifier_error_names_the_field(path: str, value: str) -> None:
    with pytest.raises(SpecError, match=rf"spec\.{path}"):
        parse_spec("t", with_(path, value))


def test_zero_candle_interval_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"spec\.source\.candleInterval"):
        parse_spec("t", with_("source.candleInterval", "0m"))


def test_errors_are_spec_errors_not_crashes_for_odd_types() -> None:
    for path, value in [("layer", 5), ("source", "trades"), ("target", []), ("dependsOn", ["UPPER"])]:
        with pytest.raises(SpecError):
            parse_spec("t", with_(path, value))


# --- parse_duration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0), ("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800), (" 15m ", 900), ("007s", 7)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text, "spec.x") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "1.5h", "5M", "-1m", "1w", "5 m", "1h30m", "PT5M"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_duration(text, "spec.safetyBuffer")
    assert str(info.value).startswith("spec.safetyBuffer: ")
    assert repr(text) in str(info.value)


@PROPERTY
@given(amount=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(["s", "m", "h", "d"]))
def test_parse_duration_property(amount: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{amount}{unit}", "x").total_seconds() == amount * factor


# --- dependency_cycle ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "graph", "expected"),
    [
        pytest.param("a", {}, None, id="unknown-table"),
        pytest.param("a", {"a": []}, None, id="no-dependencies"),
        pytest.param("a", {"a": ["b"], "b": ["c"], "c": []}, None, id="chain"),
        pytest.param("a", {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None, id="diamond"),
        pytest.param("a", {"a": ["ghost"]}, None, id="missing-upstream-is-not-a-cycle"),
        pytest.param("a", {"a": ["a"]}, "a -> a", id="self"),
        pytest.param("a", {"a": ["b"], "b": ["a"]}, "a -> b -> a", id="two"),
        pytest.param("a", {"a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a", id="three"),
        pytest.param("b", {"a": ["b"], "b": ["c"], "c": ["a"]}, "b -> c -> a -> b", id="three-from-b"),
        pytest.param("a", {"a": ["x", "b"], "x": [], "b": ["a"]}, "a -> b -> a", id="cycle-on-second-branch"),
        pytest.param("a", {"a": ["b"], "b": ["c"], "c": ["b"]}, None, id="cycle-downstream-not-through-a"),
    ],
)
def test_dependency_cycle(name: str, graph: dict[str, list[str]], expected: str | None) -> None:
    found = dependency_cycle(name, graph)
    if expected is None:
        assert found is None
    else:
        assert found == f"spec.dependsOn forms a cycle: {expected}"


graphs = st.dictionaries(
    st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdef"), max_size=3, unique=True), max_size=6
)


def reaches(graph: dict[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(graph.get(start, []))
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, []))
    return False


@PROPERTY
@given(name=st.sampled_from("abcdef"), graph=graphs)
def test_dependency_cycle_message_is_a_real_cycle_through_the_table(name: str, graph: dict[str, list[str]]) -> None:
    found = dependency_cycle(name, graph)
    if found is not None:
        path = found.removeprefix("spec.dependsOn forms a cycle: ").split(" -> ")
        assert path[0] == path[-1] == name
        assert all(b in graph[a] for a, b in itertools.pairwise(path))
    if not reaches(graph, name, name):
        assert found is None


@pytest.mark.parametrize(
    "graph",
    [
        pytest.param({"x": ["a", "y"], "a": ["b"], "b": ["a"], "y": ["x"]}, id="separate-cycle-first"),
        pytest.param({"x": ["a"], "a": ["b"], "b": ["a", "x"]}, id="inner-cycle-of-the-same-loop-first"),
    ],
)
def test_dependency_cycle_behind_another_cycle(graph: dict[str, list[str]]) -> None:
    found = dependency_cycle("x", graph)
    assert found is not None and found.startswith("spec.dependsOn forms a cycle: x -> ")
