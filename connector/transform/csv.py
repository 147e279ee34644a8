"""Parse the CSV text of an export: header, streaming batches, record scans.

DiVA does not document its CSV layout. The reader expects RFC 4180 records:
comma-separated, `"` quoting with doubled quotes, CRLF or LF line ends, and
line breaks allowed inside quoted fields. The first record is a header of
field names, optionally after a UTF-8 byte order mark. Empty cells are nulls.

The fast path is pyarrow's streaming reader with an explicit type for every
column, so that nothing is inferred: numbers, dates, booleans and
timestamps that pyarrow can convert exactly, strings for the rest. Line
numbers are never tracked on the fast path: when an error needs one,
`scan_records` parses the file again with Python's csv module, which counts
physical lines.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import io
import logging
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from connector.errors import DataError
from connector.transform.cast import PARSED_FALSE, PARSED_TRUE
from connector.transform.decompress import Payload, open_payload
from connector.transform.options import TransformOptions

log = logging.getLogger(__name__)

_SNIFF_BYTES = 64 * 1024
_BOM = codecs.BOM_UTF8
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF16_SAMPLE_BYTES = 64
#: Largest CSV block tried when records are longer than `chunk_bytes`, which
#: bounds memory when a quote is never closed and the rest of the file reads
#: as one record.
MAX_BLOCK_BYTES = 256 * 1024**2
_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): ")
#: Blocks pyarrow may read beyond the batches taken from it. Its own
#: read-ahead keeps up to 32 blocks, which a load's speed does not need.
READ_AHEAD_BLOCKS = 4
#: Maximum wait, in seconds, for the consumer before a read goes ahead
#: anyway. pyarrow sometimes needs another block before it hands over a
#: batch or an error, and that read must not wait long.
_READ_AHEAD_WAIT = 0.1


@dataclass(frozen=True)
class ScannedRecord:
    """One CSV record found by `scan_records`.

    Attributes:
        index: 0-based position among the well-formed data records, as
            pyarrow numbers them; None for a record whose field count
            differs from the header's (pyarrow skips or rejects those).
        line: 1-based physical line the record starts on (header is line 1).
        text: The record as written in the file, without its line end.
        fields: The parsed fields.
    """

    index: int | None
    line: int
    text: str
    fields: list[str]


def read_header(payload: Payload) -> list[str]:
    """Read the header record from the start of `payload`.

    The stream is read past the header, so open another payload for the rows.

    Raises:
        DataError: The payload is empty, binary, HTML, or not UTF-8.
    """
    path = payload.path
    head = payload.stream.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
    _check_looks_like_csv(head, path)

    # Undecodable bytes are escaped rather than raised here, because the
    # wrapper decodes ahead of the header and may meet a bad byte in a row.
    text = io.TextIOWrapper(
        payload.stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    try:
        header = next(csv.reader(text))
    except (StopIteration, csv.Error) as err:
        raise DataError(
            f"{path} has no readable CSV header: {err}", path=str(path), line=1
        ) from err
    finally:
        text.detach()

    if any("\x00" in name for name in header):
        raise DataError(
            f"The header of {path} contains a NUL byte, so it is not CSV text. "
            "Check that the download is a DiVA export.",
            path=str(path),
            line=1,
            value=repr(",".join(header)),
        )
    if any(has_bad_utf8(name) for name in header):
        raise DataError(
            f"The header of {path} is not valid UTF-8; DiVA exports are UTF-8.",
            path=str(path),
            line=1,
            value=",".join(header)
            .encode("utf-8", "surrogateescape")
            .decode("utf-8", "replace"),
        )
    return header


def has_bad_utf8(text: str) -> bool:
    """Tell whether `text`, decoded with `surrogateescape`, held invalid UTF-8."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _check_looks_like_csv(head: bytes, path: Path) -> None:
    if not head:
        raise DataError(
            f"{path} decompressed to 0 bytes with no header: the export is empty "
            "or was cut short. Export the window again.",
            path=str(path),
        )
    _check_not_utf16(head, path)
    # A NUL in a data row is a bad value of that row (see the cast step), so
    # only a NUL in the header line or a head full of them marks binary data.
    header_line = head.split(b"\n", 1)[0]
    if b"\x00" in header_line or head.count(b"\x00") * 10 > len(head):
        raise DataError(
            f"{path} is not a CSV file: it contains binary data (NUL bytes) after "
            "decompression. Check that the download is a DiVA export.",
            path=str(path),
        )
    start = head.removeprefix(_BOM).lstrip().lower()
    if start.startswith((b"{", b"[")):
        raise DataError(
            f"{path} is a JSON document, not a CSV export; the server probably "
            "returned an error body. Check the export token and download again.",
            path=str(path),
        )
    if start.startswith(b"<"):
        raise DataError(
            f"{path} is an HTML or XML page, not a CSV export; the server "
            "probably returned an error page. Check the URL and credentials.",
            path=str(path),
        )


