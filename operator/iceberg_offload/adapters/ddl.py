"""The DDL of the ClickHouse source tables and the Iceberg cold tier, rendered from ddl/.

Pure logic apart from reading the files: no engine, catalog or network imports.
"""

from __future__ import annotations

import re
from pathlib import Path

from iceberg_offload.core.tables import CANDLE_INTERVALS, check_identifier

# ClickHouse INTERVAL syntax and the Iceberg partition transform, per candle interval.
_CLICKHOUSE_INTERVAL = {
    "1m": "1 MINUTE",
    "5m": "5 MINUTE",
    "15m": "15 MINUTE",
    "30m": "30 MINUTE",
    "1h": "1 HOUR",
    "1d": "1 DAY",
}
_ICEBERG_PARTITION = {
    "1m": "months(window_start)",
    "5m": "months(window_start)",
    "15m": "years(window_start)",
    "30m": "years(window_start)",
    "1h": "years(window_start)",
    "1d": "years(window_start)",
}


def ddl_root(configured: str = "") -> Path:
    """The ddl/ directory: the configured one (Settings.ddl_dir), else the one beside the package's
    source tree."""
    root = Path(configured) if configured else Path(__file__).resolve().parents[3] / "ddl"
    if not (root / "clickhouse").is_dir():
        raise FileNotFoundError(f"DDL directory {root} has no clickhouse/ folder (set ICEBERG_OFFLOAD_DDL_DIR)")
    return root


def split_statements(text: str) -> list[str]:
    """Statements separated by a ';' at the end of a line, comment-only chunks dropped."""
    statements = []
    for chunk in re.split(r";[ \t]*(?:\r?\n|$)", text):
        code = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
        if code:
            statements.append(code)
    return statements


def _render(folder: Path, values: dict[str, str], per_interval: dict[str, dict[str, str]]) -> list[str]:
    statements: list[str] = []
    for path in sorted(folder.iterdir()):
        text = path.read_text()
        if path.name.endswith(".sql.tmpl"):
            for label in CANDLE_INTERVALS:
                statements += split_statements(text.format(label=label, **values, **per_interval[label]))
        elif path.suffix == ".sql":
            statements += split_statements(text.format(**values) if values else text)
    return statements


def clickhouse_statements(root: Path | None = None) -> list[str]:
    """ClickHouse DDL for the watermark table and the nine source tables, in order."""
    per_interval = {label: {"interval": sql} for label, sql in _CLICKHOUSE_INTERVAL.items()}
    return _render((root or ddl_root()) / "clickhouse", {}, per_interval)


def iceberg_statements(catalog: str, namespace: str, root: Path | None = None) -> list[str]:
    """Spark SQL DDL for the cold namespace and its nine tables, in order."""
    values = {"catalog": check_identifier("catalog", catalog), "namespace": check_identifier("namespace", namespace)}
    per_interval = {label: {"partition": part} for label, part in _ICEBERG_PARTITION.items()}
    return _render((root or ddl_root()) / "iceberg", values, per_interval)
