"""The Iceberg catalog's configuration for Spark and for pyiceberg, from one setting.

Pure logic: no engine, catalog or network imports. Spark's JdbcCatalog and pyiceberg's
SqlCatalog share one schema, so both must be given the same database and catalog name.
"""

from __future__ import annotations

from urllib.parse import quote

from iceberg_offload.core.settings import CatalogSettings, SettingsError


def spark_catalog_conf(catalog: CatalogSettings) -> dict[str, str]:
    """spark.sql.catalog.<name>.* entries for Iceberg's SparkCatalog."""
    _require(catalog)
    key = f"spark.sql.catalog.{catalog.name}"
    conf = {
        key: "org.apache.iceberg.spark.SparkCatalog",
        f"{key}.type": catalog.type,
        f"{key}.uri": catalog.uri,
        f"{key}.warehouse": catalog.warehouse,
        # Other processes (the operator, other runs) commit too: never serve stale metadata.
        f"{key}.cache-enabled": "false",
    }
    if catalog.type == "jdbc":
        # The catalog tables are created up front (ensure_catalog_tables); letting Spark create
        # them keeps a SQLite write lock that blocks pyiceberg commits while a session is open.
        conf[f"{key}.jdbc.init-catalog-tables"] = "false"
        if catalog.user:
            conf[f"{key}.jdbc.user"] = catalog.user
    return conf


def spark_catalog_secret_conf(catalog: CatalogSettings) -> dict[str, str]:
    """The password entry, kept apart so that it is never logged with the rest."""
    if catalog.type == "jdbc" and catalog.password:
        return {f"spark.sql.catalog.{catalog.name}.jdbc.password": catalog.password}
    if catalog.type == "rest" and (catalog.user or catalog.password):
        return {f"spark.sql.catalog.{catalog.name}.credential": f"{catalog.user}:{catalog.password}"}
    return {}


def pyiceberg_properties(catalog: CatalogSettings) -> dict[str, str]:
    """Properties for pyiceberg's load_catalog(name, **properties)."""
    _require(catalog)
    if catalog.type == "rest":
        props = {"type": "rest", "uri": catalog.uri, "warehouse": catalog.warehouse}
        if catalog.user or catalog.password:
            props["credential"] = f"{catalog.user}:{catalog.password}"
        return props
    return {"type": "sql", "uri": sqlalchemy_url(catalog), "warehouse": catalog.warehouse}


def sqlalchemy_url(catalog: CatalogSettings) -> str:
    """The SQLAlchemy URL of the database behind a JDBC catalog URI."""
    uri = catalog.uri
    if uri.startswith("jdbc:sqlite:"):
        path = uri.removeprefix("jdbc:sqlite:")
        return f"sqlite:///{path}"
    if uri.startswith("jdbc:postgresql://"):
        rest = uri.removeprefix("jdbc:postgresql://")
        auth = ""
        if catalog.user:
            auth = quote(catalog.user, safe="")
            if catalog.password:
                auth += ":" + quote(catalog.password, safe="")
            auth += "@"
        return f"postgresql+psycopg2://{auth}{rest}"
    raise SettingsError(f"ICEBERG_OFFLOAD_CATALOG_URI: unsupported JDBC URI {uri!r}")


def _require(catalog: CatalogSettings) -> None:
    if not catalog.uri:
        raise SettingsError("ICEBERG_OFFLOAD_CATALOG_URI: not set (the Iceberg catalog's URI)")
    if not catalog.warehouse:
        raise SettingsError("ICEBERG_OFFLOAD_CATALOG_WAREHOUSE: not set (the Iceberg warehouse location)")
