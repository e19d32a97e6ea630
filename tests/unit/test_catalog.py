"""The Iceberg catalog's configuration for Spark and pyiceberg (iceberg_offload.core.catalog)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.catalog import (
    pyiceberg_properties,
    spark_catalog_conf,
    spark_catalog_secret_conf,
    sqlalchemy_url,
)
from iceberg_offload.core.settings import CatalogSettings, SettingsError
from sqlalchemy.engine import make_url

PROPERTY = settings(max_examples=200, deadline=None)

PASSWORD = "Zx9-catalog-secret"
SQLITE = CatalogSettings(name="demo", uri="jdbc:sqlite:/var/lib/offload/catalog.db", warehouse="file:///var/lib/wh")
POSTGRES = CatalogSettings(
    name="lake",
    uri="jdbc:postgresql://pg.data.svc:5432/iceberg",
    warehouse="s3://bucket/warehouse",
    user="iceberg",
    password=PASSWORD,
)
REST = CatalogSettings(
    name="rest_cat", type="rest", uri="https://catalog.example/api", warehouse="wh", user="client", password=PASSWORD
)


@pytest.mark.parametrize(
    ("catalog", "url"),
    [
        pytest.param(SQLITE, "sqlite:////var/lib/offload/catalog.db", id="sqlite-absolute"),
        pytest.param(replace(SQLITE, uri="jdbc:sqlite:catalog.db"), "sqlite:///catalog.db", id="sqlite-relative"),
        pytest.param(
            POSTGRES,
            f"postgresql+psycopg2://iceberg:{PASSWORD}@pg.data.svc:5432/iceberg",
            id="postgresql-user-and-password",
        ),
        pytest.param(
            replace(POSTGRES, password=""),
            "postgresql+psycopg2://iceberg@pg.data.svc:5432/iceberg",
            id="postgresql-user-only",
        ),
        pytest.param(
            replace(POSTGRES, user="", password=""),
            "postgresql+psycopg2://pg.data.svc:5432/iceberg",
            id="postgresql-no-credentials",
        ),
        pytest.param(
            replace(POSTGRES, user="ali@ce", password="p@ss:w/rd%?#"),
            "postgresql+psycopg2://ali%40ce:p%40ss%3Aw%2Frd%25%3F%23@pg.data.svc:5432/iceberg",
            id="postgresql-credentials-url-quoted",
        ),
    ],
)
def test_sqlalchemy_url(catalog: CatalogSettings, url: str) -> None:
    assert sqlalchemy_url(catalog) == url


@PROPERTY
@given(
    user=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
    password=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
)
def test_postgresql_credentials_survive_url_quoting(user: str, password: str) -> None:
    url = make_url(sqlalchemy_url(replace(POSTGRES, user=user, password=password)))
    assert url.username == user
    assert url.password == password
    assert (url.host, url.port, url.database) == ("pg.data.svc", 5432, "iceberg")
    assert url.drivername == "postgresql+psycopg2"


def test_sqlalchemy_url_refuses_other_uris() -> None:
    with pytest.raises(SettingsError, match=r"^ICEBERG_OFFLOAD_CATALOG_URI"):
        sqlalchemy_url(replace(SQLITE, uri="jdbc:mysql://db/iceberg"))


@pytest.mark.parametrize("catalog", [pytest.param(SQLITE, id="sqlite"), pytest.param(POSTGRES, id="postgresql")])
def test_pyiceberg_properties_for_jdbc_use_the_same_database(catalog: CatalogSettings) -> None:
    assert pyiceberg_properties(catalog) == {
        "type": "sql",
        "uri": sqlalchemy_url(catalog),
        "warehouse": catalog.warehouse,
    }


def test_pyiceberg_properties_for_rest() -> None:
    assert pyiceberg_properties(REST) == {
        "type": "rest",
        "uri": "https://catalog.example/api",
        "warehouse": "wh",
        "credential": f"client:{PASSWORD}",
    }
    assert "credential" not in pyiceberg_properties(replace(REST, user="", password=""))


@pytest.mark.parametrize(
    ("catalog", "user_entry"),
    [pytest.param(SQLITE, None, id="sqlite"), pytest.param(POSTGRES, "iceberg", id="postgresql")],
)
def test_spark_catalog_conf_for_jdbc(catalog: CatalogSettings, user_entry: str | None) -> None:
    key = f"spark.sql.catalog.{catalog.name}"
    conf = spark_catalog_conf(catalog)
    assert conf[key] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf[f"{key}.type"] == "jdbc"
    assert conf[f"{key}.uri"] == catalog.uri  # Spark gets the JDBC URI itself
    assert conf[f"{key}.warehouse"] == catalog.warehouse
    assert conf[f"{key}.cache-enabled"] == "false"
    assert conf[f"{key}.jdbc.init-catalog-tables"] == "false"
    assert conf.get(f"{key}.jdbc.user") == user_entry
    assert all(k == key or k.startswith(key + ".") for k in conf)


def test_spark_catalog_conf_for_rest() -> None:
    conf = spark_catalog_conf(REST)
    assert conf["spark.sql.catalog.rest_cat.type"] == "rest"
    assert conf["spark.sql.catalog.rest_cat.uri"] == "https://catalog.example/api"
    assert not any(".jdbc." in k for k in conf)


@pytest.mark.parametrize("catalog", [pytest.param(POSTGRES, id="postgresql"), pytest.param(REST, id="rest")])
def test_password_is_kept_out_of_spark_catalog_conf(catalog: CatalogSettings) -> None:
    conf = spark_catalog_conf(catalog)
    assert not any(PASSWORD in k or PASSWORD in v for k, v in conf.items())
    assert not any("password" in k for k in conf)


def test_password_is_only_in_the_secret_conf() -> None:
    assert spark_catalog_secret_conf(POSTGRES) == {"spark.sql.catalog.lake.jdbc.password": PASSWORD}
    assert spark_catalog_secret_conf(replace(POSTGRES, password="")) == {}
    assert spark_catalog_secret_conf(SQLITE) == {}


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        pytest.param("uri", "ICEBERG_OFFLOAD_CATALOG_URI", id="missing-uri"),
        pytest.param("warehouse", "ICEBERG_OFFLOAD_CATALOG_WAREHOUSE", id="missing-warehouse"),
    ],
)
@pytest.mark.parametrize(
    "build",
    [pytest.param(spark_catalog_conf, id="spark"), pytest.param(pyiceberg_properties, id="pyiceberg")],
)
def test_missing_setting_raises_naming_the_variable(field: str, variable: str, build: object) -> None:
    for catalog in (SQLITE, POSTGRES, REST):
        with pytest.raises(SettingsError) as info:
            build(replace(catalog, **{field: ""}))  # type: ignore[operator]
        assert str(info.value).startswith(variable)
