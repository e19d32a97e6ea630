"""What the ClickHouse HTTP interface says: its errors, the URL parameters it owns, the query
shapes it tells apart, and the headers it answers with."""

from __future__ import annotations

import json
import re
import time

_ERROR_RE = re.compile(r"Code: (\d+)\. DB::Exception: (.*)", re.S)

HTTP_ONLY = frozenset({
    "query", "query_id", "session_id", "session_timeout", "session_check", "database", "user",
    "password", "quota_key", "role", "default_format", "wait_end_of_query", "buffer_size",
    "client_protocol_version", "compress", "decompress", "enable_http_compression", "stacktrace",
    "close_session", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close",
})  # fmt: skip
# Formats whose blocks concatenate into one valid output. chdb streams every block of
# Arrow, ArrowStream, Parquet or JSON as a complete document, so those are sent whole.
STREAMABLE = frozenset({
    "native", "tabseparated", "tsv", "tabseparatedraw", "tsvraw", "tabseparatedwithnames",
    "tsvwithnames", "tabseparatedwithnamesandtypes", "tsvwithnamesandtypes", "csv",
    "csvwithnames", "csvwithnamesandtypes", "jsoneachrow", "jsoncompacteachrow", "rowbinary",
    "rowbinarywithnames", "rowbinarywithnamesandtypes",
})  # fmt: skip
INSERT_RE = re.compile(rb"\s*(INSERT\s+INTO\s[^']*?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.I | re.S)
FORMAT_RE = re.compile(r"\bFORMAT\s+(\w+)[\s;]*$", re.I)
_LEADING = r"(?:\s+|--[^\n]*\n|/\*.*?\*/)*"
READ_RE = re.compile(_LEADING + r"(?:SELECT|WITH|SHOW|DESC|EXPLAIN|EXISTS|\()", re.I | re.S)
STATE_RE = re.compile(_LEADING + r"(?:SET|USE)\b", re.I | re.S)


class QueryError(Exception):
    """An error as ClickHouse reports it: code, `DB::Exception: ...` message, HTTP status."""

    def __init__(self, code: int, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.status, self.body = code, status, f"Code: {code}. DB::Exception: {message}\n".encode()

    @classmethod
    def from_engine(cls, exc: BaseException) -> QueryError:
        match = _ERROR_RE.search(str(exc))
        return cls(int(match[1]), match[2]) if match else cls(1001, str(exc))


def quote(value: str, quote: str = "'") -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def summary(stats: dict[str, int], started: float) -> tuple[str, str]:
    keys = ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read", "result_rows")
    summary = {key: str(stats.get(key, 0)) for key in keys}
    summary["elapsed_ns"] = str(int((time.monotonic() - started) * 1e9))
    return "X-ClickHouse-Summary", json.dumps(summary)


def content_type(fmt: str) -> str:
    text = fmt.lower().startswith(("tabseparated", "tsv", "csv", "json", "pretty", "values", "markdown"))
    return "text/plain; charset=UTF-8" if text else "application/octet-stream"
