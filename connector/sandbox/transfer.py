"""Sending an export file: headers, `Range` requests and broken transfers.

A healthy download is a 200 `application/octet-stream` body with its
Content-Length, or a 206 with Content-Range when the client asks for a
`Range`. The fault switches can cut the connection after some bytes (with a
Content-Length that promised more), cut a chunked body mid-chunk, slow the
body down, damage the archive, or change the Content-Type and
Content-Encoding headers.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from http.server import BaseHTTPRequestHandler

from connector.sandbox.exports import Export
from connector.sandbox.faults import Faults
from connector.sandbox.files import corrupt_gzip_crc, corrupt_zip_crc, truncate_archive
from connector.sandbox.query import ApiProblem

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def damaged_content(export: Export, faults: Faults) -> bytes:
    """Return the export's file, damaged by any armed archive fault."""
    content = export.content
    if faults.take("truncate", "download") is not None:
        content = truncate_archive(content)
    if (
        export.compression == "gz"
        and faults.take("corrupt_gzip", "download") is not None
    ):
        content = corrupt_gzip_crc(content)
    if (
        export.compression == "zip"
        and faults.take("corrupt_zip", "download") is not None
    ):
        content = corrupt_zip_crc(content)
    return content


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the inclusive byte range a `Range` header requests, or None.

    Only single ranges are supported; a header naming several is ignored
    and the whole file is sent, which HTTP allows.

    Raises:
        ApiProblem: The range starts beyond the end of the file (416).
    """
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ApiProblem(
            416,
            "416001",
            f"Range {header!r} is outside the file of {size} bytes.",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, end


def send_download(
    handler: BaseHTTPRequestHandler, export: Export, faults: Faults
) -> None:
    """Send a ready export through `handler`, applying the download faults."""
    content = damaged_content(export, faults)
    size = len(content)
    span = None
    if not faults.ignore_range and (header := handler.headers.get("Range")):
        span = parse_range(header, size)

    drop = faults.take("drop", "download")
    cut = faults.take("cut_chunked", "download")
    body = content if span is None else content[span[0] : span[1] + 1]

    handler.send_response(200 if span is None else 206)
    if faults.content_type_text_csv:
        handler.send_header("Content-Type", "text/csv")
    else:
        handler.send_header("Content-Type", "application/octet-stream")
    if faults.content_encoding_gzip and export.compression == "gz":
        handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Accept-Ranges", "none" if faults.ignore_range else "bytes")
    if span is not None:
        handler.send_header("Content-Range", f"bytes {span[0]}-{span[1]}/{size}")
    if cut is not None:
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        _send_chunked_then_cut(handler, body, faults, cut["after_bytes"])
        return
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    _send_body(handler, body, faults, drop["after_bytes"] if drop else None)


def _send_body(
    handler: BaseHTTPRequestHandler, body: bytes, faults: Faults, drop_after: int | None
) -> None:
    chunk_size = max(1, faults.chunk_size)
    if drop_after is not None:
        # Always leave bytes unsent, so a drop is a failure even on tiny files.
        drop_after = max(0, min(drop_after, len(body) - 1))
    sent = 0
    while sent < len(body):
        if drop_after is not None and sent + chunk_size >= drop_after:
            handler.wfile.write(body[sent:drop_after])
            _abort(handler, drop_after)
            return
        handler.wfile.write(body[sent : sent + chunk_size])
        sent += chunk_size
        if faults.chunk_delay_s and sent < len(body):
            handler.wfile.flush()
            time.sleep(faults.chunk_delay_s)


def _send_chunked_then_cut(
    handler: BaseHTTPRequestHandler, body: bytes, faults: Faults, cut_after: int
) -> None:
    chunk_size = max(2, faults.chunk_size)
    sent = 0
    while True:
        chunk = body[sent : sent + chunk_size]
        if sent + len(chunk) > cut_after or not chunk:
            # Promise the whole chunk but deliver only part of it.
            chunk = body[sent : sent + chunk_size] or b"x" * chunk_size
            handler.wfile.write(f"{len(chunk):x}\r\n".encode("ascii"))
            handler.wfile.write(chunk[: max(1, min(len(chunk) - 1, cut_after - sent))])
            _abort(handler, cut_after)
            return
        handler.wfile.write(f"{len(chunk):x}\r\n".encode("ascii") + chunk + b"\r\n")
        sent += len(chunk)


def _abort(handler: BaseHTTPRequestHandler, sent_bytes: int) -> None:
    """Close the connection at once, as a network failure would."""
    handler.close_connection = True
    handler.wfile.flush()
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        log.debug("Connection was already closed")
    log.info("Dropped a download connection after %d bytes on purpose", sent_bytes)
