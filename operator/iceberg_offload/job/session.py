"""The Spark session a run uses, with the Iceberg runtime and the catalog, and the cold tier's DDL."""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from iceberg_offload.adapters.ddl import iceberg_statements
from iceberg_offload.adapters.iceberg_io import open_catalog
from iceberg_offload.core.catalog import spark_catalog_conf, spark_catalog_secret_conf
from iceberg_offload.core.settings import Settings

ICEBERG_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
JDBC_JARS = ("/usr/share/java/sqlite-jdbc.jar", "/usr/share/java/postgresql.jar")


def iceberg_runtime_jar() -> Path:
    """The Iceberg Spark runtime jar that the pinned PyPI package carries."""
    jar = importlib.resources.files("snowpark_connect_deps_iceberg") / "jars" / ICEBERG_JAR
    return Path(str(jar))


def spark_session(settings: Settings, app_name: str = "iceberg-offload") -> SparkSession:
    """The session a run uses. With a master set (local mode) it is built here, on loopback;
    without one, spark-submit (the Spark Operator) has configured it and only the catalog is added."""
    builder = SparkSession.builder.appName(app_name)
    conf: dict[str, str] = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.session.timeZone": "UTC",
        **spark_catalog_conf(settings.catalog),
        **spark_catalog_secret_conf(settings.catalog),
    }
    if settings.spark_master:
        conf.update(_local_conf(settings.spark_master))
    if settings.catalog.type == "jdbc":
        open_catalog(settings.catalog)  # creates the catalog's tables, which Spark must not
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _local_conf(master: str) -> dict[str, str]:
    """Local mode: the jars spark-submit would otherwise provide, everything on loopback."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    jars = [str(iceberg_runtime_jar()), *(j for j in JDBC_JARS if Path(j).exists())]
    return {
        "spark.master": master,
        "spark.jars": ",".join(jars),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY", "2g"),
    }


def apply_iceberg_ddl(spark: SparkSession, catalog: str, namespace: str, ddl_root: Path | None = None) -> None:
    """Create the cold namespace and its tables (idempotent), from the DDL under `ddl_root`
    (default: the repository's ddl/)."""
    for statement in iceberg_statements(catalog, namespace, ddl_root):
        spark.sql(statement)
