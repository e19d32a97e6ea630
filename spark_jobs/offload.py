"""Spark entry point of one offload run (the SparkApplication's mainApplicationFile).

    spark-submit spark_jobs/offload.py --table bronze_trades_binance \
        --timestamp-column exchange_timestamp --sequence-column sequence \
        --target demo.cold.bronze_trades_binance

Connection settings come from ICEBERG_OFFLOAD_* environment variables (passwords from
Kubernetes Secrets); `--help` lists the arguments.
"""

import sys

from iceberg_offload.job.cli import main

if __name__ == "__main__":
    sys.exit(main())
