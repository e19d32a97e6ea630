"""The `iceberg-offload` command: local demo, DDL, status, audit, reset and restamp of the cold tier, one run.

Every failure is one line on stderr, `iceberg-offload: error: <what>, <what to do>`: exit 2 for
bad arguments, 1 for anything else; `iceberg-offload --debug <command>` adds the traceback.
`iceberg-offload run ARGS` hands ARGS unchanged to the job's command line (job/cli.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iceberg_offload.adapters import ddl
from iceberg_offload.core.cli_errors import SETTINGS_TODO, CommandError, OneLineParser, error_line, first_line

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from clickhouse_connect.driver.client import Client
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from iceberg_offload.core.settings import CatalogSettings
    from iceberg_offload.core.tables import TableSpec

PROG = "iceberg-offload"
DEBUG_TODO = f"`{PROG} --debug ...` shows the traceback"
# What a demo's state directory holds (local/runner.py): the demo deletes and recreates it.
DEMO_STATE = ("catalog.db", "clickhouse", "warehouse")
# Libraries that log the failure they then raise: the raised error is reported, in one line.
QUIET_LOGGERS = ("clickhouse_connect",)


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

    settings = Settings.from_env()
    try:
        mark = parse_position(args.to, "--to")
    except ValueError as exc:
        raise CommandError(str(exc), "give --to as an ISO-8601 timestamp such as 2026-12-01T10:15:00Z") from exc
    table = iceberg_io.load_table(iceberg_io.open_catalog(settings.catalog), args.table)
    plan = iceberg_io.plan_reset(table, mark)
    print(f"{settings.catalog.name}.{plan.table}: watermark {plan.previous or 'none'} -> {mark}")
    print(
        f"deletes {plan.rows_to_delete} of {plan.rows} rows ({plan.timestamp_column} >= {mark}) in "
        f"{plan.files_to_change} data files of snapshot {plan.snapshot_id}, and stamps the watermark, in one commit"
    )
    if not args.yes:
        print("dry run: nothing changed; repeat with --yes to do it")
        return 0
    done = iceberg_io.reset_watermark(table, plan, args.reason)
    print(
        f"watermark is now {done.watermark}; rows {done.rows_before} -> {done.rows_after} (snapshot {done.snapshot_id})"
    )
    print(
        "the next run offloads the rows after it again (trigger one: kubectl annotate ot ... offload.k2.io/trigger=...)"
    )
    return 0


def _restamp(args: argparse.Namespace) -> int:
    from iceberg_offload.adapters import iceberg_io, restamp
    from iceberg_offload.core.settings import Settings

    settings = Settings.from_env()
    table = iceberg_io.load_table(iceberg_io.open_catalog(settings.catalog), args.table)
    plan = restamp.plan_restamp(table)
    print(f"{settings.catalog.name}.{plan.table}: no trace of its watermark is left; {plan.rows} rows")
    print(
        f"newest row: {plan.timestamp_column} = {plan.newest_row}; stamps the watermark {plan.watermark} "
        "(every row before it is in the table) in a commit of no rows"
    )
    if not args.yes:
        print("dry run: nothing changed; repeat with --yes to do it")
        return 0
    done = restamp.restamp(table, plan)
    print(f"watermark is now {done}; the next run continues after the newest row (a row of ClickHouse before it")
    print("that the table lacks is late data: the run's audit repairs it within its lookback, or run a backfill)")
    return 0


AUDIT_DIFFER = 3  # exit code of `audit` when a table differs from ClickHouse


def _audit(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from iceberg_offload.adapters import clickhouse_io, iceberg_io
    from iceberg_offload.adapters.audit import audit_range
    from iceberg_offload.core.settings import Settings
    from iceberg_offload.core.tables import runbook_tables
    from iceberg_offload.core.watermark import parse_timestamp

    settings = Settings.from_env()
    specs = {
        t.name: t
        for t in runbook_tables(
            catalog=settings.catalog.name,
            namespace=settings.catalog.namespace,
            database=settings.clickhouse.database,
        )
    }
    unknown = [name for name in args.tables if name not in specs]
    if unknown:
        raise CommandError(f"unknown table {', '.join(unknown)}", f"name one of {', '.join(specs)}")
    try:
        since = parse_timestamp(args.since) if args.since else datetime.now(UTC) - timedelta(days=1)
    except ValueError as exc:
        raise CommandError(
            f"--since {args.since!r} is not a timestamp", "give one such as 2026-12-01T00:00:00Z"
        ) from exc
    width = timedelta(seconds=args.bucket_seconds)
    client = clickhouse_io.connect(settings.clickhouse)
    catalog = iceberg_io.open_catalog(settings.catalog)
    differ = 0
    for name in args.tables:
        spec = specs[name]
        table = iceberg_io.load_table(catalog, spec.target.catalog_identifier)
        mark = iceberg_io.committed_watermark(table)
        if mark is None or mark.timestamp <= since:
            print(f"{name}: nothing committed after {since.isoformat()}, nothing to audit")
            continue
        report = audit_range(client, table, spec, since, mark.timestamp, width)
        for diff in report.differing:
            print(f"{name} {diff.describe()}")
        print(f"{name}: [{since.isoformat()}, {mark}): {report.summary()}")
        if args.repair and not report.in_sync:
            _repair(client, catalog, table, spec, since, mark.timestamp, width)
        else:
            differ += not report.in_sync
    return AUDIT_DIFFER if differ else 0


def _repair(
    client: Client, catalog: Catalog, table: Table, spec: TableSpec, since: datetime, upper: datetime, width: timedelta
) -> None:
    """Replace the differing buckets of [since, upper) with ClickHouse's rows, a bucket per commit."""
    import uuid
    from datetime import UTC, datetime

    from iceberg_offload.adapters import clickhouse_io
    from iceberg_offload.adapters.audit import backfill, target_columns
    from iceberg_offload.core.repair import LateDataPolicy, RepairError

    try:
        columns = target_columns(clickhouse_io.describe(client, spec.source), table)
        outcome = backfill(
            client,
            catalog,
            spec,
            columns,
            since,
            upper,
            policy=LateDataPolicy(bucket=width),
            name=f"audit-repair-{uuid.uuid4().hex[:12]}",
            now=datetime.now(UTC),
        )
    except RepairError as exc:
        raise CommandError(
            f"cannot repair {spec.name}: {exc}", "audit a later --since, or use an OffloadBackfill"
        ) from exc
    print(f"{spec.name}: repaired {outcome.commits} buckets, {outcome.rows} rows written from ClickHouse")


