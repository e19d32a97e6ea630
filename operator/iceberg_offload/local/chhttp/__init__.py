"""ClickHouse's HTTP interface served by the embedded engine chdb.

One process owns a chdb data directory; other processes (Spark's Python workers, tests,
the demo) reach it through clickhouse-connect's ordinary HTTP client, as they would reach
a real ClickHouse server.

    python -m iceberg_offload.local.chhttp --path DIR [--host H] [--port P] [--port-file F]
"""

from __future__ import annotations

from iceberg_offload.local.chhttp.server import ClickHouseHTTPServer

__all__ = ["ClickHouseHTTPServer"]
