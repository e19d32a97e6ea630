"""Carries out a fault schedule's steps on the real engines, as the operator and an operator's
operator would: the job in process (``run_offload`` on the reused Spark session, a new session per
thread for overlapping runs), the real job process (``spark_jobs/offload.py``) where it must die
by a failpoint, and ``iceberg-offload reset`` through the CLI.

What happened is only reported (a line per step); whether it kept exactly once is the oracle's
business (oracle.py), which reads the engines itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from iceberg_offload import cli
from iceberg_offload.core.maintenance import MIN_ORPHAN_AGE, MaintenancePolicy
from iceberg_offload.core.repair import LateDataPolicy
from iceberg_offload.core.result import OffloadResult, parse_result
from iceberg_offload.core.settings import to_env
from iceberg_offload.core.watermark import format_timestamp
from iceberg_offload.job.maintain import MaintenanceRequest, run_maintenance
from iceberg_offload.job.run import RunRequest, run_offload
from iceberg_offload.local.runner import upstream_of
from oracle import ClickHouseHttp, Oracle, Position, open_iceberg
from pyspark.sql import SparkSession
from schedules import TABLES, Insert, Maintain, Overlap, Reset, Run, Slot, Step

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]
PROCESS_TIMEOUT = 600  # a hang guard for a job process, not a timing expectation
MOVE_TIMEOUT = 600  # the same for an overlapped run that never reaches its next phase
COLUMNS = {
    "binance": ["exchange_timestamp", "sequence", "symbol", "trade_id", "price", "quantity", "side", "is_buyer_maker"],
    "kraken": ["exchange_timestamp", "sequence", "pair", "trade_id", "price", "volume", "side", "order_type", "misc"],
}


def oracle_of(env: Any) -> Oracle:
    """The oracle of an OffloadEnv's tables, on the engines' addresses only."""
    clickhouse, catalog = env.settings.clickhouse, env.settings.catalog
    return Oracle(
        clickhouse=ClickHouseHttp(f"http://{clickhouse.host}:{clickhouse.port}", clickhouse.user, clickhouse.password),
        catalog=open_iceberg(catalog.name, catalog.uri, catalog.warehouse),
        database=env.name,
        namespace=env.name,
    )


class Died(Exception):
    """An in-process run killed at a phase by its hook."""


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, Died):
        return f"died at {exc}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"failed: {type(exc).__name__}: {first[:300]}"


def describe_result(result: OffloadResult) -> str:
    if result.outcome == "failed":
        return f"failed: {(result.error or '')[:300]}"
    return f"{result.outcome} {result.rows} rows, watermark {result.watermark_timestamp}#{result.watermark_sequence}"


def _row(exchange: str, ts: datetime, seq: int) -> list[Any]:
    if exchange == "binance":
        return [ts, seq, "BTCUSDT", 7_000_000_000 + seq, Decimal("91000.5"), Decimal("0.01"), "buy", False]
    return [ts, seq, "XBT/USD", 900_000_000 + seq, Decimal("90950.5"), Decimal("0.02"), "sell", "limit", None]


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values`, restored afterwards (the CLI reads its settings from there)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Gate:
    """An overlapped run's stops: at each phase its thread waits until the scheduler moves it on.

    The k-th stop waits for the k-th move after the start; `free` lets every stop pass (after a
    hang)."""

    def __init__(self, die_at: str | None) -> None:
        self.cond = threading.Condition()
        self.die_at = die_at
        self.stops: list[str] = []
        self.moves = 0
        self.started = self.done = self.free = False
        self.outcome = "not started"

    def hook(self, phase: str) -> None:
        with self.cond:
            self.stops.append(phase)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.moves >= len(self.stops) or self.free)
        if phase == self.die_at:
            raise Died(phase)

    def finish(self, outcome: str) -> None:
        with self.cond:
            self.outcome, self.done = outcome, True
            self.cond.notify_all()

    def move(self, start: Callable[[], None]) -> None:
        """Start the run, or let it go on from its stop; return at its next stop or its end."""
        with self.cond:
            if self.done:
                return
            if self.started:
                self.moves += 1
                self.cond.notify_all()
            else:
                self.started = True
                start()
            if not self.cond.wait_for(lambda: self.done or len(self.stops) > self.moves, MOVE_TIMEOUT):
                raise RuntimeError(f"an overlapped run neither reached a phase nor ended (stops {self.stops})")

    def release(self) -> None:
        with self.cond:
            self.free = True
            self.cond.notify_all()


@dataclass
class FaultRunner:
    """One schedule's steps on one OffloadEnv (tests/integration/conftest.py)."""

    env: Any
    base: datetime
    oracle: Oracle
    label: str
    sequences: dict[str, int] = field(default_factory=lambda: {"binance": 0, "kraken": 0})

    def session(self) -> SparkSession:
        """A session of the one Spark application, shuffling into one partition: the windows hold a
        few rows, and each shuffle partition costs a task (a session's own SQL conf, not shared)."""
        session: SparkSession = self.env.spark.newSession()
        session.conf.set("spark.sql.shuffle.partitions", "1")
        return session

    def at(self, ms: int) -> datetime:
        return self.base + timedelta(milliseconds=ms)

    def step(self, number: int, step: Step) -> tuple[str, dict[str, Position]]:
        """Carry out one step: (what happened, the tables a reset moved and where to)."""
        if isinstance(step, Insert):
            return self.insert(step), {}
        if isinstance(step, Run) and step.failpoint:
            return self.process(number, step), {}
        if isinstance(step, Run):
            return self.run(number, step), {}
        if isinstance(step, Overlap):
            return self.overlap(number, step), {}
        if isinstance(step, Maintain):
            return self.maintain(number, step)
        return self.reset(step)

    def maintain(self, number: int, step: Maintain) -> tuple[str, dict[str, Position]]:
        """The operator's maintenance run (job/maintain.py), or a user's own through Spark SQL;
        a user's compaction voids idle progress, which moves the watermark back (safely: the
        next run reads the empty window again), reported like a reset so the oracle allows it."""
        before = self.oracle.marks.get(step.table)
        spec = self.env.spec(step.table)
        if step.by == "operator":
            policy = MaintenancePolicy(max_snapshot_age=timedelta(0), retain_last=1, orphan_age=MIN_ORPHAN_AGE)
            try:
                run_maintenance(
                    self.session(), self.env.settings, MaintenanceRequest(spec, f"{self.label}-{number}", policy)
                )
            except Exception as exc:
                return f"maintenance failed: {describe_error(exc)}", {}
            return "maintained by the operator", {}
        name = spec.target.catalog_identifier
        catalog = spec.target.catalog
        session = self.session()
        session.sql(
            f"CALL {catalog}.system.rewrite_data_files(table => '{name}', options => map('min-input-files', '2'))"
        )
        now = format_timestamp(datetime.now(UTC))
        session.sql(
            f"CALL {catalog}.system.expire_snapshots(table => '{name}', older_than => TIMESTAMP '{now}', "
            "retain_last => 1)"
        )
        _, after = self.oracle.iceberg(step.table)
        moved = {step.table: after} if after is not None and before is not None and after < before else {}
        return f"maintained by hand (watermark {after})", moved

    def insert(self, step: Insert) -> str:
        for exchange in step.exchanges:
            first = self.sequences[exchange] + 1
            self.sequences[exchange] += step.count
            rows = [_row(exchange, self.at(step.at_ms), s) for s in range(first, first + step.count)]
            self.env.clickhouse.insert(f"bronze_trades_{exchange}", rows, column_names=COLUMNS[exchange])
        return "inserted"

    def request(self, number: int, run: Run, tag: str, hook: Callable[[str], None] | None) -> RunRequest:
        spec = self.env.spec(run.table)
        return RunRequest(
            spec=spec,
            run_id=f"{self.label}-{number}{tag}",
            upstream=upstream_of(spec, self.env.tables),
            now=self.at(run.slot.now_ms),
            requested_to=None if run.slot.to_ms is None else self.at(run.slot.to_ms),
            late_data=LateDataPolicy() if run.repair else None,
            on_phase=hook,
        )

    def run(self, number: int, run: Run) -> str:
        def hook(phase: str) -> None:
            if phase == run.die_at:
                raise Died(phase)

        try:
            request = self.request(number, run, "", hook)
            return describe_result(run_offload(self.session(), self.env.settings, request))
        except Exception as exc:
            return describe_error(exc)

    def overlap(self, number: int, step: Overlap) -> str:
        """The runs in threads, each on its own Spark session, moved phase by phase in `order`."""
        gates = [Gate(run.die_at) for run in step.runs]
        threads = [
            threading.Thread(target=self._overlapped, args=(number, run, chr(65 + i), gate), daemon=True)
            for i, (run, gate) in enumerate(zip(step.runs, gates, strict=True))
        ]
        try:
            for i in step.order:
                gates[i].move(threads[i].start)
            for gate, thread in zip(gates, threads, strict=True):
                while not gate.done:
                    gate.move(thread.start)
        finally:
            for gate in gates:
                gate.release()
            for thread in threads:
                if thread.is_alive():
                    thread.join(MOVE_TIMEOUT)
        return "; ".join(f"{chr(65 + i)} {'>'.join(g.stops)}: {g.outcome}" for i, g in enumerate(gates))

    def _overlapped(self, number: int, run: Run, tag: str, gate: Gate) -> None:
        session = self.session()
        try:
            result = run_offload(session, self.env.settings, self.request(number, run, tag, gate.hook))
            gate.finish(describe_result(result))
        except BaseException as exc:
            gate.finish(describe_error(exc))

    def process(self, number: int, run: Run) -> str:
        """The real job process, as the Spark Operator starts it, dying at its failpoint."""
        argv = ["--now", format_timestamp(self.at(run.slot.now_ms)), "--run-id", f"{self.label}-{number}"]
        if run.slot.to_ms is not None:
            argv += ["--to", format_timestamp(self.at(run.slot.to_ms))]
        if run.repair:
            argv += ["--late-data", "repair"]
        job_env = {
            **os.environ,
            **to_env(self.env.settings),
            "ICEBERG_OFFLOAD_FAILPOINT": run.failpoint or "",
            "ICEBERG_OFFLOAD_SPARK_MASTER": "local[1]",
        }
        job = subprocess.Popen(
            [sys.executable, "spark_jobs/offload.py", *self.env.argv(run.table, *argv)],
            cwd=REPO,
            env=job_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a mid-read failpoint kills the job's whole process group
        )
        try:
            out, _ = job.communicate(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            out, _ = job.communicate()
            return f"job process hung; killed (output ends {out[-300:]!r})"
        result = parse_result(out)
        return f"job process exit {job.returncode}" + (f", {describe_result(result)}" if result else ", no result line")

    def close(self, number: int, plan_steps: tuple[Step, ...]) -> str:
        """After the schedule: one cycle of every table, repairing, at the schedule's last clock
        (no fault): what the operator's next cycle does. Late rows are then in every table."""
        runs = [
            r for s in plan_steps for r in ((s,) if isinstance(s, Run) else s.runs if isinstance(s, Overlap) else ())
        ]
        nows = [r.slot.now_ms for r in runs]
        slot = Slot(max(nows, default=10 * 60_000))
        outcomes = [f"{t}: {self.run(number, Run(t, slot, repair=True))}" for t in TABLES]
        return "; ".join(outcomes)

    def reset(self, step: Reset) -> tuple[str, dict[str, Position]]:
        """`iceberg-offload reset --table NS.TABLE --to TS [--yes]`, to a position resolved now."""
        mark = self.oracle.marks.get(step.table)
        if mark is None:
            return "nothing to reset: no committed watermark", {}
        target = self.reset_target(step, mark)
        stamp = format_timestamp(EPOCH + timedelta(microseconds=target))
        argv = ["reset", "--table", f"{self.env.name}.{step.table}", "--to", stamp, *([] if step.dry else ["--yes"])]
        out = io.StringIO()
        with environment(to_env(self.env.settings)), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse refusing the arguments
                code = exc.code if isinstance(exc.code, int) else 2
            except Exception as exc:
                return f"reset to {stamp}: {describe_error(exc)}", {}
        moved = {} if step.dry or code != 0 else {step.table: Position(target)}
        return f"reset to {stamp}: exit {code} ({out.getvalue().strip()[-200:]!r})", moved

    def reset_target(self, step: Reset, mark: Position) -> int:
        """Epoch microseconds at or before the committed watermark: at it, at a millisecond that
        holds offloaded rows (their rows are then deleted and offloaded again), or before it."""
        if step.kind == "row":
            rows, _ = self.oracle.iceberg(step.table)
            stamps = sorted({ts for ts, seq, _ in rows if mark.covers(ts, seq)})
            if stamps:
                return stamps[step.pick % len(stamps)]
        if step.kind == "shift":
            return max(0, mark.micros - step.shift_ms * 1000)
        return mark.micros