def _status(args: argparse.Namespace) -> int:
    from iceberg_offload.adapters import iceberg_io
    from iceberg_offload.core.settings import Settings

    settings = Settings.from_env()
    catalog = iceberg_io.open_catalog(settings.catalog)
    names = args.tables or _tables_of_namespace(catalog, settings.catalog)
    print(f"{'table':<40} {'watermark':<36} rows")
    for name in names:
        table = iceberg_io.load_table(catalog, name)
        print(f"{name:<40} {iceberg_io.committed_watermark(table) or '-'!s:<36} {iceberg_io.row_count(table)}")
    return 0


def _tables_of_namespace(catalog: Catalog, settings: CatalogSettings) -> list[str]:
    from pyiceberg.exceptions import NoSuchNamespaceError

    try:
        return [".".join(t) for t in catalog.list_tables(settings.namespace)]
    except NoSuchNamespaceError as exc:
        raise CommandError(
            f"Iceberg namespace {settings.name}.{settings.namespace} does not exist",
            f"create it with `{PROG} ddl iceberg` or set ICEBERG_OFFLOAD_CATALOG_NAMESPACE",
        ) from exc


def _demo(args: argparse.Namespace) -> int:
    from iceberg_offload.local.demo import main as demo_main

    _check_state_dir(args.state_dir)
    if demo_main(["--state-dir", args.state_dir]) != 0:
        raise CommandError(
            "ClickHouse's and Iceberg's row counts differ after the demo (see the table above)",
            "please report it with the output above",
        )
    return 0


def _check_state_dir(text: str) -> None:
    """The demo deletes and recreates its state directory: refuse one that holds something else."""
    path = Path(text)
    todo = "give a new directory, or one a demo made (the demo deletes and recreates it)"
    if path.exists() and not path.is_dir():
        raise CommandError(f"--state-dir {text!r} is not a directory", todo)
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise CommandError(f"--state-dir {text!r} holds the current directory", todo)
    if path.is_dir() and any(path.iterdir()) and not any((path / name).exists() for name in DEMO_STATE):
        raise CommandError(f"--state-dir {text!r} holds files that are not a demo's state", todo)


def _table_name(text: str) -> str:
    """An Iceberg table as <namespace>.<table> (argparse type)."""
    parts = text.split(".")
    if len(parts) < 2 or not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not <namespace>.<table> (for example cold.silver_trades)")
    return text


