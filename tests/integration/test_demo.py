"""`iceberg-offload demo` (the quick start's `make demo`) end to end, as a user runs it.

It runs as a subprocess: the demo builds its own stack, and in this process the Spark session's
Iceberg catalog is fixed to the integration tests' state directory (a second session cannot be
made here), and chdb binds a process to one data directory at a time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from iceberg_offload.adapters.iceberg_io import committed_watermark, row_count
from iceberg_offload.core.tables import runbook_tables
from pyiceberg.catalog.sql import SqlCatalog

TABLES = [t.name for t in runbook_tables()]
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


def section(output: str, title: str) -> list[str]:
    """The lines of one `== title` section of the demo's output, up to the next blank line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title}"))
    body = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        body.append(line)
    return body


def test_demo_offloads_all_nine_tables(tmp_path: Path) -> None:
    state_dir = tmp_path / "demo"
    command = [str(Path(sys.executable).with_name("iceberg-offload")), "demo", "--state-dir", str(state_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICEBERG_OFFLOAD_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    out = done.stdout
    assert done.returncode == 0, f"demo exited {done.returncode}:\n{out[-3000:]}\n{done.stderr[-3000:]}"
    assert "all 9 tables match" in out, out[-3000:]

    for cycle in ("cycle 1", "cycle 2"):
        rows = {line.split()[0]: line.split() for line in section(out, cycle)[1:]}
        assert sorted(rows) == sorted(TABLES), f"{cycle}: {sorted(rows)}"
        for table in TABLES[:3]:  # bronze and silver get new trades every cycle
            assert rows[table][1] == "committed" and int(rows[table][2]) > 0, f"{cycle}: {rows[table]}"
        assert all(r[1] in ("committed", "skipped") for r in rows.values()), f"{cycle}: {rows}"

    watermarks = section(out, "offload_watermarks")
    assert watermarks[0].split() == RUNBOOK_COLUMNS, f"the runbook's columns, in order: {watermarks[0]}"
    mirror = {line.split()[0]: line for line in watermarks[1:]}
    assert sorted(mirror) == sorted(TABLES), "one offload_watermarks row per table"
    for table, line in mirror.items():
        assert re.search(r"\ssuccess\s+0\s*$", line), f"{table} is not 'success' with failure_count 0: {line}"

    counts = {line.split()[0]: line.split() for line in section(out, "row counts")[1:]}
    assert sorted(counts) == sorted(TABLES)
    catalog = SqlCatalog(
        "demo", uri=f"sqlite:///{(state_dir / 'catalog.db').resolve()}", warehouse=(state_dir / "warehouse").as_uri()
    )
    for table, (_, watermark, clickhouse_rows, iceberg_rows, equal) in counts.items():
        assert equal == "yes" and clickhouse_rows == iceberg_rows and int(iceberg_rows) > 0, counts[table]
        # What the demo printed is what its Iceberg tables hold.
        committed = catalog.load_table(f"cold.{table}")
        assert row_count(committed) == int(iceberg_rows), table
        assert str(committed_watermark(committed)) == watermark, table
