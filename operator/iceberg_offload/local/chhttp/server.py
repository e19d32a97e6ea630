"""The endpoint as a library object: start it on a data directory, stop it, ask its URL."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from iceberg_offload.local.chhttp.engine import Engine
from iceberg_offload.local.chhttp.handler import Server


class ClickHouseHTTPServer:
    """A ClickHouse HTTP endpoint on a chdb data directory, served from a background thread."""

    def __init__(
        self, data_dir: Path, host: str = "127.0.0.1", port: int = 0, user: str = "default", password: str = ""
    ) -> None:
        self.data_dir, self.host, self.user = Path(data_dir), host, user
        self._password, self._requested_port = password, port
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the data directory and listen; RuntimeError if another process owns the directory."""
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        engine = Engine(self.data_dir)
        try:
            self._httpd = Server((self.host, self._requested_port), engine, self.user, self._password)
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
