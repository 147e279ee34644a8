"""Streaming of an export download to disk, with resume and length checks.

The body is written as the HTTP layer delivers it: transfer encoding
(chunked) and any `Content-Encoding` are undone there, nothing else is.
Whether the file is gzip, zip or plain CSV is decided later from its magic
bytes. Bytes go to `<name>.part` first and are renamed to the final name
only after the whole file passed its integrity check.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from connector.errors import DownloadError
from connector.redaction import mask_text

log = logging.getLogger(__name__)

#: Bytes written per chunk while streaming a download to disk.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024

#: Errors raised when the connection breaks while a body is being read.
_BROKEN_BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
_EXTENSIONS = re.compile(r"((?:\.[A-Za-z0-9]{1,8}){1,3})$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")


def token_extensions(token: str) -> str:
    """Return the extensions at the end of an export token, e.g. `.csv.gz`.

    DiVA's tokens end in the extensions of the file they name. A token
    without any yields an empty string; the file type is read from its
    magic bytes later in any case.
    """
    match = _EXTENSIONS.search(token)
    return match.group(1).lower() if match else ""


def export_filename(token: str) -> str:
    """Return a file name for an export: a digest of the token plus its extensions.

    The token itself is not used as the name because it would then appear in
    every log line and error that names the file.
    """
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
    return f"export-{digest}{token_extensions(token)}"


def part_path(target: Path) -> Path:
    """Return the temporary path a download is written to before its rename."""
    return target.with_name(target.name + ".part")


@dataclass
class PartialDownload:
    """The state of one file's download across attempts.

    Attributes:
        part: The temporary file holding the bytes received so far.
        resumable: True when the bytes on disk are the raw body bytes, so a
            `Range` request can continue them. Bytes decoded from a
            `Content-Encoding` do not match the server's byte offsets.
    """

    part: Path
    resumable: bool = False

    def offset(self) -> int:
        """Return the byte offset to resume from, 0 to start over."""
        if not self.resumable or not self.part.exists():
            return 0
        return self.part.stat().st_size

    def discard(self) -> None:
        """Delete the partial file and start the next attempt from byte 0."""
        self.part.unlink(missing_ok=True)
        self.resumable = False


def write_response(
    response: requests.Response, download: PartialDownload, requested_offset: int
) -> int:
    """Stream a download response into the partial file.

    A 206 whose `Content-Range` starts at `requested_offset` is appended to
    the bytes already on disk; any other success starts the file over.

    Returns:
        The size of the partial file afterwards, in bytes.

    Raises:
        DownloadError: The connection broke mid-body, the body is shorter
            than its `Content-Length`, or a 206 response covers another range
            than the one requested.
    """
    append = requested_offset > 0 and response.status_code == 206
    if append:
        _check_content_range(response, requested_offset, download)
    elif response.status_code == 206:
        download.discard()
        raise DownloadError(
            "Download returned 206 Partial Content to a request without Range."
        )
    elif requested_offset:
        log.info("Server ignored the Range request; downloading the file from byte 0.")

    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    download.resumable = encoding in ("", "identity")
    with open(download.part, "ab" if append else "wb") as file:
        try:
            for chunk in iter_body(response):
                file.write(chunk)
        except _BROKEN_BODY_ERRORS as err:
            raise DownloadError(
                f"Download broke off after {file.tell()} bytes "
                f"({type(err).__name__}: {mask_text(str(err))}).",
                path=str(download.part),
            ) from err

    _check_length(response, download)
    return download.part.stat().st_size


def iter_body(response: requests.Response) -> Iterator[bytes]:
    """Yield a streamed body in chunks of at most `DOWNLOAD_CHUNK_BYTES`.

    Content-Encoding is undone as `iter_content` would, but each chunk is
    yielded as soon as it arrives. `iter_content` waits to fill a whole
    chunk, so when the connection breaks mid-chunk the bytes already
    received are lost and a resumed download would fetch them again.
    urllib3's errors are mapped to the same `requests` exceptions that
    `iter_content` raises.
    """
    raw = response.raw
    if not hasattr(raw, "read1"):
        yield from response.iter_content(DOWNLOAD_CHUNK_BYTES)
        return

    try:
        while chunk := raw.read1(DOWNLOAD_CHUNK_BYTES, decode_content=True):
            yield chunk
    except urllib3.exceptions.ProtocolError as err:
        raise requests.exceptions.ChunkedEncodingError(err) from err
    except urllib3.exceptions.DecodeError as err:
        raise requests.exceptions.ContentDecodingError(err) from err
    except urllib3.exceptions.ReadTimeoutError as err:
        raise requests.exceptions.ConnectionError(err) from err
    except urllib3.exceptions.SSLError as err:
        raise requests.exceptions.SSLError(err) from err


def _check_content_range(
    response: requests.Response, requested_offset: int, download: PartialDownload
) -> None:
    header = response.headers.get("Content-Range", "")
    match = _CONTENT_RANGE.match(header.strip())
    if match and int(match.group(1)) == requested_offset:
        return
    download.discard()
    raise DownloadError(
        f"Download returned 206 with Content-Range {header!r}, which does not "
        f"start at the requested byte {requested_offset}, so the bytes kept "
        "were dropped."
    )


def _check_length(response: requests.Response, download: PartialDownload) -> None:
    declared = response.headers.get("Content-Length")
    if declared is None or not declared.strip().isdigit():
        # NOTE: a body without Content-Length that ends early is caught here
        # only for gzip and zip files, by the integrity check that follows.
        return
    received = response.raw.tell()
    if received < int(declared):
        raise DownloadError(
            f"Download ended after {received} of {declared} bytes, so the file "
            "is incomplete.",
            path=str(download.part),
        )