def _check_not_utf16(head: bytes, path: Path) -> None:
    if head.startswith(_UTF32_BOMS):
        encoding = "UTF-32"
    elif head.startswith(_UTF16_BOMS) or _looks_like_utf16(head):
        encoding = "UTF-16"
    else:
        return
    raise DataError(
        f"{path} is encoded as {encoding}, but DiVA exports are UTF-8. Re-save the "
        "file as UTF-8 (for example with iconv or a text editor) and load it again.",
        path=str(path),
    )


def _looks_like_utf16(head: bytes) -> bool:
    # ASCII text in UTF-16 without a byte order mark has a NUL in every other
    # byte: the odd bytes in little-endian order, the even ones in big-endian.
    sample = head[:_UTF16_SAMPLE_BYTES]
    if len(sample) < 4:
        return False
    low, high = sample[0::2], sample[1::2]
    return (b"\x00" not in low and high.count(0) == len(high)) or (
        low.count(0) == len(low) and b"\x00" not in high
    )


class TextBatchReader:
    """Stream the data records of an export as batches of string columns.

    pyarrow needs the header inside the first block and every record inside
    at most two blocks. When a record is longer than `chunk_bytes`, the read
    starts over with blocks four times larger and skips the rows already
    yielded, so a long field costs one more pass instead of an error.

    `column_types` maps header names to the type pyarrow converts each
    column to while parsing (strings by default). `skip_rows` well-formed
    records are parsed and dropped first, which resumes a read that stopped.

    Attributes:
        invalid_rows: Records skipped because their field count differs
            from the header's (only when `skip_invalid_rows` is true).
        bytes_read: Decompressed bytes read by the last pass.
        nul_seen: False while no NUL byte has been read, so that the batches
            yielded so far hold none.
    """

    def __init__(
        self,
        path: Path,
        header: list[str],
        options: TransformOptions,
        *,
        skip_invalid_rows: bool,
        column_types: dict[str, pa.DataType] | None = None,
        skip_rows: int = 0,
    ) -> None:
        self.path = path
        self.header = header
        self.options = options
        self.skip_invalid_rows = skip_invalid_rows
        self.column_types = column_types or {name: pa.string() for name in header}
        self.skip_rows = skip_rows
        self.invalid_rows = 0
        self.bytes_read = 0
        self.nul_seen = True

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        block_bytes = self.options.chunk_bytes
        yielded = self.skip_rows
        while True:
            self.invalid_rows = 0
            payload = open_payload(self.path, self.options)
            try:
                for batch in self._read_pass(payload, block_bytes, yielded):
                    yielded += batch.num_rows
                    # The reader parses only bytes already read, so a batch
                    # can contain a NUL only if one was seen by now.
                    self.nul_seen = payload.nul_seen
                    yield batch
                self.bytes_read = payload.bytes_read
                return
            except pa.ArrowInvalid as err:
                if not block_too_small(err) or block_bytes >= MAX_BLOCK_BYTES:
                    raise
                block_bytes = min(block_bytes * 4, MAX_BLOCK_BYTES)
                log.warning(
                    "A record of %s is longer than the CSV block; reading again with "
                    "%d-byte blocks.",
                    self.path,
                    block_bytes,
                )
            finally:
                payload.close()

    def _read_pass(
        self, payload: Payload, block_bytes: int, skip_rows: int
    ) -> Iterator[pa.RecordBatch]:
        stream = _PacedStream(payload.stream, READ_AHEAD_BLOCKS)
        try:
            reader = self._open_reader(stream, block_bytes)
        except BaseException:
            # pyarrow may have started reading ahead before it failed.
            stream.release()
            stream.settle()
            raise
        try:
            seen = 0
            for batch in reader:
                stream.taken()
                start = max(skip_rows - seen, 0)
                seen += batch.num_rows
                if start < batch.num_rows:
                    yield batch.slice(start) if start else batch
        finally:
            # pyarrow's read-ahead must stop before the payload below it
            # closes: a read of the closed payload would fail on its thread.
            stream.release()
            reader.close()
            stream.settle()

    def _open_reader(
        self, stream: _PacedStream, block_bytes: int
    ) -> pacsv.CSVStreamingReader:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    block_size=block_bytes, use_threads=True
                ),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=self._on_invalid_row
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=self.column_types,
                    true_values=PARSED_TRUE,
                    false_values=PARSED_FALSE,
                    include_columns=list(self.column_types),
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
        except pa.ArrowKeyError as err:
            raise self._header_mismatch(str(err)) from err
        if reader.schema.names != list(self.column_types):
            reader.close()
            raise self._header_mismatch(f"pyarrow read {reader.schema.names}")
        return reader

    def _header_mismatch(self, detail: str) -> DataError:
        return DataError(
            f"The header of {self.path} is malformed: the csv module read "
            f"{self.header}, but {detail}.",
            path=str(self.path),
            line=1,
        )

    def _on_invalid_row(self, row: pacsv.InvalidRow) -> str:
        if not self.skip_invalid_rows:
            return "error"
        self.invalid_rows += 1
        return "skip"


