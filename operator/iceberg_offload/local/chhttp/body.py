"""A request's body as ClickHouse reads it: sized or chunked, compressed or not, a query's
head followed by its data, or a multipart form of parameters."""

from __future__ import annotations

import email.parser
import email.policy
import functools
import zlib
from collections.abc import Callable, Iterator
from email.message import Message
from io import BufferedIOBase
from typing import Any

import lz4.frame  # type: ignore[import-untyped]

from iceberg_offload.local.chhttp.protocol import QueryError

_HEAD_LIMIT = 1 << 20  # an INSERT statement sent in the body must end within its first MiB


def _decode(pieces: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    """Undo Content-Encoding; clickhouse-connect sends each block as its own lz4 frame."""
    if encoding in ("", "identity"):
        yield from pieces
        return
    if encoding not in ("lz4", "gzip", "deflate"):
        raise QueryError(36, f"Unsupported Content-Encoding: {encoding}. (BAD_ARGUMENTS)", 400)
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
        raise QueryError(271, f"Cannot decompress the {encoding} body: {exc}. (CANNOT_DECOMPRESS)") from None
    if pending:
        raise QueryError(271, f"The {encoding} body is truncated. (CANNOT_DECOMPRESS)")


class Body:
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
                raise QueryError(48, "External data is not supported. (NOT_IMPLEMENTED)")
            if name := part.get_param("name", header="content-disposition"):
                fields[str(name)] = bytes(part.get_payload(decode=True)).decode()
        return fields

    def drain(self) -> None:
        for _ in self._raw:
            pass
