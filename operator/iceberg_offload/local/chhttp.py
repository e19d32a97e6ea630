"""ClickHouse's HTTP interface served by the embedded engine chdb.

One process owns a chdb data directory; other processes (Spark's Python workers, tests,
the demo) reach it through clickhouse-connect's ordinary HTTP client, as they would reach
a real ClickHouse server.

    python -m iceberg_offload.local.chhttp --path DIR [--host H] [--port P] [--port-file F]
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import fcntl
import functools
import hmac
import itertools
import json
import logging
import os
import re
import signal
import socket
import socketserver
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

SESSION_TIMEOUT = 60.0
# A client may send its next request on a new TCP connection just before the handler of its
# previous one released the session, so wait this long before answering SESSION_IS_LOCKED.
SESSION_LOCK_WAIT = 5.0
_POOL_SIZE = 8
_HEAD_LIMIT = 1 << 20  # an INSERT statement sent in the body must end within its first MiB

_HTTP_ONLY = frozenset({
    "query", "query_id", "session_id", "session_timeout", "session_check", "database", "user",
    "password", "quota_key", "role", "default_format", "wait_end_of_query", "buffer_size",
    "client_protocol_version", "compress", "decompress", "enable_http_compression", "stacktrace",
    "close_session", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close",
})  # fmt: skip
# Formats whose blocks concatenate into one valid output. chdb streams every block of
# Arrow, ArrowStream, Parquet or JSON as a complete document, so those are sent whole.
_STREAMABLE = frozenset({
    "native", "tabseparated", "tsv", "tabseparatedraw", "tsvraw", "tabseparatedwithnames",
    "tsvwithnames", "tabseparatedwithnamesandtypes", "tsvwithnamesandtypes", "csv",
    "csvwithnames", "csvwithnamesandtypes", "jsoneachrow", "jsoncompacteachrow", "rowbinary",
    "rowbinarywithnames", "rowbinarywithnamesandtypes",
})  # fmt: skip
_INSERT_RE = re.compile(rb"\s*(INSERT\s+INTO\s[^']*?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.I | re.S)
_FORMAT_RE = re.compile(r"\bFORMAT\s+(\w+)[\s;]*$", re.I)
_LEADING = r"(?:\s+|--[^\n]*\n|/\*.*?\*/)*"
_READ_RE = re.compile(_LEADING + r"(?:SELECT|WITH|SHOW|DESC|EXPLAIN|EXISTS|\()", re.I | re.S)
_STATE_RE = re.compile(_LEADING + r"(?:SET|USE)\b", re.I | re.S)
_ERROR_RE = re.compile(r"Code: (\d+)\. DB::Exception: (.*)", re.S)
_NAME_RE = re.compile(r"[A-Za-z_]\w*\Z")
_UNKNOWN = "\0unknown"


class _QueryError(Exception):
    """An error as ClickHouse reports it: code, `DB::Exception: ...` message, HTTP status."""

    def __init__(self, code: int, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.status, self.body = code, status, f"Code: {code}. DB::Exception: {message}\n".encode()

    @classmethod
    def from_engine(cls, exc: BaseException) -> _QueryError:
        match = _ERROR_RE.search(str(exc))
        return cls(int(match[1]), match[2]) if match else cls(1001, str(exc))


def _quote(value: str, quote: str = "'") -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


class _Conn:
    """One chdb connection and the URL settings and database last applied to it."""

    def __init__(self, path: str) -> None:
        self._c: Any = chdb.connect(path)  # chdb's result, stream and insert objects are untyped
        self.applied: dict[str, str] = {}
        self.database: str | None = "default"
        self.dirty = False  # ran SET or USE, so it must not serve other clients

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:  # chdb's ChdbError and its streaming errors are RuntimeErrors
            raise _QueryError.from_engine(exc) from None

    def prepare(self, settings: dict[str, str], database: str | None) -> None:
        """URL settings last one query on a real server, so undo those of the previous request.

        Undoing means DEFAULT: a session's own SET of a name that a URL also sets is lost.
        """
        if bad := [name for name in settings if not _NAME_RE.match(name)]:
            raise _QueryError(115, f"Unknown setting '{bad[0]}'. (UNKNOWN_SETTING)")
        changes = [f"{name} = DEFAULT" for name in self.applied if name not in settings]
        changes += [f"{name} = {_quote(v)}" for name, v in settings.items() if self.applied.get(name) != v]
        if changes:  # a failing SET applies none of its settings
            self._call(self._c.query, "SET " + ", ".join(changes), "TabSeparated")
            self.applied = dict(settings)
        if database and database != self.database:
            self._call(self._c.query, f"USE {_quote(database, '`')}", "TabSeparated")
            self.database = database

    def forget_state(self) -> None:
        """After an explicit SET or USE: drop a pooled connection, redo URL settings on a session."""
        self.dirty, self.database = True, None
        self.applied = dict.fromkeys(self.applied, _UNKNOWN)

    def query(self, sql: str, fmt: str, params: dict[str, str]) -> tuple[bytes, dict[str, int]]:
        res = self._call(self._c.query, sql, fmt, params=params)
        stats = dict(read_rows=res.rows_read(), read_bytes=res.bytes_read(), written_rows=res.rows_written())
        return bytes(res.bytes()), stats

    def stream(self, sql: str, fmt: str, params: dict[str, str]) -> Generator[bytes]:
        result = self._call(self._c.send_query, sql, fmt, params=params)
        try:
            while (chunk := self._call(result.fetch)) is not None:
                yield bytes(chunk.bytes())
        finally:
            with suppress(RuntimeError):
                result.close()  # cancels the query unless it ran to the end

    def insert(self, statement: str, fmt: str, data: Iterable[bytes]) -> dict[str, int]:
        inserter = self._call(self._c.send_insert, statement, fmt)
        try:
            for piece in data:
                if piece:
                    self._call(inserter.append, piece)
            res = self._call(inserter.finish)
        except BaseException:
            with suppress(RuntimeError):
                inserter.cancel()
            raise
        return {"written_rows": res.rows_written, "written_bytes": res.bytes_written}

    def close(self) -> None:
        self._c.close()


def _owned_elsewhere(data_dir: Path) -> bool:
    """Whether another process holds the lock ClickHouse takes on `<dir>/status`."""
    try:
        fd = os.open(data_dir / "status", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock if this probe got it
    return False


class _Session:
    def __init__(self, conn: _Conn) -> None:
        self.conn, self.lock, self.users, self.expires = conn, threading.Lock(), 0, 0.0


class _Engine:
    """chdb connections to one directory: one per HTTP session, a pool for the rest."""

    def __init__(self, data_dir: Path) -> None:
        self.path = str(data_dir)
        self._lock = threading.Lock()
        self._idle: list[_Conn] = []
        self._sessions: dict[str, _Session] = {}
        self._closed = False
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._anchor = _Conn(self.path)  # the engine stops when its last connection closes
        except RuntimeError as exc:  # the real cause only reaches stderr
            if _owned_elsewhere(data_dir):
                raise RuntimeError(
                    f"chdb data directory {data_dir} is owned by another process (its status file is "
                    "locked): stop that process or use another directory"
                ) from None
            raise RuntimeError(f"cannot open chdb data directory {data_dir}: {exc}") from exc
        self.timezone = self._anchor.query("SELECT timezone()", "TabSeparated", {})[0].decode().strip()

    @contextmanager
    def connection(self, session_id: str, timeout: float) -> Iterator[_Conn]:
        if self._closed:
            raise _QueryError(236, "The server is shutting down. (ABORTED)")
        if not session_id:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            conn = conn or _Conn(self.path)
            try:
                yield conn
            finally:
                with self._lock:
                    if keep := not (conn.dirty or self._closed or len(self._idle) >= _POOL_SIZE):
                        self._idle.append(conn)
                if not keep:
                    conn.close()
            return
        with self._lock:
            if (session := self._sessions.get(session_id)) is None:
                session = self._sessions[session_id] = _Session(_Conn(self.path))
            session.users += 1
        try:
            if not session.lock.acquire(timeout=SESSION_LOCK_WAIT):
                raise _QueryError(373, "Session is locked by a concurrent client. (SESSION_IS_LOCKED)")
            try:
                yield session.conn
            finally:
                session.lock.release()
        finally:
            with self._lock:
                session.users -= 1
                session.expires = time.monotonic() + timeout
                if self._closed and session.users == 0:
                    session.conn.close()

    def expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [sid for sid, s in self._sessions.items() if s.users == 0 and s.expires < now]
            conns = [self._sessions.pop(sid).conn for sid in idle]
        for conn in conns:
            conn.close()

    def close(self) -> None:
        """Close idle connections now and busy ones once released."""
        with self._lock:
            self._closed = True
            conns = [*self._idle, *(s.conn for s in self._sessions.values() if s.users == 0), self._anchor]
            self._idle, self._sessions = [], {}
        for conn in conns:
            conn.close()


def _decode(pieces: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    """Undo Content-Encoding; clickhouse-connect sends each block as its own lz4 frame."""
    if encoding in ("", "identity"):
        yield from pieces
        return
    if encoding not in ("lz4", "gzip", "deflate"):
        raise _QueryError(36, f"Unsupported Content-Encoding: {encoding}. (BAD_ARGUMENTS)", 400)
    new: Callable[[], Any] = lz4.frame.LZ4FrameDecompressor
    if encoding != "lz4":
        new = functools.partial(zlib.decompressobj, 32 + zlib.MAX_WBITS)  # a gzip or zlib header
    decoder, pending = new(), False
    try:
        for piece in pieces:
            while piece:
                pending, out, piece = True, decoder.decompress(piece), b""
                yield out
                if decoder.eof:
                    decoder, pending, piece = new(), False, decoder.unused_data
    except (RuntimeError, zlib.error) as exc:
        raise _QueryError(271, f"Cannot decompress the {encoding} body: {exc}. (CANNOT_DECOMPRESS)") from None
    if pending:
        raise _QueryError(271, f"The {encoding} body is truncated. (CANNOT_DECOMPRESS)")


class _Body:
    """The request body as sent, sized or chunked; decoded on demand."""

    def __init__(self, rfile: BufferedIOBase, headers: Message) -> None:
        chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
        self._raw = self._pieces(rfile, chunked, int(headers.get("Content-Length") or 0))
        self.encoding = headers.get("Content-Encoding", "").lower()
        self.content_type = headers.get("Content-Type", "")

    @staticmethod
    def _pieces(rfile: BufferedIOBase, chunked: bool, length: int) -> Iterator[bytes]:
        while chunked:
            if (size := int(rfile.readline().split(b";")[0], 16)) == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield rfile.read(size)
            rfile.readline()
        while length > 0:
            if not (piece := rfile.read(min(length, 1 << 20))):
                raise ConnectionError("the request body ended early")
            length -= len(piece)
            yield piece

    def head(self, query: str) -> tuple[bytes, Iterator[bytes]]:
        """The `query` URL parameter, a newline and the body's first MiB, as ClickHouse joins them."""
        pieces, buf = _decode(self._raw, self.encoding), bytearray(query.encode() + b"\n" if query else b"")
        for piece in pieces:
            buf += piece
            if len(buf) >= _HEAD_LIMIT:
                break
        return bytes(buf), pieces

    def form(self) -> dict[str, str]:
        """The fields of a multipart form, which clickhouse-connect uses for long parameters."""
        form = f"Content-Type: {self.content_type}\r\n\r\n".encode() + b"".join(_decode(self._raw, self.encoding))
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(form)
        fields = {}
        for part in msg.walk():
            if part.get_filename():
                raise _QueryError(48, "External data is not supported. (NOT_IMPLEMENTED)")
            if name := part.get_param("name", header="content-disposition"):
                fields[str(name)] = bytes(part.get_payload(decode=True)).decode()
        return fields

    def drain(self) -> None:
        for _ in self._raw:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: _Engine, user: str, password: str) -> None:
        super().__init__(address, _Handler)
        self.engine, self.user, self.password = engine, user, password
        self.display_name = socket.gethostname()
        self.clients: set[socket.socket] = set()

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skips HTTPServer's reverse DNS lookup
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def service_actions(self) -> None:
        self.engine.expire()

    def close_clients(self) -> None:
        for sock in list(self.clients):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or delayed ACKs add 40 ms to every request
    server: _Server
    _started = False

    def setup(self) -> None:
        super().setup()
        self.server.clients.add(self.connection)

    def finish(self) -> None:
        self.server.clients.discard(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)  # the query string may hold a password

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self._started = False
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        body = _Body(self.rfile, self.headers)
        try:
            if url.path == "/ping" or (self.command == "GET" and "query" not in params):
                self._reply(200, b"Ok.\n", [("Content-Type", "text/plain; charset=UTF-8")])
                return
            self._authenticate(params)
            if body.content_type.startswith("multipart/form-data"):
                params.update(body.form())
            self._run(params, body)
        except _QueryError as exc:
            try:
                body.drain()
            except (OSError, ValueError):
                self.close_connection = True
            self._reply(exc.status, exc.body, [("X-ClickHouse-Exception-Code", str(exc.code))])
        except OSError:  # the client went away
            self.close_connection = True
        except Exception as exc:
            log.exception("request failed")
            self.close_connection = True
            if not self._started:
                self._reply(500, _QueryError(1001, repr(exc)).body, [("X-ClickHouse-Exception-Code", "1001")])

    def _authenticate(self, params: dict[str, str]) -> None:
        auth = self.headers.get("Authorization", "")
        user = self.headers.get("X-ClickHouse-User") or params.get("user") or "default"
        password = self.headers.get("X-ClickHouse-Key") or params.get("password") or ""
        if auth:
            user, password = "", ""  # bearer tokens and other schemes are not supported
            with suppress(ValueError):
                if auth[:6].lower() == "basic ":
                    user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        if user != self.server.user or not hmac.compare_digest(password.encode(), self.server.password.encode()):
            message = "Authentication failed: password is incorrect, or there is no user with such name"
            raise _QueryError(516, f"{user or 'default'}: {message}. (AUTHENTICATION_FAILED)", 403)

    def _run(self, params: dict[str, str], body: _Body) -> None:
        started = time.monotonic()
        settings = {k: v for k, v in params.items() if k not in _HTTP_ONLY and not k.startswith("param_")}
        query_params = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
        session_id = params.get("session_id", "")
        timeout = min(float(params.get("session_timeout") or SESSION_TIMEOUT), 3600.0)
        headers = [
            ("X-ClickHouse-Query-Id", params.get("query_id") or str(uuid.uuid4())),
            ("X-ClickHouse-Timezone", settings.get("session_timezone") or self.server.engine.timezone),
        ]
        with self.server.engine.connection(session_id, timeout) as conn:
            conn.prepare(settings, params.get("database") or (None if session_id else "default"))
            head, rest = body.head(params.get("query", ""))
            if insert := _INSERT_RE.match(head):
                rows = itertools.chain([head[insert.end() :]], rest)
                stats = conn.insert(insert[1].decode(), insert[2].decode(), rows)
                self._reply(200, b"", [*headers, _summary(stats, started)])
                return
            try:
                sql = (head + b"".join(rest)).decode()
            except UnicodeDecodeError as exc:
                raise _QueryError(36, f"The query is not UTF-8: {exc}. (BAD_ARGUMENTS)") from None
            fmt = match[1] if (match := _FORMAT_RE.search(sql)) else params.get("default_format") or "TabSeparated"
            if _STATE_RE.match(sql):
                conn.forget_state()
            reads = _READ_RE.match(sql) is not None
            result_headers = [("X-ClickHouse-Format", fmt), ("Content-Type", _content_type(fmt))]
            if reads and fmt.lower() in _STREAMABLE and params.get("wait_end_of_query") != "1":
                chunks = conn.stream(sql, fmt, query_params)
                try:  # the first block comes before the status, so early errors keep their code
                    self._stream(next(chunks, b""), chunks, [*headers, *result_headers, _summary({}, started)])
                finally:
                    chunks.close()
                return
            data, stats = conn.query(sql, fmt, query_params)
            headers += result_headers if reads or data else []  # clickhouse-connect's command() reads it
            self._reply(200, data, [*headers, _summary(stats, started)])

    def _start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._started = True
        self.send_response(status)
        for name, value in [("X-ClickHouse-Server-Display-Name", self.server.display_name), *headers]:
            self.send_header(name, value)
        self.end_headers()

    def _reply(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
        if status >= 400:
            headers = [*headers, ("Content-Type", "text/plain; charset=UTF-8")]
        self._start(status, [*headers, ("Content-Length", str(len(data)))])
        self.wfile.write(data)

    def _stream(self, first: bytes, rest: Iterator[bytes], headers: list[tuple[str, str]]) -> None:
        self._start(200, [*headers, ("Transfer-Encoding", "chunked")])
        try:
            for piece in itertools.chain([first], rest):
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        except _QueryError as exc:
            # The 200 is out: leave the error where clickhouse-connect looks for it and drop the
            # connection without the final chunk, so a cut result can never pass for a complete one.
            self.wfile.write(b"%x\r\n%s\r\n" % (len(exc.body), exc.body))
            self.close_connection = True


def _summary(stats: dict[str, int], started: float) -> tuple[str, str]:
    keys = ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read", "result_rows")
    summary = {key: str(stats.get(key, 0)) for key in keys}
    summary["elapsed_ns"] = str(int((time.monotonic() - started) * 1e9))
    return "X-ClickHouse-Summary", json.dumps(summary)


def _content_type(fmt: str) -> str:
    text = fmt.lower().startswith(("tabseparated", "tsv", "csv", "json", "pretty", "values", "markdown"))
    return "text/plain; charset=UTF-8" if text else "application/octet-stream"


class ClickHouseHTTPServer:
    """A ClickHouse HTTP endpoint on a chdb data directory, served from a background thread."""

    def __init__(
        self, data_dir: Path, host: str = "127.0.0.1", port: int = 0, user: str = "default", password: str = ""
    ) -> None:
        self.data_dir, self.host, self.user = Path(data_dir), host, user
        self._password, self._requested_port = password, port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the data directory and listen; RuntimeError if another process owns the directory."""
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        engine = _Engine(self.data_dir)
        try:
            self._httpd = _Server((self.host, self._requested_port), engine, self.user, self._password)
        except BaseException:
            engine.close()
            raise
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"chhttp-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        thread.join()
        httpd.server_close()
        httpd.close_clients()  # ends idle keep-alive connections
        httpd.engine.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ClickHouseHTTPServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iceberg_offload.local.chhttp", description=__doc__)
    parser.add_argument("--path", type=Path, required=True, help="chdb data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the port once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    server = ClickHouseHTTPServer(args.path, args.host, args.port)
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        log.error("%s", exc)
        return 1
    try:
        if args.port_file:
            tmp = args.port_file.with_name(f".{args.port_file.name}.{os.getpid()}")
            tmp.write_text(f"{server.port}\n")
            tmp.replace(args.port_file)  # readers never see a partial file
        log.info("serving chdb data directory %s at %s", args.path, server.url)
        stopping.wait()
    finally:
        server.stop()
        if args.port_file:
            args.port_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
