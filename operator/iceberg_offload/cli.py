"""The `iceberg-offload` command: local demo, DDL, and a status view of the cold tier."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from iceberg_offload.adapters import ddl


def _ddl(args: argparse.Namespace) -> int:
    from iceberg_offload.core.settings import Settings

    settings = Settings.from_env()
    root = ddl.ddl_root(settings.ddl_dir)
    if args.target == "clickhouse":
        statements = ddl.clickhouse_statements(root)
    else:
        statements = ddl.iceberg_statements(settings.catalog.name, settings.catalog.namespace, root)
    if args.print:
        print(";\n\n".join(statements) + ";")
        return 0
    if args.target == "clickhouse":
        from iceberg_offload.adapters import clickhouse_io

        client = clickhouse_io.connect(settings.clickhouse)
        clickhouse_io.apply_ddl(client, root)
    else:
        from iceberg_offload.job.session import apply_iceberg_ddl, spark_session

        apply_iceberg_ddl(
            spark_session(settings, "iceberg-offload-ddl"), settings.catalog.name, settings.catalog.namespace, root
        )
    print(f"applied {len(statements)} {args.target} statements")
    return 0


def _reset(args: argparse.Namespace) -> int:
    from iceberg_offload.adapters import iceberg_io
    from iceberg_offload.core.settings import Settings
    from iceberg_offload.core.watermark import parse_position

    try:
        settings = Settings.from_env()
        mark = parse_position(args.to, "--to")
        table = iceberg_io.load_table(iceberg_io.open_catalog(settings.catalog), args.table)
        plan = iceberg_io.plan_reset(table, mark)
    except (ValueError, iceberg_io.TargetError) as exc:
        print(f"iceberg-offload: error: {exc}", file=sys.stderr)
        return 1
    print(f"{settings.catalog.name}.{plan.table}: watermark {plan.previous or 'none'} -> {mark}")
    print(
        f"deletes {plan.rows_to_delete} of {plan.rows} rows ({plan.timestamp_column} >= {mark}) in "
        f"{plan.files_to_change} data files of snapshot {plan.snapshot_id}, and stamps the watermark, in one commit"
    )
    if not args.yes:
        print("dry run: nothing changed; repeat with --yes to do it")
        return 0
    try:
        done = iceberg_io.reset_watermark(table, plan, args.reason)
    except iceberg_io.TargetError as exc:
        print(f"iceberg-offload: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"watermark is now {done.watermark}; rows {done.rows_before} -> {done.rows_after} (snapshot {done.snapshot_id})"
    )
    print(
        "the next run offloads the rows after it again (trigger one: kubectl annotate ot ... offload.k2.io/trigger=...)"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from iceberg_offload.adapters import iceberg_io
    from iceberg_offload.core.settings import Settings

    settings = Settings.from_env()
    catalog = iceberg_io.open_catalog(settings.catalog)
    names = args.tables or [".".join(t) for t in catalog.list_tables(settings.catalog.namespace)]
    print(f"{'table':<40} {'watermark':<36} rows")
    for name in names:
        table = iceberg_io.load_table(catalog, name)
        print(f"{name:<40} {iceberg_io.committed_watermark(table) or '-'!s:<36} {iceberg_io.row_count(table)}")
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
    st = sub.add_parser("status", help="committed watermark and row count of Iceberg tables (pyiceberg)")
    st.add_argument("tables", nargs="*", help="<namespace>.<table> (default: every table of the namespace)")
    r = sub.add_parser("reset", help="move a table's watermark back, deleting the rows from it on, in one commit")
    r.add_argument("--table", required=True, help="Iceberg table as <namespace>.<table>")
    r.add_argument(
        "--to",
        required=True,
        help="new watermark, a timestamp: the rows from it on are deleted and offloaded again (the epoch: all)",
    )
    r.add_argument("--reason", default="manual reset", help="recorded in the snapshot summary")
    r.add_argument("--yes", action="store_true", help="do it (without: say what would happen)")
    run = sub.add_parser("run", help="one offload run of one table (the Spark job; see run --help)", add_help=False)
    run.add_argument("args", nargs=argparse.REMAINDER)
    args, rest = p.parse_known_args(argv)
    if args.command == "demo":
        from iceberg_offload.local.demo import main as demo_main

        return demo_main(["--state-dir", args.state_dir])
    if args.command == "ddl":
        return _ddl(args)
    if args.command == "reset":
        return _reset(args)
    if args.command == "status":
        return _status(args)
    from iceberg_offload.job.cli import main as job_main

    return job_main([*args.args, *rest])


if __name__ == "__main__":
    sys.exit(main())