def _parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Offload ClickHouse tables into Apache Iceberg, exactly once.")
    p.add_argument("--debug", action="store_true", help="on a failure, print the traceback too")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, **kwargs: Any) -> OneLineParser:
        return sub.add_parser(name, help=help, error_prefix=PROG, **kwargs)

    demo = command("demo", "two offload cycles of the runbook's nine tables on embedded engines")
    demo.add_argument("--state-dir", default=".offload-demo", help="where all state lives (deleted and recreated)")
    d = command("ddl", "create (or --print) the ClickHouse or Iceberg DDL")
    d.add_argument("target", choices=("clickhouse", "iceberg"))
    d.add_argument("--print", action="store_true", help="print the statements instead of applying them")
    st = command("status", "committed watermark and row count of Iceberg tables (pyiceberg)")
    st.add_argument(
        "tables", nargs="*", type=_table_name, help="<namespace>.<table> (default: every table of the namespace)"
    )
    a = command("audit", f"compare tables with ClickHouse per time bucket (exit 0 when equal, {AUDIT_DIFFER} when not)")
    a.add_argument("tables", nargs="+", help="the runbook's table names, e.g. bronze_trades_binance")
    a.add_argument("--since", help="audit from this timestamp to the committed watermark (default: the last 24 h)")
    a.add_argument(
        "--bucket-seconds", type=_positive, default=3600, help="width of the compared buckets (default 3600)"
    )
    a.add_argument(
        "--repair",
        action="store_true",
        help="replace each differing bucket with ClickHouse's rows (one commit per bucket; exit 0 once repaired)",
    )
    r = command("reset", "move a table's watermark back, deleting the rows from it on, in one commit")
    r.add_argument("--table", required=True, type=_table_name, help="Iceberg table as <namespace>.<table>")
    r.add_argument(
        "--to",
        required=True,
        help="new watermark, a timestamp: the rows from it on are deleted and offloaded again (the epoch: all)",
    )
    r.add_argument("--reason", default="manual reset", help="recorded in the snapshot summary")
    r.add_argument("--yes", action="store_true", help="do it (without: say what would happen)")
    rs = command("restamp", "stamp a watermark from the data on a table whose every trace of one was expired")
    rs.add_argument("--table", required=True, type=_table_name, help="Iceberg table as <namespace>.<table>")
    rs.add_argument("--yes", action="store_true", help="do it (without: say what would happen)")
    # Its arguments never reach this parser (main hands them to the job's): listed for --help only.
    command("run", "one offload run of one table, as the Spark job does (see run --help)", add_help=False)
    return p


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _split_run(argv: list[str]) -> tuple[list[str], list[str]]:
    """The arguments of `iceberg-offload` itself and, after `run`, the job's, which go to the
    job unchanged (argparse would reorder them). No option of the command's own takes a value,
    so its first argument that is not an option is the command."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return (argv[: i + 1], argv[i + 1 :]) if arg == "run" else (argv, [])
    return argv, []


def _failure(exc: Exception) -> str:
    """The one line that reports a failure: what went wrong and what to do, secrets masked."""
    from iceberg_offload.adapters.clickhouse_io import SourceError
    from iceberg_offload.adapters.iceberg_io import ConcurrentCommit, TargetError
    from iceberg_offload.core.mirror import scrub
    from iceberg_offload.core.settings import SettingsError

    todos: list[tuple[type[Exception], str]] = [
        (SettingsError, SETTINGS_TODO),
        (SourceError, "check ICEBERG_OFFLOAD_CLICKHOUSE_HOST and _PORT, and that ClickHouse listens there"),
        (ConcurrentCommit, "run it again"),
        (TargetError, f"`{PROG} status` lists the tables and their watermarks"),
        (OSError, "check the path and its permissions"),
    ]
    what = exc.what if isinstance(exc, CommandError) else str(exc)
    todo = exc.todo if isinstance(exc, CommandError) else next((t for k, t in todos if isinstance(exc, k)), None)
    if todo is None:  # not one of ours: its type says what it is
        what, todo = f"{type(exc).__name__}: {first_line(what)}", DEBUG_TODO
    passwords = [v for k, v in os.environ.items() if k.startswith("ICEBERG_OFFLOAD_") and k.endswith("PASSWORD")]
    return scrub(error_line(PROG, what, todo), passwords)


def _quiet_libraries() -> None:
    """Without a logging configuration Python prints a library's warnings on stderr (its last
    resort handler); a handler that drops them keeps a failure to its one line. A program that
    configures logging (the job does) still gets them through the root logger."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "ddl": _ddl,
    "status": _status,
    "reset": _reset,
    "restamp": _restamp,
    "audit": _audit,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a failure is one line on stderr (exit 1; bad arguments: exit 2)."""
    own, job_args = _split_run(list(sys.argv[1:] if argv is None else argv))
    args = _parser().parse_args(own)  # bad arguments: one line, SystemExit(2)
    if not args.debug:
        _quiet_libraries()
    try:
        if args.command == "run":
            from iceberg_offload.job.cli import main as job_main

            return job_main(job_args, prog=f"{PROG} run", debug=args.debug)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(error_line(PROG, "interrupted", "run the command again to finish it"), file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(_failure(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
