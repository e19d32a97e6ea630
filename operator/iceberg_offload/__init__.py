"""iceberg-offload: move ClickHouse tables into Apache Iceberg on a schedule, exactly once."""

__version__ = "0.1.0"
