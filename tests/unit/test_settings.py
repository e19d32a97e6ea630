"""Settings from ICEBERG_OFFLOAD_* environment variables (iceberg_offload.core.settings)."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.settings import (
    FAILPOINTS,
    PREFIX,
    CatalogSettings,
    ClickHouseSettings,
    Settings,
    SettingsError,
    catalog_from,
    known_variables,
    local_settings,
    to_env,
)

PROPERTY = settings(max_examples=200, deadline=None)

CH_PASSWORD = "ch-Pa55-word-7f3a"
CATALOG_PASSWORD = "cat-Pa55-word-91be"


def test_defaults_without_any_variable() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.clickhouse == ClickHouseSettings(
        host="127.0.0.1",
        port=8123,
        user="default",
        password="",
        database="default",
        secure=False,
        connect_timeout=10,
        query_timeout=600,
    )
    assert s.catalog == CatalogSettings(
        name="demo", type="jdbc", uri="", warehouse="", user="", password="", namespace="cold"
    )
    assert (s.spark_master, s.subwindow_max, s.subwindow_minutes, s.failpoint) == ("", 16, 15, "")


def test_variables_outside_the_prefix_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/bin", "HOME": "/root", "ICEBERG_OFFLOADX": "1"}) == Settings()


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ICEBERG_OFFLOAD_CLICKHOUSE_HOST", "ch.example")
    assert Settings.from_env().clickhouse.host == "ch.example"


@pytest.mark.parametrize(
    ("variable", "raw", "path", "value"),
    [
        pytest.param(
            "CLICKHOUSE_HOST",
            "clickhouse.data.svc",
            ("clickhouse", "host"),
            "clickhouse.data.svc",
            id="CLICKHOUSE_HOST",
        ),
        pytest.param("CLICKHOUSE_PORT", "9440", ("clickhouse", "port"), 9440, id="CLICKHOUSE_PORT"),
        pytest.param("CLICKHOUSE_USER", "offload", ("clickhouse", "user"), "offload", id="CLICKHOUSE_USER"),
        pytest.param(
            "CLICKHOUSE_PASSWORD", CH_PASSWORD, ("clickhouse", "password"), CH_PASSWORD, id="CLICKHOUSE_PASSWORD"
        ),
        pytest.param("CLICKHOUSE_DATABASE", "markets", ("clickhouse", "database"), "markets", id="CLICKHOUSE_DATABASE"),
        pytest.param("CLICKHOUSE_SECURE", "true", ("clickhouse", "secure"), True, id="CLICKHOUSE_SECURE"),
        pytest.param(
            "CLICKHOUSE_CONNECT_TIMEOUT", "3", ("clickhouse", "connect_timeout"), 3, id="CLICKHOUSE_CONNECT_TIMEOUT"
        ),
        pytest.param(
            "CLICKHOUSE_QUERY_TIMEOUT", "1200", ("clickhouse", "query_timeout"), 1200, id="CLICKHOUSE_QUERY_TIMEOUT"
        ),
        pytest.param("CATALOG_NAME", "lake", ("catalog", "name"), "lake", id="CATALOG_NAME"),
        pytest.param("CATALOG_TYPE", "rest", ("catalog", "type"), "rest", id="CATALOG_TYPE"),
        pytest.param(
            "CATALOG_URI",
            "jdbc:postgresql://pg:5432/iceberg",
            ("catalog", "uri"),
            "jdbc:postgresql://pg:5432/iceberg",
            id="CATALOG_URI",
        ),
        pytest.param(
            "CATALOG_WAREHOUSE",
            "s3://bucket/warehouse",
            ("catalog", "warehouse"),
            "s3://bucket/warehouse",
            id="CATALOG_WAREHOUSE",
        ),
        pytest.param("CATALOG_USER", "iceberg", ("catalog", "user"), "iceberg", id="CATALOG_USER"),
        pytest.param(
            "CATALOG_PASSWORD", CATALOG_PASSWORD, ("catalog", "password"), CATALOG_PASSWORD, id="CATALOG_PASSWORD"
        ),
        pytest.param("CATALOG_NAMESPACE", "archive", ("catalog", "namespace"), "archive", id="CATALOG_NAMESPACE"),
        pytest.param("SPARK_MASTER", "local[4]", ("spark_master",), "local[4]", id="SPARK_MASTER"),
        pytest.param("SUBWINDOW_MAX", "32", ("subwindow_max",), 32, id="SUBWINDOW_MAX"),
        pytest.param("SUBWINDOW_MINUTES", "5", ("subwindow_minutes",), 5, id="SUBWINDOW_MINUTES"),
        pytest.param("FAILPOINT", "committed", ("failpoint",), "committed", id="FAILPOINT"),
    ],
)
def test_each_variable_is_read(variable: str, raw: str, path: tuple[str, ...], value: Any) -> None:
    s: Any = Settings.from_env({PREFIX + variable: raw})
    for attribute in path:
        s = getattr(s, attribute)
    assert s == value


def test_every_setting_has_a_variable_named_after_it() -> None:
    top_level = [f.name for f in fields(Settings) if f.name not in ("clickhouse", "catalog")]
    expected = (
        [f"{PREFIX}CLICKHOUSE_{f.name.upper()}" for f in fields(ClickHouseSettings)]
        + [f"{PREFIX}CATALOG_{f.name.upper()}" for f in fields(CatalogSettings)]
        + [f"{PREFIX}{name.upper()}" for name in top_level]
    )
    assert sorted(known_variables()) == sorted(expected)
    assert {"spark_master", "subwindow_max", "subwindow_minutes", "failpoint"} <= set(top_level)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("TRUE", True, id="TRUE"),
        pytest.param(" True ", True, id="padded"),
        pytest.param("false", False, id="false"),
        pytest.param("False", False, id="False"),
    ],
)
def test_bool_values(raw: str, value: bool) -> None:
    assert Settings.from_env({"ICEBERG_OFFLOAD_CLICKHOUSE_SECURE": raw}).clickhouse.secure is value


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "http", id="port-not-a-number"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "8123.0", id="port-a-float"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "", id="port-empty"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "0", id="port-zero"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "65536", id="port-too-high"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_PORT", "-1", id="port-negative"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_SECURE", "maybe", id="bool-maybe"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_SECURE", "2", id="bool-two"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_CONNECT_TIMEOUT", "0", id="timeout-zero"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_QUERY_TIMEOUT", "soon", id="timeout-words"),
        pytest.param("ICEBERG_OFFLOAD_CATALOG_TYPE", "hive", id="catalog-type-unknown"),
        pytest.param("ICEBERG_OFFLOAD_CATALOG_TYPE", "JDBC", id="catalog-type-case"),
        pytest.param("ICEBERG_OFFLOAD_CATALOG_URI", "postgresql://pg:5432/iceberg", id="jdbc-uri-without-jdbc"),
        pytest.param("ICEBERG_OFFLOAD_CATALOG_URI", "jdbc:mysql://db/iceberg", id="jdbc-uri-other-database"),
        pytest.param("ICEBERG_OFFLOAD_CATALOG_URI", "/var/lib/catalog.db", id="jdbc-uri-a-path"),
        pytest.param("ICEBERG_OFFLOAD_SUBWINDOW_MAX", "0", id="subwindow-max-zero"),
        pytest.param("ICEBERG_OFFLOAD_SUBWINDOW_MINUTES", "-15", id="subwindow-minutes-negative"),
        pytest.param("ICEBERG_OFFLOAD_FAILPOINT", "before-commit", id="failpoint-unknown"),
        pytest.param("ICEBERG_OFFLOAD_CLICKHOUSE_HOTS", "x", id="unknown-variable-typo"),
        pytest.param("ICEBERG_OFFLOAD_BUFFER", "300", id="unknown-variable"),
    ],
)
def test_bad_value_raises_naming_the_variable_first(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: raw})
    assert str(info.value).startswith(variable + ":")


CATALOG_BAD_VALUES = [
    ("ICEBERG_OFFLOAD_CATALOG_TYPE", "hive", "expected 'jdbc' or 'rest', got 'hive'"),
    ("ICEBERG_OFFLOAD_CATALOG_TYPE", "JDBC", "expected 'jdbc' or 'rest', got 'JDBC'"),
    ("ICEBERG_OFFLOAD_CATALOG_URI", "jdbc:mysql://db/iceberg", "expected jdbc:sqlite:<path> or jdbc:postgresql:"),
    ("ICEBERG_OFFLOAD_CATALOG_URI", "/var/lib/catalog.db", "expected jdbc:sqlite:<path> or jdbc:postgresql:"),
]


@pytest.mark.parametrize(("variable", "raw", "message"), CATALOG_BAD_VALUES)
def test_the_catalog_read_from_a_configmap_is_checked_as_from_the_environment(
    variable: str, raw: str, message: str
) -> None:
    with pytest.raises(SettingsError) as from_env:
        Settings.from_env({variable: raw})
    with pytest.raises(SettingsError) as from_map:
        catalog_from({variable: raw}, "ConfigMap iceberg-catalog")
    assert str(from_env.value).startswith(f"{variable}: {message}")
    assert str(from_map.value) == f"ConfigMap iceberg-catalog: {from_env.value}"


def test_catalog_from_reads_only_catalog_keys() -> None:
    values = {
        "ICEBERG_OFFLOAD_CATALOG_NAME": "lake",
        "ICEBERG_OFFLOAD_CATALOG_TYPE": "rest",
        "ICEBERG_OFFLOAD_CATALOG_URI": "https://catalog.example/api",
        "ICEBERG_OFFLOAD_SUBWINDOW_MAX": "zero",  # not the catalog's: neither read nor checked
        "ICEBERG_OFFLOAD_CLICKHOUSE_PORT": "http",
        "PATH": "/bin",
    }
    assert catalog_from(values) == CatalogSettings(name="lake", type="rest", uri="https://catalog.example/api")
    assert catalog_from({}) == CatalogSettings()


def test_rest_catalog_uri_is_not_checked_as_jdbc() -> None:
    env = {"ICEBERG_OFFLOAD_CATALOG_TYPE": "rest", "ICEBERG_OFFLOAD_CATALOG_URI": "https://catalog.example/api"}
    assert Settings.from_env(env).catalog.uri == "https://catalog.example/api"


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("jdbc:sqlite:/var/lib/offload/catalog.db", id="sqlite"),
        pytest.param("jdbc:postgresql://pg:5432/iceberg", id="postgresql"),
    ],
)
def test_jdbc_uris_of_supported_databases_are_accepted(uri: str) -> None:
    assert Settings.from_env({"ICEBERG_OFFLOAD_CATALOG_URI": uri}).catalog.uri == uri


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_passwords_never_appear_in_repr() -> None:
    s = Settings.from_env(
        {"ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD": CH_PASSWORD, "ICEBERG_OFFLOAD_CATALOG_PASSWORD": CATALOG_PASSWORD}
    )
    for text in (repr(s), str(s), repr(s.clickhouse), repr(s.catalog), f"{s}", f"{s.catalog!r}"):
        assert CH_PASSWORD not in text
        assert CATALOG_PASSWORD not in text
    # ...but they are there to be used
    assert s.clickhouse.password == CH_PASSWORD
    assert s.catalog.password == CATALOG_PASSWORD


def test_local_settings(tmp_path: Path) -> None:
    s = local_settings(tmp_path, 18123)
    assert s.clickhouse.port == 18123
    assert s.catalog.uri == f"jdbc:sqlite:{tmp_path.resolve() / 'catalog.db'}"
    assert s.catalog.warehouse == (tmp_path.resolve() / "warehouse").as_uri()
    assert s.spark_master.startswith("local[")
    assert Settings.from_env(to_env(s)) == s


# --- to_env round trip ------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
_positive = st.integers(min_value=1, max_value=10**6)

clickhouse_settings = st.builds(
    ClickHouseSettings,
    host=_text,
    port=st.integers(min_value=1, max_value=65535),
    user=_text,
    password=_text,
    database=_text,
    secure=st.booleans(),
    connect_timeout=_positive,
    query_timeout=_positive,
)


@st.composite
def catalog_settings(draw: st.DrawFn) -> CatalogSettings:
    kind = draw(st.sampled_from(["jdbc", "rest"]))
    if kind == "jdbc":
        uri = draw(
            st.sampled_from(["", "jdbc:sqlite:", "jdbc:postgresql://"]).flatmap(
                lambda p: st.just(p) if not p else _text.map(lambda rest: p + rest)
            )
        )
    else:
        uri = draw(_text)
    return CatalogSettings(
        name=draw(_text),
        type=kind,
        uri=uri,
        warehouse=draw(_text),
        user=draw(_text),
        password=draw(_text),
        namespace=draw(_text),
    )


all_settings = st.builds(
    Settings,
    clickhouse=clickhouse_settings,
    catalog=catalog_settings(),
    spark_master=_text,
    subwindow_max=_positive,
    subwindow_minutes=_positive,
    failpoint=st.sampled_from(["", *FAILPOINTS]),
)


@PROPERTY
@given(s=all_settings)
def test_to_env_round_trips(s: Settings) -> None:
    env = to_env(s)
    assert set(env) == set(known_variables())
    assert all(isinstance(v, str) for v in env.values())
    assert Settings.from_env(env) == s
    assert catalog_from(env, "ConfigMap c") == s.catalog


def test_the_ddl_directory_is_a_setting(tmp_path: Path) -> None:
    # ICEBERG_OFFLOAD_DDL_DIR reaches ddl_root() through Settings.ddl_dir; it must not be refused as unknown
    # (`iceberg-offload ddl` reads Settings.from_env() before rendering the DDL).
    assert "ICEBERG_OFFLOAD_DDL_DIR" in known_variables()
    assert Settings.from_env({"ICEBERG_OFFLOAD_DDL_DIR": str(tmp_path)}).ddl_dir == str(tmp_path)
