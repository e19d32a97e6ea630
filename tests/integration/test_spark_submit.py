"""The Spark image runs `spark-submit <mainApplicationFile> <arguments>` with the arguments the
operator writes into the SparkApplication. Run exactly that locally: the same spark_jobs file,
the same argument list from manifests.job_arguments, settings only from the environment, and
no ICEBERG_OFFLOAD_SPARK_MASTER (spark-submit decides, as in the cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from iceberg_offload.core.result import parse_result
from iceberg_offload.core.settings import Settings, to_env
from iceberg_offload.job.session import JDBC_JARS, iceberg_runtime_jar
from iceberg_offload.operator.decide import RunPlan
from iceberg_offload.operator.manifests import job_arguments
from iceberg_offload.operator.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]


def test_the_job_runs_under_spark_submit_with_the_operators_arguments(make_env: Any, base: datetime) -> None:
    env = make_env("spark_submit", tables=["bronze_trades_binance"])
    table = "bronze_trades_binance"
    env.feed(base, base + timedelta(minutes=30))
    spec = parse_spec(
        "bronze-trades-binance",
        {
            "layer": "bronze",
            "source": {
                "database": env.name,
                "table": table,
                "timestampColumn": "exchange_timestamp",
                "sequenceColumn": "sequence",
                "connection": {"host": "127.0.0.1", "port": env.settings.clickhouse.port},
            },
            "target": {"catalogRef": {"name": "iceberg-catalog"}, "namespace": env.name, "table": table},
        },
    )
    window_to = base + timedelta(minutes=20)
    plan = RunPlan("bronze-trades-binance-202601010020-1", "202601010020", 1, 1, window_to)
    arguments = job_arguments(spec, plan, env.settings.catalog.name, {})
    main_file = Settings().main_application_file.removeprefix("local:///opt/iceberg-offload/")

    job_env = {k: v for k, v in os.environ.items() if not k.startswith("ICEBERG_OFFLOAD_")}
    job_env.update({k: v for k, v in to_env(env.settings).items() if v})
    job_env.pop("ICEBERG_OFFLOAD_SPARK_MASTER", None)
    job_env.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    spark_submit = Path(sys.executable).parent / "spark-submit"
    jars = ",".join([str(iceberg_runtime_jar()), *(j for j in JDBC_JARS if Path(j).exists())])
    command = [str(spark_submit), "--master", "local[1]", "--jars", jars]
    for conf in ("spark.driver.host=127.0.0.1", "spark.driver.bindAddress=127.0.0.1", "spark.ui.enabled=false"):
        command += ["--conf", conf]
    done = subprocess.run(
        [*command, main_file, *arguments],
        cwd=REPO,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    result = parse_result(done.stdout)
    assert result is not None and result.outcome == "committed", tail
    assert result.run_id == plan.name
    assert result.watermark is not None and result.watermark.timestamp == window_to
    assert env.watermark(table) == result.watermark
    assert env.iceberg_count(table) == env.ch_count_through(table, result.watermark) == result.rows
    assert env.mirror(table) is None, "--no-mirror: the operator, not the job, writes offload_watermarks"
