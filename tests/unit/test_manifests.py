"""The SparkApplication of one run (iceberg_offload.operator.manifests), checked against the job's own parser."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.settings import ClickHouseSettings, Settings, known_variables
from iceberg_offload.core.tables import SpecError
from iceberg_offload.job import cli as offload_job
from iceberg_offload.job.run import RunRequest
from iceberg_offload.operator.decide import (
    ANNOTATION_WINDOW_TO,
    LABEL_ATTEMPT,
    LABEL_GENERATION,
    LABEL_SLOT,
    LABEL_TABLE,
    RunPlan,
    manual_slot_id,
    run_name,
    schedule_slot_id,
)
from iceberg_offload.operator.manifests import Defaults, job_arguments, job_env, spark_application
from iceberg_offload.operator.spec import OffloadTableSpec, parse_spec

PROPERTY = settings(max_examples=100, deadline=None)

NAMESPACE = "market-data"
OWNER = {"name": "silver-trades", "uid": "6f1c2b1e-0000-4000-8000-000000000001"}
DEFAULTS = Defaults(
    image="ghcr.io/k2/iceberg-offload-spark:0.1.0",
    service_account="iceberg-offload-spark",
    main_application_file=Settings().main_application_file,
)
CATALOG = "lake"
SECRETS = ("ch-credentials", "catalog-credentials")
BASE: dict[str, Any] = {
    "layer": "silver",
    "source": {
        "database": "market",
        "table": "silver_trades",
        "timestampColumn": "exchange_timestamp",
        "sequenceColumn": "sequence",
        "connection": {
            "host": "clickhouse.market-data.svc",
            "port": 8443,
            "secure": True,
            "user": "offload",
            "passwordSecretRef": {"name": "ch-credentials", "key": "password"},
        },
    },
    "target": {
        "catalogRef": {"name": "iceberg-catalog"},
        "catalogPasswordSecretRef": {"name": "catalog-credentials", "key": "pg-password"},
        "namespace": "cold",
        "table": "silver_trades",
    },
    "dependsOn": ["bronze-binance", "bronze-kraken"],
}
UPSTREAM_TARGETS = {
    "bronze-binance": "lake.cold.bronze_trades_binance",
    "bronze-kraken": "lake.cold.bronze_trades_kraken",
}
SLOT = datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
PLAN = RunPlan(
    name=run_name("silver-trades", schedule_slot_id(SLOT), 2),
    slot=schedule_slot_id(SLOT),
    attempt=2,
    generation=5,
    window_to=SLOT - timedelta(minutes=5),
)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def make_spec(name: str = "silver-trades", **fields: Any) -> OffloadTableSpec:
    return parse_spec(name, {**BASE, **fields})


SPEC = make_spec()


def manifest(spec: OffloadTableSpec = SPEC, plan: RunPlan = PLAN, **kwargs: Any) -> dict[str, Any]:
    return spark_application(
        namespace=kwargs.get("namespace", NAMESPACE),
        owner=kwargs.get("owner", OWNER),
        spec=spec,
        plan=plan,
        catalog=kwargs.get("catalog", CATALOG),
        upstream_targets=kwargs.get("upstream_targets", UPSTREAM_TARGETS),
        defaults=kwargs.get("defaults", DEFAULTS),
    )


def parsed_request(args: list[str]) -> RunRequest:
    return offload_job.request_from_args(offload_job.parser().parse_args(args))


# --- the SparkApplication ----------------------------------------------------------------------------


def test_identity_owner_and_labels() -> None:
    app = manifest()
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert app["kind"] == "SparkApplication"
    meta = app["metadata"]
    assert (meta["name"], meta["namespace"]) == ("silver-trades-202403310100-2", NAMESPACE)
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "offload.k2.io/v1alpha1",
            "kind": "OffloadTable",
            "name": "silver-trades",
            "uid": OWNER["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "iceberg-offload",
        "app.kubernetes.io/name": "iceberg-offload-run",
        LABEL_TABLE: "silver-trades",
        LABEL_SLOT: "202403310100",
        LABEL_ATTEMPT: "2",
        LABEL_GENERATION: "5",
    }
    assert meta["annotations"] == {ANNOTATION_WINDOW_TO: "2024-03-31T00:55:00.000000Z"}
    assert app["spec"]["driver"]["labels"] == meta["labels"]
    assert app["spec"]["executor"]["labels"] == meta["labels"]


def test_labels_and_annotation_are_what_the_controller_reads_back() -> None:
    """observe.observed_run turns these labels back into slot, attempt, generation and window."""
    meta = manifest()["metadata"]
    assert meta["labels"][LABEL_SLOT] == PLAN.slot
    assert int(meta["labels"][LABEL_ATTEMPT]) == PLAN.attempt
    assert int(meta["labels"][LABEL_GENERATION]) == PLAN.generation
    parsed = datetime.fromisoformat(meta["annotations"][ANNOTATION_WINDOW_TO].replace("Z", "+00:00"))
    assert parsed == PLAN.window_to


def test_spark_settings_from_spec_and_defaults() -> None:
    spec = manifest()["spec"]
    assert (spec["type"], spec["pythonVersion"], spec["mode"]) == ("Python", "3", "cluster")
    assert spec["image"] == DEFAULTS.image
    assert spec["imagePullPolicy"] == "IfNotPresent"
    assert spec["mainApplicationFile"] == "local:///opt/iceberg-offload/spark_jobs/offload.py"
    assert spec["sparkVersion"] == "3.5.9"
    assert spec["restartPolicy"] == {"type": "Never"}  # retries are the operator's
    assert spec["sparkConf"] == {"spark.sql.session.timeZone": "UTC"}
    assert {k: spec["driver"][k] for k in ("cores", "memory", "serviceAccount")} == {
        "cores": 1,
        "memory": "1g",
        "serviceAccount": DEFAULTS.service_account,
    }
    assert {k: spec["executor"][k] for k in ("instances", "cores", "memory")} == {
        "instances": 1,
        "cores": 1,
        "memory": "1g",
    }


def test_spark_settings_from_a_full_spec() -> None:
    spark = {
        "image": "registry.example/spark:2",
        "imagePullPolicy": "Always",
        "sparkVersion": "3.5.9",
        "serviceAccount": "custom-sa",
        "driver": {"cores": 2, "memory": "3g"},
        "executor": {"instances": 5, "cores": 4, "memory": "16g"},
        "sparkConf": {"spark.sql.shuffle.partitions": "64"},
    }
    spec = manifest(make_spec(spark=spark))["spec"]
    assert (spec["image"], spec["imagePullPolicy"], spec["sparkVersion"]) == (
        "registry.example/spark:2",
        "Always",
        "3.5.9",
    )
    assert spec["sparkConf"] == {"spark.sql.session.timeZone": "UTC", "spark.sql.shuffle.partitions": "64"}
    assert (spec["driver"]["cores"], spec["driver"]["memory"], spec["driver"]["serviceAccount"]) == (
        2,
        "3g",
        "custom-sa",
    )
    assert (spec["executor"]["instances"], spec["executor"]["cores"], spec["executor"]["memory"]) == (5, 4, "16g")
    assert "serviceAccount" not in spec["executor"]


def test_manifest_is_json_and_deterministic() -> None:
    assert json.dumps(manifest(), sort_keys=True) == json.dumps(manifest(), sort_keys=True)


# --- environment and secrets -------------------------------------------------------------------------


def test_env_connection_settings_and_secret_references() -> None:
    assert job_env(SPEC) == [
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_HOST", "value": "clickhouse.market-data.svc"},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "value": "8443"},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_USER", "value": "offload"},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_SECURE", "value": "true"},
        {"name": "ICEBERG_OFFLOAD_CLICKHOUSE_DATABASE", "value": "market"},
        {
            "name": "ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "ch-credentials", "key": "password"}},
        },
        {
            "name": "ICEBERG_OFFLOAD_CATALOG_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "catalog-credentials", "key": "pg-password"}},
        },
    ]


def test_no_password_reference_without_secret_refs() -> None:
    base = {**BASE, "source": {**BASE["source"], "connection": {"host": "ch"}}, "target": {**BASE["target"]}}
    del base["target"]["catalogPasswordSecretRef"]
    env = job_env(parse_spec("t", base))
    assert [e["name"] for e in env if "PASSWORD" in e["name"]] == []
    assert {e["name"]: e["value"] for e in env}["ICEBERG_OFFLOAD_CLICKHOUSE_SECURE"] == "false"


def test_pods_get_env_and_catalog_config_map() -> None:
    spec = manifest()["spec"]
    for pod in ("driver", "executor"):
        assert spec[pod]["env"] == job_env(SPEC)
        assert spec[pod]["envFrom"] == [{"configMapRef": {"name": "iceberg-catalog"}}]


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in walk(value, f"{path}[{i}]")]
    return [(path, node)]


def test_no_secret_value_anywhere_in_the_manifest() -> None:
    app = manifest()
    for pod in ("driver", "executor"):
        for entry in app["spec"][pod]["env"]:
            if "PASSWORD" in entry["name"]:
                assert set(entry) == {"name", "valueFrom"}
                assert set(entry["valueFrom"]) == {"secretKeyRef"}
    for path, value in walk(app):
        assert "password" not in path.split(".")[-1].lower(), path
        if ".valueFrom.secretKeyRef" not in path:
            assert value not in SECRETS, f"{path} carries a Secret name"
    assert not any("pass" in arg.lower() for arg in app["spec"]["arguments"])
    assert not any(key.lower().endswith("password") for key in app["spec"]["sparkConf"])


def test_env_is_accepted_by_the_jobs_settings() -> None:
    """Every variable is one the job knows (Settings.from_env refuses unknown ICEBERG_OFFLOAD_*)."""
    env = job_env(SPEC)
    assert {e["name"] for e in env} <= set(known_variables())
    resolved = {e["name"]: e.get("value", "s3cret") for e in env}
    resolved |= {"ICEBERG_OFFLOAD_CATALOG_NAME": CATALOG, "ICEBERG_OFFLOAD_CATALOG_TYPE": "rest"}
    settings_ = Settings.from_env(resolved)
    assert settings_.clickhouse == ClickHouseSettings(
        host="clickhouse.market-data.svc", port=8443, user="offload", password="s3cret", database="market", secure=True
    )
    assert settings_.catalog.password == "s3cret"


# --- arguments, read back with the job's own parser --------------------------------------------------


def test_arguments_parse_back_to_the_table_spec_window_and_upstreams() -> None:
    args = manifest()["spec"]["arguments"]
    assert args == job_arguments(SPEC, PLAN, CATALOG, UPSTREAM_TARGETS)
    request = parsed_request(args)
    assert request.spec == SPEC.table_spec(CATALOG)
    assert request.spec.target.identifier == "lake.cold.silver_trades"
    assert request.requested_to == PLAN.window_to
    assert request.requested_from is None
    assert request.now is None  # the job's own clock; the window end is fixed by --to
    assert dict(request.upstream) == UPSTREAM_TARGETS
    assert request.run_id == PLAN.name  # the snapshot summary's run id, found again by the readback
    assert request.mirror is False  # the operator mirrors finished runs itself


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="sequence-and-upstreams"),
        pytest.param(
            {"source": {**BASE["source"], "sequenceColumn": None}, "dependsOn": []}, id="no-sequence-no-upstream"
        ),
        pytest.param(
            {"source": {**BASE["source"], "candleInterval": "15m", "sequenceColumn": None}, "layer": "gold"},
            id="candles",
        ),
        pytest.param({"safetyBuffer": "0s"}, id="no-buffer"),
        pytest.param({"safetyBuffer": "2h"}, id="long-buffer"),
        pytest.param({"source": {**BASE["source"], "database": "default"}}, id="default-database"),
    ],
)
def test_arguments_round_trip(fields: dict[str, Any]) -> None:
    spec = make_spec(**fields)
    targets = {name: UPSTREAM_TARGETS[name] for name in spec.depends_on}
    request = parsed_request(job_arguments(spec, PLAN, CATALOG, targets))
    assert request.spec == spec.table_spec(CATALOG)
    assert request.spec.buffer == spec.buffer
    assert request.spec.candle_interval == spec.candle_interval
    assert dict(request.upstream) == targets
    assert request.requested_to == PLAN.window_to


@pytest.mark.parametrize(
    ("late_data", "expected"),
    [
        pytest.param(
            None,
            ["--late-data", "repair", "--lookback-seconds", "86400", "--audit-bucket-seconds", "3600"],
            id="default-repair",
        ),
        pytest.param(
            {"mode": "report"},
            ["--late-data", "report", "--lookback-seconds", "86400", "--audit-bucket-seconds", "3600"],
            id="report",
        ),
        pytest.param(
            {"mode": "repair", "lookback": "7d", "bucket": "15m"},
            ["--late-data", "repair", "--lookback-seconds", "604800", "--audit-bucket-seconds", "900"],
            id="week-in-quarter-hours",
        ),
        pytest.param(
            {"lookback": "90s", "bucket": "90s"},
            ["--late-data", "repair", "--lookback-seconds", "90", "--audit-bucket-seconds", "90"],
            id="one-bucket",
        ),
    ],
)
def test_every_run_audits_its_lookback_as_the_spec_says(late_data: dict[str, Any] | None, expected: list[str]) -> None:
    spec = make_spec() if late_data is None else make_spec(lateData=late_data)
    args = job_arguments(spec, PLAN, CATALOG, UPSTREAM_TARGETS)
    at = args.index("--late-data")
    assert args[at : at + 6] == expected
    assert parsed_request(args).late_data == spec.late_data  # read back by the job's own parser


def test_manual_run_window_keeps_its_microseconds() -> None:
    window_to = datetime(2024, 3, 1, 12, 4, 59, 123456, tzinfo=UTC)
    plan = RunPlan(run_name("silver-trades", manual_slot_id("now"), 1), manual_slot_id("now"), 1, 1, window_to)
    app = manifest(plan=plan)
    assert parsed_request(app["spec"]["arguments"]).requested_to == window_to
    assert app["metadata"]["labels"][LABEL_SLOT] == manual_slot_id("now")


def test_each_option_appears_once() -> None:
    args = job_arguments(SPEC, PLAN, CATALOG, UPSTREAM_TARGETS)
    options = [a for a in args if a.startswith("--")]
    assert options.count("--upstream") == 2
    singles = [o for o in options if o != "--upstream"]
    assert len(singles) == len(set(singles))
    assert "--now" not in options and "--from" not in options


# --- names and label values ---------------------------------------------------------------------------

table_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)


@PROPERTY
@given(
    name=table_names,
    slot=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),
    attempt=st.integers(1, 20),
    generation=st.integers(1, 10**6),
)
def test_metadata_is_valid_for_kubernetes(name: str, slot: datetime, attempt: int, generation: int) -> None:
    plan = RunPlan(run_name(name, schedule_slot_id(slot), attempt), schedule_slot_id(slot), attempt, generation, slot)
    meta = manifest(make_spec(name=name, dependsOn=[]), plan, owner={"name": name, "uid": "u"})["metadata"]
    assert DNS_SUBDOMAIN.fullmatch(meta["name"]) and len(meta["name"]) <= 63
    for key, value in meta["labels"].items():
        assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), (key, value)


# --- bugs -----------------------------------------------------------------------------------------------


def test_source_table_named_like_an_upstream_offload_table() -> None:
    spec = make_spec(
        name="trades-silver",
        source={**BASE["source"], "table": "trades"},
        dependsOn=["trades"],
    )
    args = job_arguments(spec, PLAN, CATALOG, {"trades": "lake.cold.trades_raw"})
    assert dict(parsed_request(args).upstream) == {"trades": "lake.cold.trades_raw"}


def test_long_table_name_label() -> None:
    name = "bronze-" + "a" * 70
    try:
        spec = make_spec(name=name, dependsOn=[])
    except SpecError:
        return  # refusing the name with a condition up front would be a fix too
    meta = manifest(spec, owner={"name": name, "uid": "u"})["metadata"]
    assert all(len(value) <= 63 for value in meta["labels"].values())
