"""DDL rendering from ddl/ (iceberg_offload.adapters.ddl)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from iceberg_offload import cli
from iceberg_offload.adapters.ddl import clickhouse_statements, ddl_root, iceberg_statements, split_statements
from iceberg_offload.core.mirror import COLUMNS as MIRROR_COLUMNS
from iceberg_offload.core.settings import Settings
from iceberg_offload.core.tables import CANDLE_INTERVALS, SpecError, runbook_tables

REPO_DDL = Path(__file__).resolve().parents[2] / "ddl"

# The runbook's offload_watermarks columns.
RUNBOOK_COLUMNS = [
    "table_name",
    "last_offload_timestamp",
    "last_offload_max_sequence",
    "last_successful_run",
    "last_run_duration_seconds",
    "status",
    "failure_count",
    "last_error_message",
]


def _clickhouse_interval(interval: timedelta) -> str:
    """ClickHouse INTERVAL text for a candle interval, in its largest whole unit."""
    seconds = int(interval.total_seconds())
    for unit, size in (("DAY", 86_400), ("HOUR", 3600), ("MINUTE", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} SECOND"


# --- split_statements -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "statements"),
    [
        pytest.param("SELECT 1;\nSELECT 2;\n", ["SELECT 1", "SELECT 2"], id="two-statements"),
        pytest.param("SELECT 1;\nSELECT 2", ["SELECT 1", "SELECT 2"], id="last-without-semicolon"),
        pytest.param("SELECT 1;", ["SELECT 1"], id="semicolon-at-end-of-text"),
        pytest.param("SELECT 1;  \t\nSELECT 2;", ["SELECT 1", "SELECT 2"], id="blanks-after-semicolon"),
        pytest.param("-- header\n-- more\nSELECT 1;\n", ["SELECT 1"], id="comment-lines-dropped"),
        pytest.param("-- only a comment\n;\nSELECT 1;", ["SELECT 1"], id="comment-only-chunk-dropped"),
        pytest.param("SELECT 1;\n-- trailing notes\n", ["SELECT 1"], id="trailing-comment-chunk-dropped"),
        pytest.param("", [], id="empty"),
        pytest.param("\n\n  \n", [], id="blank"),
        pytest.param("-- just a comment", [], id="only-comment"),
        pytest.param("SELECT 'a;b' AS x;\nSELECT 2;", ["SELECT 'a;b' AS x", "SELECT 2"], id="semicolon-mid-line-kept"),
        pytest.param(
            "CREATE TABLE t\n(\n    a Int32 -- inline note\n)\nENGINE = Memory;",
            ["CREATE TABLE t\n(\n    a Int32 -- inline note\n)\nENGINE = Memory"],
            id="multi-line-statement-kept-whole",
        ),
        pytest.param("SELECT 1; SELECT 2;", ["SELECT 1; SELECT 2"], id="semicolon-not-at-line-end-no-split"),
    ],
)
def test_split_statements(text: str, statements: list[str]) -> None:
    assert split_statements(text) == statements


def test_split_statements_with_crlf_line_endings() -> None:
    assert split_statements("SELECT 1;\r\nSELECT 2;\r\n") == ["SELECT 1", "SELECT 2"]


# --- ddl_root ---------------------------------------------------------------------------------


def test_ddl_root_defaults_to_the_repository_ddl_directory() -> None:
    assert ddl_root() == REPO_DDL
    assert ddl_root("") == REPO_DDL


def test_ddl_root_honours_the_configured_directory(tmp_path: Path) -> None:
    (tmp_path / "clickhouse").mkdir()
    assert ddl_root(str(tmp_path)) == tmp_path


def test_ddl_root_is_the_settings_ddl_dir(tmp_path: Path) -> None:
    (tmp_path / "clickhouse").mkdir()
    settings = Settings.from_env({"ICEBERG_OFFLOAD_DDL_DIR": str(tmp_path)})
    assert ddl_root(settings.ddl_dir) == tmp_path


def test_ddl_root_without_a_clickhouse_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ICEBERG_OFFLOAD_DDL_DIR"):
        ddl_root(str(tmp_path))


def test_the_ddl_is_not_read_from_the_environment_behind_the_settings_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only Settings reads ICEBERG_OFFLOAD_*; whoever holds them passes ddl_dir on.
    monkeypatch.setenv("ICEBERG_OFFLOAD_DDL_DIR", str(tmp_path))
    assert ddl_root() == REPO_DDL
    assert clickhouse_statements() == clickhouse_statements(REPO_DDL)
    assert iceberg_statements("demo", "cold") == iceberg_statements("demo", "cold", REPO_DDL)


def test_the_ddl_command_prints_the_ddl_of_the_configured_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "clickhouse").mkdir()
    (tmp_path / "clickhouse" / "00_a.sql").write_text("CREATE TABLE a (x Int8) ENGINE = Memory;\n")
    monkeypatch.setenv("ICEBERG_OFFLOAD_DDL_DIR", str(tmp_path))
    assert cli.main(["ddl", "clickhouse", "--print"]) == 0
    assert capsys.readouterr().out == "CREATE TABLE a (x Int8) ENGINE = Memory;\n"


# --- ClickHouse DDL ---------------------------------------------------------------------------


def _create_table_columns(statement: str) -> list[tuple[str, str]]:
    """(name, rest of the line) of each column of a CREATE TABLE statement."""
    body = statement[statement.index("(") + 1 : statement.index("\n)")]
    columns = []
    for line in body.splitlines():
        line = line.strip().rstrip(",")
        if line and not line.startswith("--"):
            name, _, rest = line.partition(" ")
            columns.append((name, rest.strip()))
    return columns


def _watermarks_statement() -> str:
    [statement] = [s for s in clickhouse_statements() if re.search(r"CREATE TABLE .*\boffload_watermarks\b", s)]
    return statement


def test_clickhouse_statements_are_rendered_from_the_repository_by_default() -> None:
    assert clickhouse_statements() == clickhouse_statements(REPO_DDL)


def test_clickhouse_statements_start_with_the_watermark_table() -> None:
    assert re.match(r"CREATE TABLE IF NOT EXISTS offload_watermarks\b", clickhouse_statements()[0])


def test_watermark_table_has_exactly_the_runbook_columns() -> None:
    assert [name for name, _ in _create_table_columns(_watermarks_statement())] == RUNBOOK_COLUMNS


def test_watermark_table_matches_the_row_the_mirror_writes() -> None:
    assert tuple(name for name, _ in _create_table_columns(_watermarks_statement())) == MIRROR_COLUMNS


def test_watermark_table_is_keyed_by_table_name() -> None:
    assert "ORDER BY table_name" in _watermarks_statement()


def test_every_runbook_source_table_is_created() -> None:
    statements = clickhouse_statements()
    for table in runbook_tables():
        name = table.source.table
        assert any(re.match(rf"CREATE (TABLE|VIEW) IF NOT EXISTS {name}\b", s) for s in statements), name


@pytest.mark.parametrize(("label", "interval"), list(CANDLE_INTERVALS.items()), ids=list(CANDLE_INTERVALS))
def test_gold_template_is_rendered_for_each_interval(label: str, interval: timedelta) -> None:
    statements = clickhouse_statements()
    state = [s for s in statements if re.match(rf"CREATE TABLE IF NOT EXISTS gold_ohlcv_{label}_state\b", s)]
    mv = [s for s in statements if re.match(rf"CREATE MATERIALIZED VIEW IF NOT EXISTS gold_ohlcv_{label}_mv\b", s)]
    view = [s for s in statements if re.match(rf"CREATE VIEW IF NOT EXISTS gold_ohlcv_{label}\b(?!_)", s)]
    assert len(state) == len(mv) == len(view) == 1
    assert f"TO gold_ohlcv_{label}_state" in mv[0]
    assert f"INTERVAL {_clickhouse_interval(interval)})" in mv[0]
    assert f"FROM gold_ohlcv_{label}_state" in view[0]


def test_clickhouse_statements_have_no_unrendered_placeholders_or_stray_semicolons() -> None:
    for statement in clickhouse_statements():
        assert not re.search(r"\{\w+\}", statement), statement
        assert not statement.rstrip().endswith(";")
        assert not statement.lstrip().startswith("--")


def test_gold_statements_exist_for_exactly_the_six_intervals() -> None:
    labels = set()
    for statement in clickhouse_statements():
        if match := re.match(r"CREATE VIEW IF NOT EXISTS gold_ohlcv_(\w+)\b", statement):
            labels.add(match.group(1))
    assert labels == set(CANDLE_INTERVALS)


# --- Iceberg DDL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("catalog", "namespace"),
    [pytest.param("demo", "cold", id="defaults"), pytest.param("lake", "archive_2024", id="custom")],
)
def test_iceberg_statements_render_catalog_and_namespace(catalog: str, namespace: str) -> None:
    statements = iceberg_statements(catalog, namespace)
    assert statements[0] == f"CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace}"
    for statement in statements:
        assert not re.search(r"\{\w+\}", statement), statement
        assert f"{catalog}.{namespace}" in statement
    created = {
        m.group(1)
        for s in statements
        if (m := re.match(rf"CREATE TABLE IF NOT EXISTS {catalog}\.{namespace}\.(\w+)", s))
    }
    assert created == {t.target.table for t in runbook_tables()}


def test_iceberg_statements_default_root_is_the_repository() -> None:
    assert iceberg_statements("demo", "cold") == iceberg_statements("demo", "cold", REPO_DDL)


@pytest.mark.parametrize(
    ("catalog", "namespace"),
    [
        pytest.param("demo; DROP TABLE x", "cold", id="catalog-injection"),
        pytest.param("demo", "cold.sub", id="namespace-with-dot"),
        pytest.param("", "cold", id="empty-catalog"),
        pytest.param("demo", "cold-tier", id="namespace-with-dash"),
        pytest.param("demo", "1cold", id="namespace-leading-digit"),
        pytest.param("{namespace}", "cold", id="placeholder"),
    ],
)
def test_iceberg_statements_reject_non_identifiers(catalog: str, namespace: str) -> None:
    with pytest.raises(SpecError):
        iceberg_statements(catalog, namespace)


def test_custom_ddl_root_is_used(tmp_path: Path) -> None:
    (tmp_path / "clickhouse").mkdir()
    (tmp_path / "clickhouse" / "01_b.sql").write_text("CREATE TABLE b (x Int8) ENGINE = Memory;\n")
    (tmp_path / "clickhouse" / "00_a.sql").write_text("-- first\nCREATE TABLE a (x Int8) ENGINE = Memory;\n")
    (tmp_path / "clickhouse" / "README.md").write_text("not DDL;\n")
    (tmp_path / "clickhouse" / "10_c.sql.tmpl").write_text("CREATE VIEW c_{label} AS SELECT {interval};\n")
    statements = clickhouse_statements(tmp_path)
    assert statements[:2] == [
        "CREATE TABLE a (x Int8) ENGINE = Memory",
        "CREATE TABLE b (x Int8) ENGINE = Memory",
    ]
    assert statements[2:] == [
        f"CREATE VIEW c_{label} AS SELECT {_clickhouse_interval(interval)}"
        for label, interval in CANDLE_INTERVALS.items()
    ]
