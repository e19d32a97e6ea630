"""The job's command line (spark_jobs/offload.py, `iceberg-offload run`): arguments to a run
request, the run, and its one result line.

Exit 0 when the run succeeded, 1 when it failed, 2 on bad input (arguments, settings). Every
failure ends with one line on stderr, `<prog>: error: <what>, <what to do>`, where prog is
`offload` for spark_jobs/offload.py and `iceberg-offload run` for the command."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from pyspark.sql import SparkSession

from iceberg_offload.adapters import clickhouse_io
from iceberg_offload.core.cli_errors import SETTINGS_TODO, OneLineParser, argument_type, error_line
from iceberg_offload.core.maintenance import MaintenanceError, MaintenancePolicy
from iceberg_offload.core.mirror import scrub
from iceberg_offload.core.repair import DEFAULT_POLICY, LateDataMode, LateDataPolicy
from iceberg_offload.core.result import RESULT_MARKER, OffloadResult
from iceberg_offload.core.schema_change import DEFAULT_MODE, MODES, parse_mode
from iceberg_offload.core.settings import Settings, SettingsError
from iceberg_offload.core.tables import LAYERS, SourceSpec, SpecError, TableSpec, TargetSpec
from iceberg_offload.core.typemap import TypeMappingError
from iceberg_offload.core.watermark import Watermark, WindowError, format_timestamp, parse_position, parse_timestamp
from iceberg_offload.job.backfill import BackfillRequest
from iceberg_offload.job.errors import OffloadError
from iceberg_offload.job.maintain import MaintenanceRequest, run_maintenance
from iceberg_offload.job.run import RunRequest, record_failure, run_offload, secrets
from iceberg_offload.job.session import spark_session

log = logging.getLogger("iceberg_offload.job")
PROG = "offload"


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=prog,
        description="Offload one window of a ClickHouse table into its Iceberg table, exactly once.",
    )
    p.add_argument("--table", required=True, help="the offloaded table's name (offload_watermarks.table_name)")
    p.add_argument("--layer", default="bronze", choices=LAYERS)
    p.add_argument("--source-database", default="default")
    p.add_argument("--source-table", help="ClickHouse table or view (default: --table)")
    p.add_argument("--timestamp-column", required=True)
    p.add_argument(
        "--sequence-column",
        help="orders rows that share a timestamp; read only to continue a watermark committed by the first "
        "protocol version (TIMESTAMP#SEQUENCE)",
    )
    p.add_argument("--target", required=True, help="Iceberg table as <catalog>.<namespace>.<table>")
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="NAME=CATALOG.NAMESPACE.TABLE",
        help="a table this one waits for: never offload past its committed watermark",
    )
    p.add_argument("--buffer-seconds", type=int, default=300, help="offload only rows older than this (default 300)")
    p.add_argument("--candle-seconds", type=int, help="candle interval: offload only closed candles")
    p.add_argument(
        "--from",
        dest="window_from",
        type=argument_type(_window_start),
        help="expected window start, a timestamp (checked against the committed watermark)",
    )
    p.add_argument(
        "--to",
        dest="window_to",
        type=argument_type(parse_timestamp),
        help="window end (exclusive: rows before it); default now minus the buffer",
    )
    p.add_argument("--now", type=argument_type(parse_timestamp), help="the clock, for replays and tests (default: now)")
    p.add_argument("--run-id", help="run identifier recorded in the snapshot summary")
    _late_data_arguments(p)
    _maintenance_arguments(p)
    p.add_argument(
        "--schema-evolution",
        choices=MODES,
        default=DEFAULT_MODE,
        help="a column ClickHouse has and Iceberg lacks, or has narrower: 'evolve' adds or widens it in Iceberg "
        "first, 'fail' refuses the run (default %(default)s)",
    )
    p.add_argument("--no-mirror", action="store_true", help="do not write offload_watermarks")
    p.add_argument("--result-file", type=Path, help="also write the result JSON here")
    return p


def _late_data_arguments(p: argparse.ArgumentParser) -> None:
    late = p.add_argument_group("late data and backfills")
    late.add_argument(
        "--late-data",
        choices=[m.value for m in LateDataMode],
        help="audit the lookback before the watermark first: 'repair' replaces buckets that differ from "
        "ClickHouse, 'report' only counts them (default: no audit)",
    )
    late.add_argument(
        "--lookback-seconds",
        type=_positive,
        default=int(DEFAULT_POLICY.lookback.total_seconds()),
        help="the audit's lookback (default %(default)s)",
    )
    late.add_argument(
        "--audit-bucket-seconds",
        type=_positive,
        default=int(DEFAULT_POLICY.bucket.total_seconds()),
        help="audit bucket width (default %(default)s)",
    )
    late.add_argument(
        "--backfill", metavar="NAME", help="instead of a window: make a committed range equal to ClickHouse"
    )
    late.add_argument("--backfill-from", type=argument_type(parse_timestamp), help="the backfill's start (inclusive)")
    late.add_argument("--backfill-to", type=argument_type(parse_timestamp), help="the backfill's end (exclusive)")
    late.add_argument(
        "--allow-deletes",
        action="store_true",
        help="let a backfill reach before ClickHouse's TTL, replacing rows ClickHouse dropped by nothing",
    )


def _maintenance_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("table maintenance (instead of a window)")
    group.add_argument(
        "--maintain",
        metavar="RUN_ID",
        help="compact, rewrite manifests, expire snapshots and remove orphan files, keeping the watermark",
    )
    defaults = MaintenancePolicy()
    group.add_argument(
        "--snapshot-max-age-seconds",
        type=_not_negative,
        default=int(defaults.max_snapshot_age.total_seconds()),
        help="expire snapshots older than this (default %(default)s)",
    )
    group.add_argument(
        "--retain-last",
        type=_count,
        default=defaults.retain_last,
        help="but keep the newest N snapshots (default %(default)s)",
    )
    group.add_argument(
        "--target-file-size-bytes",
        type=_count,
        default=defaults.target_file_size,
        help="compaction's target data file size (default %(default)s)",
    )
    group.add_argument(
        "--orphan-age-seconds",
        type=_count,
        default=int(defaults.orphan_age.total_seconds()),
        help="remove unreferenced files older than this (default %(default)s)",
    )


def maintenance_request(args: argparse.Namespace, spec: TableSpec) -> MaintenanceRequest | None:
    if args.maintain is None:
        return None
    if args.backfill or args.window_from or args.window_to:
        raise SpecError("--maintain runs instead of a window or a backfill: give no --from/--to/--backfill")
    policy = MaintenancePolicy(
        max_snapshot_age=timedelta(seconds=args.snapshot_max_age_seconds),
        retain_last=args.retain_last,
        target_file_size=args.target_file_size_bytes,
        orphan_age=timedelta(seconds=args.orphan_age_seconds),
    )
    return MaintenanceRequest(spec, args.maintain, policy, args.now)


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text} is negative")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text} is not a positive number")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text} is not a positive number of seconds")
    return value


def _backfill(args: argparse.Namespace) -> BackfillRequest | None:
    given = [args.backfill, args.backfill_from, args.backfill_to]
    if not any(given):
        if args.allow_deletes:
            raise SpecError(
                "--allow-deletes applies to a backfill only: give --backfill NAME --backfill-from --backfill-to"
            )
        return None
    if not all(given):
        raise SpecError("a backfill needs all of --backfill NAME, --backfill-from and --backfill-to")
    if args.backfill_to <= args.backfill_from:
        raise WindowError(
            f"--backfill-to {format_timestamp(args.backfill_to)} must be after --backfill-from "
            f"{format_timestamp(args.backfill_from)}"
        )
    return BackfillRequest(args.backfill, args.backfill_from, args.backfill_to, args.allow_deletes)


def _late_data(args: argparse.Namespace) -> LateDataPolicy | None:
    if args.late_data is None and not args.backfill:
        return None
    return LateDataPolicy(
        mode=LateDataMode(args.late_data or "repair"),
        lookback=timedelta(seconds=args.lookback_seconds),
        bucket=timedelta(seconds=args.audit_bucket_seconds),
    )


def _window_start(text: str) -> Watermark:
    return parse_position(text, "--from")


def request_from_args(args: argparse.Namespace) -> RunRequest:
    catalog, _, rest = args.target.partition(".")
    namespace, _, table = rest.partition(".")
    if not (catalog and namespace and table) or "." in table:
        raise SpecError(f"--target {args.target!r} is not <catalog>.<namespace>.<table>")
    upstream: dict[str, str] = {}
    for item in args.upstream:
        name, sep, identifier = item.partition("=")
        if not sep or identifier.count(".") != 2:
            raise SpecError(f"--upstream {item!r} is not NAME=<catalog>.<namespace>.<table>")
        upstream[name] = identifier
    if args.buffer_seconds < 0:
        raise SpecError("--buffer-seconds must not be negative")
    spec = TableSpec(
        name=args.table,
        layer=args.layer,
        source=SourceSpec(
            args.source_database, args.source_table or args.table, args.timestamp_column, args.sequence_column
        ),
        target=TargetSpec(catalog, namespace, table),
        buffer=timedelta(seconds=args.buffer_seconds),
        candle_interval=timedelta(seconds=args.candle_seconds) if args.candle_seconds else None,
    )
    if args.window_from and args.window_to and args.window_from.timestamp > args.window_to:
        raise WindowError(f"--from {args.window_from} is after --to {format_timestamp(args.window_to)}")
    request = RunRequest(
        spec=spec,
        upstream=upstream,
        now=args.now,
        requested_from=args.window_from,
        requested_to=args.window_to,
        mirror=not args.no_mirror,
        late_data=_late_data(args),
        backfill=_backfill(args),
        schema_evolution=parse_mode(args.schema_evolution),
    )
    return replace(request, run_id=args.run_id) if args.run_id else request


def main(
    argv: Sequence[str] | None = None,
    spark: SparkSession | None = None,
    settings: Settings | None = None,
    *,
    prog: str = PROG,
    debug: bool = False,
) -> int:
    """Run one table's offload and print its result line; exit 0 on success, 1 on failure, 2 on
    bad input. `prog` names the command in its usage and error lines; `debug` adds tracebacks."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser(prog).parse_args(argv)  # bad arguments: one line, SystemExit(2)
    try:
        settings = settings or Settings.from_env()
        request = request_from_args(args)
        maintenance = maintenance_request(args, request.spec)
    except (ValueError, SpecError, MaintenanceError) as exc:
        if debug:
            traceback.print_exc()
        todo = SETTINGS_TODO if isinstance(exc, SettingsError) else f"see {prog} --help"
        print(error_line(prog, str(exc), todo), file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        session = spark or spark_session(settings, f"offload-{request.spec.name}")
        if maintenance is not None:
            request = replace(request, run_id=maintenance.run_id, mirror=False)
            result = run_maintenance(session, settings, maintenance)
        else:
            result = run_offload(session, settings, request)
    except Exception as exc:
        message = scrub(_describe(exc), secrets(settings))
        log.error("%s: run %s failed: %s", request.spec.name, request.run_id, message, exc_info=debug)
        result = record_failure(settings, request, message, time.monotonic() - started)
    return _finish(result, args.result_file, prog)


def _finish(result: OffloadResult, result_file: Path | None, prog: str) -> int:
    """The result line (and file); for a failed run, the error line after it."""
    try:
        _emit(result, result_file)
    except OSError as exc:
        print(
            error_line(prog, f"cannot write --result-file {result_file}: {exc}", "give a writable path"),
            file=sys.stderr,
        )
        return 1
    if result.outcome != "failed":
        return 0
    print(
        error_line(
            prog, f"run {result.run_id} of {result.table} failed: {result.error}", "fix the cause and run it again"
        ),
        file=sys.stderr,
    )
    return 1


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def _describe(exc: BaseException) -> str:
    """One line that says what went wrong. An error raised in the executors reaches the driver
    wrapped in a Python worker's traceback: its last error line is the cause."""
    if isinstance(exc, (OffloadError, WindowError, TypeMappingError, clickhouse_io.SourceError)):
        return str(exc)
    lines = str(exc).strip().splitlines()
    causes = [m.group(2).strip() for m in map(_ERROR_LINE.match, lines) if m]
    if "thrown from the Python worker" in str(exc) and causes:
        return f"in a Spark executor: {causes[-1]}"[:1000]
    if type(exc).__name__ == "Py4JJavaError" and len(lines) > 1:
        # py4j: "An error occurred while calling oN.method.\n: <java exception>: <message>\n\tat ..."
        return f"in Spark: {lines[1].removeprefix(': ').strip()}"[:1000]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _emit(result: OffloadResult, result_file: Path | None) -> None:
    line = result.to_line()
    print(line, flush=True)
    if result_file is not None:
        result_file.write_text(line.removeprefix(RESULT_MARKER) + "\n")