class _PacedStream:
    """A read-only stream that keeps pyarrow's read-ahead a few blocks deep.

    pyarrow's streaming CSV reader reads blocks on a background thread, up
    to 32 ahead of the batches taken from it (Arrow's default queue), each
    a Python bytes object outside Arrow's memory pool. A read waits while
    `limit` blocks are read but not yet turned into taken batches, so that
    memory stays a few blocks whatever the file's size. Once released,
    reads no longer wait.
    """

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self._reads = 0
        self._batches_taken = 0
        self._released = False
        self._reading = 0
        self._last_read = time.monotonic()
        self._at_end = False
        self._turn = threading.Condition()
        self.closed = False
        _UNRELEASED.add(self)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._turn:
            self._reading += 1
            # A read waits on one of pyarrow's few I/O threads, which all
            # readers of the process share, so only some may wait at once.
            if not self._may_read() and _park():
                try:
                    self._turn.wait_for(self._may_read, timeout=_READ_AHEAD_WAIT)
                finally:
                    _unpark()
            self._reads += 1
        data = b""
        try:
            data = self._raw.read(size)
            return data
        finally:
            with self._turn:
                self._reading -= 1
                self._last_read = time.monotonic()
                self._at_end = self._at_end or not data
                self._turn.notify_all()
            _ACTIVITY.last = time.monotonic()

    def _may_read(self) -> bool:
        return self._released or self._reads - self._batches_taken < self._limit

    def taken(self) -> None:
        """Count one batch handed on, which lets one more block be read."""
        with self._turn:
            self._batches_taken += 1
            self._turn.notify_all()

    def release(self) -> None:
        """Let every further read go ahead without waiting for the consumer."""
        with self._turn:
            self._released = True
            self._turn.notify_all()
        _UNRELEASED.discard(self)

    def settle(self, quiet: float = 0.05, timeout: float = 5.0) -> None:
        """Wait, at most `timeout` seconds, until pyarrow stops reading.

        pyarrow has stopped once a read returned the end or a failure, or
        when no read has run for `quiet` seconds (its queue is full).
        """
        deadline = time.monotonic() + timeout
        with self._turn:
            while (now := time.monotonic()) < deadline:
                if not self._reading and (
                    self._at_end or now - self._last_read >= quiet
                ):
                    return
                self._turn.wait(min(quiet, deadline - now))

    def close(self) -> None:
        self.closed = True


