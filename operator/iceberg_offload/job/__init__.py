"""One offload run on Spark: read a window from ClickHouse inside the executors and commit it
to Iceberg in one snapshot that carries the watermark. Never imports kopf or kubernetes."""
