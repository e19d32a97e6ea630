"""The `iceberg-offload` command: local demo, DDL, and a status view of the cold tier."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from iceberg_offload import ddl


def _ddl(args: argparse.Namespace) -> int:
    from iceberg_offload.settings import Settings

    settings = Settings.from_env()
    if args.target == "clickhouse":
        statements = ddl.clickhouse_statements()
    else:
        statements = ddl.iceberg_statements(settings.catalog.name, settings.catalog.namespace)
    if args.print:
        print(";\n\n".join(statements) + ";")
        return 0
    if args.target == "clickhouse":
        from iceberg_offload import clickhouse_io

        client = clickhouse_io.connect(settings.clickhouse)
        clickhouse_io.apply_ddl(client)
    else:
        from iceberg_offload.offload_job import apply_iceberg_ddl, spark_session

        apply_iceberg_ddl(
            spark_session(settings, "iceberg-offload-ddl"), settings.catalog.name, settings.catalog.namespace
        )
    print(f"applied {len(statements)} {args.target} statements")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="iceberg-offload", description="Offload ClickHouse tables into Apache Iceberg, exactly once."
    )
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="two offload cycles of the runbook's nine tables on embedded engines")
    demo.add_argument("--state-dir", default=".offload-demo")
    d = sub.add_parser("ddl", help="create (or --print) the ClickHouse or Iceberg DDL")
    d.add_argument("target", choices=("clickhouse", "iceberg"))
    d.add_argument("--print", action="store_true", help="print the statements instead of applying them")
    run = sub.add_parser("run", help="one offload run of one table (the Spark job; see run --help)", add_help=False)
    run.add_argument("args", nargs=argparse.REMAINDER)
    args, rest = p.parse_known_args(argv)
    if args.command == "demo":
        from iceberg_offload.local.demo import main as demo_main

        return demo_main(["--state-dir", args.state_dir])
    if args.command == "ddl":
        return _ddl(args)
    from iceberg_offload.offload_job import main as job_main

    return job_main([*args.args, *rest])


if __name__ == "__main__":
    sys.exit(main())
