"""chdb connections to one data directory: a pool for plain requests, one per HTTP session."""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import chdb

from iceberg_offload.local.chhttp.protocol import QueryError, quote

SESSION_TIMEOUT = 60.0
# A client may send its next request on a new TCP connection just before the handler of its
# previous one released the session, so wait this long before answering SESSION_IS_LOCKED.
SESSION_LOCK_WAIT = 5.0
_POOL_SIZE = 8
_NAME_RE = re.compile(r"[A-Za-z_]\w*\Z")
_UNKNOWN = "\0unknown"


class Conn:
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
            raise QueryError.from_engine(exc) from None

    def prepare(self, settings: dict[str, str], database: str | None) -> None:
        """URL settings last one query on a real server, so undo those of the previous request.

        Undoing means DEFAULT: a session's own SET of a name that a URL also sets is lost.
        """
        if bad := [name for name in settings if not _NAME_RE.match(name)]:
            raise QueryError(115, f"Unknown setting '{bad[0]}'. (UNKNOWN_SETTING)")
        changes = [f"{name} = DEFAULT" for name in self.applied if name not in settings]
        changes += [f"{name} = {quote(v)}" for name, v in settings.items() if self.applied.get(name) != v]
        if changes:  # a failing SET applies none of its settings
            self._call(self._c.query, "SET " + ", ".join(changes), "TabSeparated")
            self.applied = dict(settings)
        if database and database != self.database:
            self._call(self._c.query, f"USE {quote(database, '`')}", "TabSeparated")
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
    def __init__(self, conn: Conn) -> None:
        self.conn, self.lock, self.users, self.expires = conn, threading.Lock(), 0, 0.0


class Engine:
    """chdb connections to one directory: one per HTTP session, a pool for the rest."""

    def __init__(self, data_dir: Path) -> None:
        self.path = str(data_dir)
        self._lock = threading.Lock()
        self._idle: list[Conn] = []
        self._sessions: dict[str, _Session] = {}
        self._closed = False
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._anchor = Conn(self.path)  # the engine stops when its last connection closes
        except RuntimeError as exc:  # the real cause only reaches stderr
            if _owned_elsewhere(data_dir):
                raise RuntimeError(
                    f"chdb data directory {data_dir} is owned by another process (its status file is "
                    "locked): stop that process or use another directory"
                ) from None
            raise RuntimeError(f"cannot open chdb data directory {data_dir}: {exc}") from exc
        self.timezone = self._anchor.query("SELECT timezone()", "TabSeparated", {})[0].decode().strip()

    @contextmanager
    def connection(self, session_id: str, timeout: float) -> Iterator[Conn]:
        if self._closed:
            raise QueryError(236, "The server is shutting down. (ABORTED)")
        if session_id:
            with self._session(session_id, timeout) as conn:
                yield conn
        else:
            with self._pooled() as conn:
                yield conn

    @contextmanager
    def _pooled(self) -> Iterator[Conn]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        conn = conn or Conn(self.path)
        try:
            yield conn
        finally:
            with self._lock:
                if keep := not (conn.dirty or self._closed or len(self._idle) >= _POOL_SIZE):
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _session(self, session_id: str, timeout: float) -> Iterator[Conn]:
        with self._lock:
            if (session := self._sessions.get(session_id)) is None:
                session = self._sessions[session_id] = _Session(Conn(self.path))
            session.users += 1
        try:
            if not session.lock.acquire(timeout=SESSION_LOCK_WAIT):
                raise QueryError(373, "Session is locked by a concurrent client. (SESSION_IS_LOCKED)")
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