#: Streams whose reader is neither finished nor closed.
_UNRELEASED: weakref.WeakSet[_PacedStream] = weakref.WeakSet()
#: Time pyarrow's threads are given after the last read before the
#: interpreter shuts down, to drop the blocks they still hold.
_EXIT_QUIET = 0.2


class _Activity:
    """Reads waiting for a consumer in the process, and the time of the last read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.parked = 0
        self.last = 0.0


_ACTIVITY = _Activity()


def _park() -> bool:
    """Count one more waiting read. Return False if half the I/O threads wait."""
    with _ACTIVITY.lock:
        if _ACTIVITY.parked >= max(1, pa.io_thread_count() // 2):
            return False
        _ACTIVITY.parked += 1
        return True


def _unpark() -> None:
    with _ACTIVITY.lock:
        _ACTIVITY.parked -= 1


@atexit.register
def _release_all() -> None:
    # A pyarrow thread that calls into Python while the interpreter shuts
    # down aborts the process: a read, or freeing a block it read. So a
    # reader still open is released and left to stop, and pyarrow's threads
    # get a moment after the last read.
    streams = list(_UNRELEASED)
    for stream in streams:
        stream.release()
    for stream in streams:
        stream.settle()
    pause = _EXIT_QUIET - (time.monotonic() - _ACTIVITY.last)
    if pause > 0:
        time.sleep(pause)


def conversion_error_column(err: pa.ArrowInvalid) -> int | None:
    """Return the 0-based column a pyarrow conversion error names, or None.

    None means that the error is not about converting a value, for example
    a record with the wrong number of fields.
    """
    match = _CONVERSION_ERROR.match(str(err))
    return int(match.group(1)) if match else None


def block_too_small(err: pa.ArrowInvalid) -> bool:
    """Tell whether pyarrow failed because a record did not fit its blocks."""
    message = str(err)
    return "straddling" in message or "Empty CSV file or block" in message


def scan_records(path: Path, options: TransformOptions) -> Iterator[ScannedRecord]:
    """Parse `path` again with Python's csv module and yield its data records.

    This is the slow path used to name lines in errors and to keep rejected
    records whole. Bytes that are not UTF-8 are kept as surrogate escapes,
    so `text` can be checked for them.
    """
    payload = open_payload(path, options)
    csv.field_size_limit(max(csv.field_size_limit(), sys.maxsize >> 1))
    try:
        text = io.TextIOWrapper(
            payload.stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        lines = _LineTap(text)
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        index = 0
        while True:
            start = lines.count + 1
            lines.taken.clear()
            fields = next(reader, None)
            if fields is None:
                return
            if not fields:
                continue
            record = "".join(lines.taken).rstrip("\r\n")
            if len(fields) == width:
                yield ScannedRecord(index, start, record, fields)
                index += 1
            else:
                yield ScannedRecord(None, start, record, fields)
    finally:
        payload.close()


class _LineTap:
    """Iterate over lines, keeping a count and the lines of the current record."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = iter(lines)
        self.count = 0
        self.taken: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        self.taken.append(line)
        return line


def count_records(path: Path, options: TransformOptions) -> int:
    """Count the data records of an export, without typing any value.

    Records, not lines, are counted: a quoted field may span lines. Records
    with a wrong field count are counted too.

    Raises:
        DataError: The file is empty, not CSV, or fails the bomb guard.
        DownloadError: The compressed stream is truncated or corrupt.
    """
    path = Path(path)
    payload = open_payload(path, options)
    try:
        header = read_header(payload)
    finally:
        payload.close()

    reader = TextBatchReader(
        path,
        header,
        options,
        skip_invalid_rows=True,
        column_types={header[0]: pa.binary()},
    )
    total = sum(batch.num_rows for batch in reader)
    return total + reader.invalid_rows
