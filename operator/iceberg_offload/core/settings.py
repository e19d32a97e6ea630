"""One settings object, read from ICEBERG_OFFLOAD_* environment variables.

A bad value fails at start with an error naming the variable. Secrets (passwords) are read
here and never printed: their repr is masked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PREFIX = "ICEBERG_OFFLOAD_"
CATALOG_PREFIX = f"{PREFIX}CATALOG_"
# Where a run can be made to die, for crash tests: after planning its window, in the middle of
# reading it, after writing its rows unpublished, after publishing them (before the mirror).
FAILPOINTS = ("planned", "repaired", "mid-read", "staged", "committed")


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used."""


def _secret() -> Any:
    return field(default="", repr=False)


@dataclass(frozen=True)
class ClickHouseSettings:
    host: str = "127.0.0.1"
    port: int = 8123
    user: str = "default"
    password: str = _secret()
    database: str = "default"
    secure: bool = False
    connect_timeout: int = 10
    query_timeout: int = 600


@dataclass(frozen=True)
class CatalogSettings:
    """The Iceberg catalog shared by Spark and pyiceberg.

    type `jdbc`: uri is a JDBC URL (jdbc:sqlite:/path/catalog.db or
    jdbc:postgresql://host:5432/db); type `rest`: uri is the REST catalog's base URL.
    """

    name: str = "demo"
    type: str = "jdbc"
    uri: str = ""
    warehouse: str = ""
    user: str = ""
    password: str = _secret()
    namespace: str = "cold"


@dataclass(frozen=True)
class Settings:
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    # Empty: leave the master to spark-submit (the Spark Operator); local mode sets local[N].
    spark_master: str = ""
    subwindow_max: int = 16
    subwindow_minutes: int = 15
    # Where ddl/ is (default: beside the package's source tree; the image sets it).
    ddl_dir: str = ""
    # Testing crash recovery only: the run dies (exit 137, no clean-up) at this point (FAILPOINTS).
    failpoint: str = ""
    # The operator: how often each OffloadTable is reconciled, and run defaults.
    reconcile_seconds: int = 10
    spark_image: str = "ghcr.io/k2/iceberg-offload-spark:0.1.0"
    spark_service_account: str = "iceberg-offload-spark"
    main_application_file: str = "local:///opt/iceberg-offload/spark_jobs/offload.py"
    # Whether the operator mirrors each finished run into ClickHouse's offload_watermarks.
    mirror: bool = True
    # Prometheus metrics of the operator (the chart sets 9090); 0 turns the endpoint off. In a
    # pod set the address to 0.0.0.0 so that it can be scraped.
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        unknown = sorted(set(k for k in env if k.startswith(PREFIX)) - set(known_variables()))
        if unknown:
            raise SettingsError(
                f"{unknown[0]}: not a setting of iceberg-offload (known: {', '.join(known_variables())})"
            )
        return cls(
            clickhouse=_read(ClickHouseSettings, "CLICKHOUSE_", env),
            catalog=catalog_from(env),
            **_read_fields(cls, "", env, skip={"clickhouse", "catalog"}),
        )


def catalog_from(values: Mapping[str, str], where: str | None = None) -> CatalogSettings:
    """The catalog from the ICEBERG_OFFLOAD_CATALOG_* keys of `values` (others are ignored), with
    the conversions and checks of from_env. An error names the key, after `where` it was read if
    given (the operator reads a ConfigMap's data here, the job its environment)."""
    try:
        return _read(CatalogSettings, "CATALOG_", values)
    except SettingsError as exc:
        if where is None:
            raise
        raise SettingsError(f"{where}: {exc}") from None


def known_variables() -> list[str]:
    names = [f"{PREFIX}CLICKHOUSE_{f.name.upper()}" for f in fields(ClickHouseSettings)]
    names += [f"{PREFIX}CATALOG_{f.name.upper()}" for f in fields(CatalogSettings)]
    names += [f"{PREFIX}{f.name.upper()}" for f in fields(Settings) if f.name not in ("clickhouse", "catalog")]
    return names


def _read(cls: type[T], prefix: str, env: Mapping[str, str]) -> T:
    return cls(**_read_fields(cls, prefix, env))


def _read_fields(cls: type[Any], prefix: str, env: Mapping[str, str], skip: set[str] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(cls):
        if skip and f.name in skip:
            continue
        var = f"{PREFIX}{prefix}{f.name.upper()}"
        if var not in env:
            continue
        values[f.name] = _convert(var, env[var], f.type)
    _validate(cls, prefix, values)
    return values


def _convert(var: str, raw: str, type_name: Any) -> Any:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{var}: expected an integer, got {raw!r}") from None
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{var}: expected true or false, got {raw!r}")
    return raw


def _validate(cls: type[Any], prefix: str, values: Mapping[str, Any]) -> None:
    def var(name: str) -> str:
        return f"{PREFIX}{prefix}{name.upper()}"

    if "metrics_port" in values and not 0 <= values["metrics_port"] <= 65535:
        raise SettingsError(f"{var('metrics_port')}: expected a port number 0-65535, got {values['metrics_port']}")
    if cls is ClickHouseSettings and "port" in values and not 1 <= values["port"] <= 65535:
        raise SettingsError(f"{var('port')}: expected a port number 1-65535, got {values['port']}")
    if cls is CatalogSettings and values.get("type", "jdbc") not in ("jdbc", "rest"):
        raise SettingsError(f"{var('type')}: expected 'jdbc' or 'rest', got {values['type']!r}")
    jdbc_uri = str(values.get("uri", "")) if values.get("type", "jdbc") == "jdbc" else ""
    if cls is CatalogSettings and jdbc_uri and not jdbc_uri.startswith(("jdbc:sqlite:", "jdbc:postgresql:")):
        raise SettingsError(
            f"{var('uri')}: expected jdbc:sqlite:<path> or jdbc:postgresql://host:port/db, got {values['uri']!r}"
        )
    if "failpoint" in values and values["failpoint"] not in ("", *FAILPOINTS):
        raise SettingsError(
            f"{var('failpoint')}: expected one of {', '.join(FAILPOINTS)} or nothing, got {values['failpoint']!r}"
        )
    for name in ("subwindow_max", "subwindow_minutes", "connect_timeout", "query_timeout", "reconcile_seconds"):
        if name in values and values[name] < 1:
            raise SettingsError(f"{var(name)}: expected a positive integer, got {values[name]}")


def local_settings(state_dir: Path, clickhouse_port: int) -> Settings:
    """Settings of local mode: an embedded ClickHouse endpoint and a SQLite catalog in state_dir."""
    state = state_dir.resolve()
    return Settings(
        spark_master="local[2]",
        clickhouse=ClickHouseSettings(port=clickhouse_port),
        catalog=CatalogSettings(
            uri=f"jdbc:sqlite:{state / 'catalog.db'}",
            warehouse=(state / "warehouse").as_uri(),
        ),
    )


def to_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` (passwords included: pass it only
    to child processes, never to a log)."""
    env: dict[str, str] = {}
    for prefix, group in (("CLICKHOUSE_", settings.clickhouse), ("CATALOG_", settings.catalog)):
        for f in fields(group):
            env[f"{PREFIX}{prefix}{f.name.upper()}"] = _render(getattr(group, f.name))
    for f in fields(settings):
        if f.name not in ("clickhouse", "catalog"):
            env[f"{PREFIX}{f.name.upper()}"] = _render(getattr(settings, f.name))
    return env


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
