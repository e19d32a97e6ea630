"""I/O at the edges, one module per external system: ClickHouse (clickhouse-connect), the
Iceberg catalog (pyiceberg) and the DDL files under ddl/. No Spark and no Kubernetes here."""
