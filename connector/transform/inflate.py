"""Inflate a deflated zip member with isal, which is faster than zlib.

`zipfile` inflates with zlib. A deflated member that is not encrypted is
instead read straight from the archive and inflated with `isal.isal_zlib`.
Its CRC-32 and size are checked against the central directory at the end,
as `zipfile` does. Other members are left to `zipfile`.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from connector.errors import DownloadError

try:
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a declared dependency
    import zlib as _zlib

_LOCAL_HEADER = struct.Struct("<4s22xHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_INPUT_CHUNK_BYTES = 256 * 1024
# Each step returns at most this much, whatever the input expands to: a
# step's unused input is kept for the next one.
_OUTPUT_CHUNK_BYTES = 1024 * 1024


def can_inflate(info: zipfile.ZipInfo) -> bool:
    """Tell whether `InflateReader` can read this member."""
    encrypted = bool(info.flag_bits & 0x1)
    return info.compress_type == zipfile.ZIP_DEFLATED and not encrypted


class InflateReader(io.RawIOBase):
    """Stream the inflated bytes of one deflated zip member.

    Raises `DownloadError` when the member is cut short or its CRC-32 or
    size differs from the central directory's.
    """

    def __init__(self, raw: BinaryIO, info: zipfile.ZipInfo, path: Path) -> None:
        self._raw = raw
        self._info = info
        self._path = path
        self._remaining = info.compress_size
        self._inflater = _zlib.decompressobj(-15)
        self._pending = memoryview(b"")
        self._crc = 0
        self._size = 0
        self._finished = False
        raw.seek(self._data_offset())

    def _data_offset(self) -> int:
        self._raw.seek(self._info.header_offset)
        header = self._raw.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size:
            raise self._corrupt("has a local header that is cut short")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        if signature != _LOCAL_SIGNATURE:
            raise self._corrupt("has a local header with a wrong signature")
        return (
            self._info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._finished:
            self._inflate_step()
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _inflate_step(self) -> None:
        if self._inflater.unconsumed_tail and not self._inflater.eof:
            output = self._inflate(self._inflater.unconsumed_tail)
        elif self._remaining and not self._inflater.eof:
            output = self._inflate(self._read_input())
        else:
            output = self._inflater.flush()
            self._finished = True
        self._crc = _zlib.crc32(output, self._crc)
        self._size += len(output)
        self._pending = memoryview(output)
        if self._finished:
            self._check_end()

    def _read_input(self) -> bytes:
        data = self._raw.read(min(_INPUT_CHUNK_BYTES, self._remaining))
        if not data:
            raise self._corrupt("is cut short by the end of the archive")
        self._remaining -= len(data)
        return data

    def _inflate(self, data: bytes) -> bytes:
        try:
            return self._inflater.decompress(data, _OUTPUT_CHUNK_BYTES)
        except _zlib.error as err:
            raise self._corrupt(f"has invalid deflate data ({err})") from err

    def _check_end(self) -> None:
        if not self._inflater.eof:
            raise self._corrupt("has a deflate stream that is cut short")
        if self._crc != self._info.CRC or self._size != self._info.file_size:
            raise self._corrupt("does not match the CRC-32 or size in the directory")

    def _corrupt(self, detail: str) -> DownloadError:
        return DownloadError(
            f"{self._path} is a truncated or corrupt zip archive: member "
            f"{self._info.filename} {detail}; download it again.",
            path=str(self._path),
        )
