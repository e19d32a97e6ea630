"""Every command fails in one line: `iceberg-offload: error: <what>, <what to do>` on stderr, exit 2
for bad arguments and 1 for other failures, no traceback (`--debug` adds it). The job's command
line does the same with its own prefix: `iceberg-offload run: error:` as the command's `run`,
`offload: error:` as spark_jobs/offload.py.

These are the failures that need no engine: arguments, settings, timestamps, table names, the
demo's state directory. tests/integration/test_cli_errors_on_engines.py has those that need the engines.
Settings come from a temporary directory (local_settings) through the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from iceberg_offload import cli
from iceberg_offload.core.settings import PREFIX, local_settings, to_env
from iceberg_offload.job import cli as job_cli

REPO = Path(__file__).resolve().parents[2]
PROG = "iceberg-offload"
TS = "2026-01-01T00:00:00Z"
# A valid job command line: each case below breaks one thing in it.
RUN = ["--table", "t", "--timestamp-column", "ts", "--target", "demo.cold.t"]


@dataclass(frozen=True)
class Case:
    """argv ("{tmp}" stands for the test's temporary directory), environment changes on top of
    valid settings (None deletes the variable), the exit code, and what the line must say."""

    argv: list[str]
    code: int
    says: str
    env: dict[str, str | None] = field(default_factory=dict)
    never: str = ""  # what the output must not contain


COMMAND_CASES = {
    # iceberg-offload itself
    "no command": Case([], 2, "the following arguments are required: command"),
    "unknown command": Case(["offload-everything"], 2, "invalid choice: 'offload-everything'"),
    "unknown global option": Case(["--verbose", "status"], 2, "unrecognized arguments: --verbose"),
    # demo
    "demo: --state-dir without a value": Case(
        ["demo", "--state-dir"], 2, "argument --state-dir: expected one argument"
    ),
    "demo: unknown option": Case(["demo", "--cycles", "3"], 2, "unrecognized arguments: --cycles 3"),
    "demo: state dir is a file": Case(["demo", "--state-dir", "{tmp}/a-file"], 1, "is not a directory"),
    "demo: state dir holds other files": Case(["demo", "--state-dir", "{tmp}/mine"], 1, "not a demo's state"),
    "demo: state dir holds the current dir": Case(["demo", "--state-dir", "."], 1, "holds the current directory"),
    # ddl
    "ddl: no target": Case(["ddl"], 2, "the following arguments are required: target"),
    "ddl: unknown target": Case(["ddl", "mysql"], 2, "argument target: invalid choice: 'mysql'"),
    "ddl: malformed port": Case(
        ["ddl", "clickhouse", "--print"],
        1,
        "ICEBERG_OFFLOAD_CLICKHOUSE_PORT: expected an integer",
        env={"ICEBERG_OFFLOAD_CLICKHOUSE_PORT": "http"},
    ),
    "ddl: unknown variable": Case(
        ["ddl", "iceberg", "--print"],
        1,
        "ICEBERG_OFFLOAD_COLOUR: not a setting",
        env={"ICEBERG_OFFLOAD_COLOUR": "blue"},
    ),
    "ddl: no ddl directory": Case(
        ["ddl", "clickhouse", "--print"], 1, "ICEBERG_OFFLOAD_DDL_DIR", env={"ICEBERG_OFFLOAD_DDL_DIR": "{tmp}/nowhere"}
    ),
    "ddl: a password in the wrong variable is masked": Case(
        ["ddl", "clickhouse", "--print"],
        1,
        "ICEBERG_OFFLOAD_CLICKHOUSE_PORT",
        env={"ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD": "s3cr3t-pw", "ICEBERG_OFFLOAD_CLICKHOUSE_PORT": "s3cr3t-pw"},
        never="s3cr3t-pw",
    ),
    # status
    "status: catalog URI not set": Case(
        ["status"], 1, "ICEBERG_OFFLOAD_CATALOG_URI: not set", env={"ICEBERG_OFFLOAD_CATALOG_URI": None}
    ),
    "status: warehouse not set": Case(
        ["status", "cold.t"],
        1,
        "ICEBERG_OFFLOAD_CATALOG_WAREHOUSE: not set",
        env={"ICEBERG_OFFLOAD_CATALOG_WAREHOUSE": None},
    ),
    "status: unknown catalog type": Case(
        ["status"],
        1,
        "ICEBERG_OFFLOAD_CATALOG_TYPE: expected 'jdbc' or 'rest'",
        env={"ICEBERG_OFFLOAD_CATALOG_TYPE": "hive"},
    ),
    "status: table without namespace": Case(["status", "trades"], 2, "'trades' is not <namespace>.<table>"),
    "status: empty table name": Case(["status", "cold."], 2, "'cold.' is not <namespace>.<table>"),
    "status: catalog database cannot be opened": Case(
        ["status"],
        1,
        "unable to open database file",
        env={"ICEBERG_OFFLOAD_CATALOG_URI": "jdbc:sqlite:{tmp}/no/such/dir/catalog.db"},
    ),
    # audit
    "audit: no table": Case(["audit"], 2, "the following arguments are required: tables"),
    "audit: unknown table": Case(["audit", "bronze_trades_binance", "trades"], 1, "unknown table trades, name one of"),
    "audit: --since not a timestamp": Case(
        ["audit", "--since", "last week", "silver_trades"], 1, "--since 'last week' is not a timestamp"
    ),
    "audit: bucket not positive": Case(
        ["audit", "--bucket-seconds", "0", "silver_trades"], 2, "argument --bucket-seconds: '0' is not a positive"
    ),
    # reset
    "reset: no --to": Case(["reset", "--table", "cold.t"], 2, "the following arguments are required: --to"),
    "reset: table without namespace": Case(["reset", "--table", "t", "--to", TS], 2, "'t' is not <namespace>.<table>"),
    "reset: not a timestamp": Case(
        ["reset", "--table", "cold.t", "--to", "yesterday"], 1, "not an ISO-8601 timestamp: 'yesterday'"
    ),
    "reset: a position within a timestamp": Case(
        ["reset", "--table", "cold.t", "--to", f"{TS}#7"], 1, "watermarks are timestamps only"
    ),
    "reset: malformed setting": Case(
        ["reset", "--table", "cold.t", "--to", TS],
        1,
        "ICEBERG_OFFLOAD_SUBWINDOW_MAX: expected a positive integer",
        env={"ICEBERG_OFFLOAD_SUBWINDOW_MAX": "0"},
    ),
    "reset: unknown option": Case(
        ["reset", "--table", "cold.t", "--to", TS, "--force"], 2, "unrecognized arguments: --force"
    ),
}

# The job's bad input, given to `iceberg-offload run` and to the job's own main (spark_jobs/offload.py).
JOB_CASES = {
    "no arguments": Case([], 2, "the following arguments are required: --table, --timestamp-column, --target"),
    # Before the fix `run` reordered its arguments: "argument --table: expected one argument".
    "target without catalog": Case(
        ["--table", "t", "--timestamp-column", "ts", "--target", "cold.t"],
        2,
        "--target 'cold.t' is not <catalog>.<namespace>.<table>",
    ),
    "upstream in the middle": Case(
        ["--table", "t", "--upstream", "a=demo.cold.a", "--timestamp-column", "ts", "--upstream", "b", *RUN[4:]],
        2,
        "--upstream 'b' is not NAME=<catalog>.<namespace>.<table>",
    ),
    "--to not a timestamp": Case([*RUN, "--to", "soon"], 2, "argument --to: not an ISO-8601 timestamp: 'soon'"),
    "--now not a timestamp": Case([*RUN, "--now", "12:00"], 2, "argument --now: not an ISO-8601 timestamp: '12:00'"),
    "--from a position": Case([*RUN, "--from", f"{TS}#3"], 2, "watermarks are timestamps only"),
    "--from after --to": Case(
        [*RUN, "--from", "2026-01-02T00:00:00Z", "--to", TS], 2, "--from 2026-01-02T00:00:00.000000Z is after --to"
    ),
    "negative buffer": Case([*RUN, "--buffer-seconds", "-1"], 2, "--buffer-seconds must not be negative"),
    "buffer not a number": Case([*RUN, "--buffer-seconds", "5m"], 2, "argument --buffer-seconds: invalid int value"),
    "unknown layer": Case([*RUN, "--layer", "platinum"], 2, "argument --layer: invalid choice: 'platinum'"),
    "unknown option": Case([*RUN, "--dry-run"], 2, "unrecognized arguments: --dry-run"),
    "unknown late-data mode": Case([*RUN, "--late-data", "fix"], 2, "argument --late-data: invalid choice: 'fix'"),
    "zero lookback": Case([*RUN, "--late-data", "repair", "--lookback-seconds", "0"], 2, "argument --lookback-seconds"),
    "backfill without a range": Case([*RUN, "--backfill", "b1"], 2, "a backfill needs all of --backfill NAME"),
    "backfill inverted": Case(
        [*RUN, "--backfill", "b1", "--backfill-from", TS, "--backfill-to", "2025-12-31T00:00:00Z"],
        2,
        "--backfill-to 2025-12-31T00:00:00.000000Z must be after --backfill-from",
    ),
    "allow-deletes without a backfill": Case([*RUN, "--allow-deletes"], 2, "--allow-deletes applies to a backfill"),
    "unknown variable": Case(RUN, 2, "ICEBERG_OFFLOAD_COLOUR: not a setting", env={"ICEBERG_OFFLOAD_COLOUR": "blue"}),
    "unknown failpoint": Case(
        RUN, 2, "ICEBERG_OFFLOAD_FAILPOINT: expected one of", env={"ICEBERG_OFFLOAD_FAILPOINT": "sometimes"}
    ),
}


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Valid settings of a temporary directory in the environment (ClickHouse on a port nobody
    is asked to serve: no case here gets as far as connecting), the cwd inside it, and the
    state directories the demo cases refuse."""
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in to_env(local_settings(tmp_path / "state", clickhouse_port=1)).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _apply(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.replace("{tmp}", str(tmp)))
    return [arg.replace("{tmp}", str(tmp)) for arg in case.argv]


def _call(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """A command line's main in-process: (exit code, stdout, stderr). An exception escaping it
    (what a user would see as a traceback) fails the test."""
    assert callable(main)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line(case: Case, prefix: str, code: object, out: str, err: str) -> None:
    lines = err.splitlines()
    assert code == case.code, f"exit {code}, expected {case.code}; stderr:\n{err}"
    assert len(lines) == 1, f"stderr is not one line:\n{err}"
    assert lines[0].startswith(f"{prefix}: error: "), lines[0]
    assert case.says in lines[0], f"{case.says!r} not in {lines[0]!r}"
    assert ", " in lines[0].removeprefix(f"{prefix}: error: "), f"no 'what to do' after the error: {lines[0]}"
    assert "Traceback" not in out + err
    if case.never:
        assert case.never not in out + err, f"{case.never!r} was printed"


@pytest.mark.parametrize("case", COMMAND_CASES.values(), ids=COMMAND_CASES.keys())
def test_a_failing_command_says_so_in_one_line(
    case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _call(cli.main, _apply(case, tmp, monkeypatch), capsys)
    _assert_one_line(case, PROG, code, out, err)


@pytest.mark.parametrize("case", JOB_CASES.values(), ids=JOB_CASES.keys())
@pytest.mark.parametrize(
    ("entry", "prefix"), [("iceberg-offload run", "iceberg-offload run"), ("spark_jobs/offload.py", "offload")]
)
def test_the_jobs_bad_input_is_one_line_with_its_prefix(
    case: Case,
    entry: str,
    prefix: str,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _apply(case, tmp, monkeypatch)
    if entry == "iceberg-offload run":
        code, out, err = _call(cli.main, ["run", *argv], capsys)
    else:
        code, out, err = _call(job_cli.main, argv, capsys)
    _assert_one_line(case, prefix, code, out, err)


def test_a_refused_state_directory_is_left_alone(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo deletes its state directory first: a directory of someone else's files is refused, untouched.
    before = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*"))
    for state_dir in ("{tmp}/mine", ".", "{tmp}/a-file"):
        case = Case(["demo", "--state-dir", state_dir], 1, "--state-dir")
        code, out, err = _call(cli.main, _apply(case, tmp, monkeypatch), capsys)
        _assert_one_line(case, PROG, code, out, err)
    assert sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")) == before
    assert (tmp / "mine" / "thesis.tex").read_text() == "precious\n"


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["--debug", "status"], 1), (["--debug", "run", *RUN], 2)],
    ids=["status", "run"],
)
def test_debug_adds_the_traceback(
    argv: list[str], code: int, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ICEBERG_OFFLOAD_COLOUR", "blue")
    got, _, err = _call(cli.main, argv, capsys)
    lines = err.splitlines()
    prefix = f"{PROG} run" if "run" in argv else PROG
    assert got == code, err
    assert lines[0] == "Traceback (most recent call last):", err
    assert "SettingsError: ICEBERG_OFFLOAD_COLOUR" in err
    assert lines[-1].startswith(f"{prefix}: error: ICEBERG_OFFLOAD_COLOUR: not a setting"), lines[-1]
    assert [line for line in lines if ": error: " in line] == [lines[-1]]


def test_debug_leaves_usage_errors_one_line(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--debug", "reset", "--table", "t", "--to", TS], ["--debug", "run", "--table"]):
        code, _, err = _call(cli.main, argv, capsys)
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_run_help_shows_the_jobs_arguments(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _call(cli.main, ["run", "--help"], capsys)
    assert code == 0 and err == ""
    assert out.startswith("usage: iceberg-offload run "), out
    for option in ("--table", "--timestamp-column", "--target", "--upstream", "--from", "--to", "--result-file"):
        assert option in out, f"{option} missing from run --help"
    code, out, _ = _call(cli.main, ["--help"], capsys)
    assert code == 0 and "--debug" in out and "run" in out.split("positional arguments:")[1]


# --- the real processes: the console script and the Spark job's main file ------------------------------------


def _process(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    clean["PYTHONPATH"] = str(REPO / "operator")  # this checkout's package, also from the shared venv
    return subprocess.run(command, capture_output=True, text=True, timeout=50, env={**clean, **env}, cwd=REPO)


SCRIPT = str(Path(sys.executable).with_name("iceberg-offload"))


@pytest.mark.parametrize(
    ("command", "code", "says"),
    [
        ([SCRIPT, "status"], 1, "iceberg-offload: error: ICEBERG_OFFLOAD_CATALOG_URI: not set"),
        ([SCRIPT, "run", *RUN[:4], "--target", "t"], 2, "iceberg-offload run: error: --target 't' is not"),
        ([sys.executable, "spark_jobs/offload.py", *RUN, "--to", "x"], 2, "offload: error: argument --to: not an"),
    ],
    ids=["iceberg-offload status", "iceberg-offload run", "spark_jobs/offload.py"],
)
def test_the_processes_print_one_line(command: list[str], code: int, says: str, tmp_path: Path) -> None:
    env = to_env(local_settings(tmp_path, clickhouse_port=1))
    del env["ICEBERG_OFFLOAD_CATALOG_URI"]
    done = _process(command, env)
    assert done.returncode == code, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith(says), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_the_console_scripts_run_help_is_the_jobs(tmp_path: Path) -> None:
    done = _process([SCRIPT, "run", "--help"], {})
    assert done.returncode == 0 and done.stdout.startswith("usage: iceberg-offload run "), done.stdout + done.stderr
