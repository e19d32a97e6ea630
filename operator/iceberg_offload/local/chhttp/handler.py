"""The HTTP side of the endpoint: a threading server that knows its engine and credentials,
and the handler that turns one request into a query, an insert or a streamed result."""

from __future__ import annotations

import base64
import hmac
import itertools
import logging
import socket
import socketserver
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from iceberg_offload.local.chhttp.body import Body
from iceberg_offload.local.chhttp.engine import SESSION_TIMEOUT, Engine
from iceberg_offload.local.chhttp.protocol import (
    FORMAT_RE,
    HTTP_ONLY,
    INSERT_RE,
    READ_RE,
    STATE_RE,
    STREAMABLE,
    QueryError,
    content_type,
    summary,
)

log = logging.getLogger(__name__)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine, user: str, password: str) -> None:
        super().__init__(address, Handler)
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or delayed ACKs add 40 ms to every request
    server: Server
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
        body = Body(self.rfile, self.headers)
        try:
            if url.path == "/ping" or (self.command == "GET" and "query" not in params):
                self._reply(200, b"Ok.\n", [("Content-Type", "text/plain; charset=UTF-8")])
                return
            self._authenticate(params)
            if body.content_type.startswith("multipart/form-data"):
                params.update(body.form())
            self._run(params, body)
        except QueryError as exc:
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
                self._reply(500, QueryError(1001, repr(exc)).body, [("X-ClickHouse-Exception-Code", "1001")])

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
            raise QueryError(516, f"{user or 'default'}: {message}. (AUTHENTICATION_FAILED)", 403)

    def _run(self, params: dict[str, str], body: Body) -> None:
        started = time.monotonic()
        settings = {k: v for k, v in params.items() if k not in HTTP_ONLY and not k.startswith("param_")}
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
            if insert := INSERT_RE.match(head):
                rows = itertools.chain([head[insert.end() :]], rest)
                stats = conn.insert(insert[1].decode(), insert[2].decode(), rows)
                self._reply(200, b"", [*headers, summary(stats, started)])
                return
            try:
                sql = (head + b"".join(rest)).decode()
            except UnicodeDecodeError as exc:
                raise QueryError(36, f"The query is not UTF-8: {exc}. (BAD_ARGUMENTS)") from None
            fmt = match[1] if (match := FORMAT_RE.search(sql)) else params.get("default_format") or "TabSeparated"
            if STATE_RE.match(sql):
                conn.forget_state()
            reads = READ_RE.match(sql) is not None
            result_headers = [("X-ClickHouse-Format", fmt), ("Content-Type", content_type(fmt))]
            if reads and fmt.lower() in STREAMABLE and params.get("wait_end_of_query") != "1":
                chunks = conn.stream(sql, fmt, query_params)
                try:  # the first block comes before the status, so early errors keep their code
                    self._stream(next(chunks, b""), chunks, [*headers, *result_headers, summary({}, started)])
                finally:
                    chunks.close()
                return
            data, stats = conn.query(sql, fmt, query_params)
            headers += result_headers if reads or data else []  # clickhouse-connect's command() reads it
            self._reply(200, data, [*headers, summary(stats, started)])

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
        except QueryError as exc:
            # The 200 is out: leave the error where clickhouse-connect looks for it and drop the
            # connection without the final chunk, so a cut result can never pass for a complete one.
            self.wfile.write(b"%x\r\n%s\r\n" % (len(exc.body), exc.body))
            self.close_connection = True
