"""`iceberg-offload` failures that need the engines, each one line on stderr: an unknown table or
namespace in a real SQLite catalog, a forward reset, ClickHouse unreachable; and `iceberg-offload
run` on the real engines, whose arguments reach the job unchanged (tests/unit/test_cli_errors.py
has the failures that need no engine).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from iceberg_offload import cli
from iceberg_offload.core.result import parse_result
from iceberg_offload.core.settings import PREFIX, to_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(sys.executable).with_name("iceberg-offload"))
BINANCE = "bronze_trades_binance"
PROG = "iceberg-offload"


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound here, never listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def committed(make_env: Any, base: datetime) -> Any:
    """An env whose binance table has one committed run (so it has a watermark)."""
    env = make_env("cli_errors", tables=[BINANCE])
    env.feed(base, base + timedelta(minutes=20))
    result = env.run(BINANCE, base + timedelta(minutes=20))
    assert result.outcome == "committed" and result.rows > 0, result
    return env


@dataclass(frozen=True)
class Case:
    """argv and environment changes ("{ns}": the env's namespace, "{port}": the closed port,
    "{ahead}": an hour past the committed watermark), the exit code, what the line must say."""

    argv: list[str]
    code: int
    says: str
    env: dict[str, str] = field(default_factory=dict)


CASES = {
    "status: the settings work": Case(["status", f"{{ns}}.{BINANCE}"], 0, ""),
    "status: unknown table": Case(
        ["status", "{ns}.no_such_table"], 1, "Iceberg table demo.{ns}.no_such_table does not exist"
    ),
    "status: table of an unknown namespace": Case(["status", "no_such_ns.t"], 1, "demo.no_such_ns.t does not exist"),
    "status: unknown namespace": Case(
        ["status"],
        1,
        "Iceberg namespace demo.no_such_ns does not exist",
        env={"ICEBERG_OFFLOAD_CATALOG_NAMESPACE": "no_such_ns"},
    ),
    "reset: unknown table": Case(
        ["reset", "--table", "{ns}.no_such_table", "--to", "2026-01-01T00:00:00Z"], 1, "does not exist"
    ),
    "reset: forward": Case(
        ["reset", "--table", f"{{ns}}.{BINANCE}", "--to", "{ahead}", "--yes"], 1, "a reset only moves it back"
    ),
    "ddl clickhouse: ClickHouse unreachable": Case(
        ["ddl", "clickhouse"],
        1,
        "cannot connect to ClickHouse at 127.0.0.1:{port}",
        env={"ICEBERG_OFFLOAD_CLICKHOUSE_PORT": "{port}"},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_failure_on_the_engines_is_one_line(
    case: Case,
    committed: Any,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ahead = iso(committed.watermark(BINANCE).timestamp + timedelta(hours=1))

    def fill(text: str) -> str:
        return text.replace("{ns}", committed.name).replace("{port}", str(closed_port)).replace("{ahead}", ahead)

    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in {**to_env(committed.settings), **case.env}.items():
        monkeypatch.setenv(name, fill(value))
    snapshots = committed.snapshot_ids(BINANCE)
    capsys.readouterr()
    code: int | str | None
    try:
        code = cli.main([fill(arg) for arg in case.argv])
    except SystemExit as exc:  # argparse refusing the arguments
        code = exc.code
    out, err = capsys.readouterr()
    assert code == case.code, f"exit {code}, expected {case.code}:\n{out}\n{err}"
    assert "Traceback" not in out + err
    assert committed.snapshot_ids(BINANCE) == snapshots, "a failed command changed the table"
    if case.code == 0:
        assert err == "" and f"{committed.name}.{BINANCE}" in out, out + err
        return
    assert len(err.splitlines()) == 1, f"stderr is not one line:\n{err}"
    assert err.startswith(f"{PROG}: error: ") and fill(case.says) in err, err


# --- `iceberg-offload run` as a process on the engines ---------------------------------------------------


def run_command(env: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    """`iceberg-offload run ARGV` in its own process, with the env's settings in its environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    settings = {**to_env(env.settings), "ICEBERG_OFFLOAD_SPARK_MASTER": "local[1]"}
    return subprocess.run(
        [SCRIPT, "run", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**clean, **settings, "PYTHONPATH": str(REPO / "operator")},
    )


def test_run_hands_its_arguments_to_the_job(make_env: Any, base: datetime) -> None:
    # Before the fix: "argument --table: expected one argument" (exit 2), whatever the arguments.
    env = make_env("cli_run", tables=[BINANCE])
    now = base + timedelta(minutes=30)
    env.feed(base, now)
    done = run_command(env, *env.argv(BINANCE), "--now", iso(now), "--buffer-seconds", "600")
    result = parse_result(done.stdout)
    assert done.returncode == 0 and result is not None, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert result.outcome == "committed", result
    # Each argument arrived: the env's own source database, the target, the clock and the buffer.
    assert result.watermark is not None and result.watermark.timestamp == now - timedelta(minutes=10), result
    (before,) = env.ch_rows(
        f"SELECT count() FROM `{env.name}`.`{BINANCE}` WHERE exchange_timestamp < {{t:DateTime64(6, 'UTC')}}",
        t=(now - timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    assert result.rows == before[0] > 0 and env.iceberg_count(BINANCE) == before[0], (result, before)
    assert "Traceback" not in done.stdout + done.stderr


def test_a_failed_run_ends_in_one_error_line(committed: Any) -> None:
    target = f"{committed.settings.catalog.name}.{committed.name}.no_such_table"
    done = run_command(
        committed,
        *("--table", "no_such_table", "--source-database", committed.name, "--source-table", BINANCE),
        *("--timestamp-column", "exchange_timestamp", "--target", target),
    )
    result = parse_result(done.stdout)
    assert done.returncode == 1 and result is not None, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert result.outcome == "failed" and result.error is not None and "does not exist" in result.error, result
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{PROG} run: error: ")]
    assert len(errors) == 1 and target in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
