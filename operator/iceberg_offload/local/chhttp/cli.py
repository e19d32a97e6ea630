"""`python -m iceberg_offload.local.chhttp`: serve a data directory until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from iceberg_offload.local import chhttp
from iceberg_offload.local.chhttp.server import ClickHouseHTTPServer

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iceberg_offload.local.chhttp", description=chhttp.__doc__)
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
