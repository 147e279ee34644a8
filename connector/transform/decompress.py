"""Open an export file as a stream of CSV bytes, whatever its compression.

The format is decided by the leading magic bytes, never by the file name:
DiVA's tokens carry `.csv.gz` or `.csv.zip`, but an HTTP layer may already
have removed one gzip layer, or a proxy may have added one. Zip members are
streamed from the archive and never extracted, so no member name is ever
used as a path and nothing is written to disk.

Every stream counts the bytes it returns and stops with a `DataError` once
they pass `max_uncompressed_bytes` or `max_expansion_ratio` times the size
of the file (a decompression bomb guard).
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from connector.errors import DataError, DownloadError
from connector.transform.inflate import InflateReader, can_inflate
from connector.transform.options import TransformOptions

try:
    from isal import igzip as _gzip
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - isal is a declared dependency
    import gzip as _gzip

    _IsalError = zlib.error

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_OTHER_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"7z\xbc\xaf": "7z",
}
#: Maximum gzip layers unwrapped. An export has one, and a download saved
#: without decoding `Content-Encoding: gzip` has two.
MAX_GZIP_LAYERS = 4
_READ_BUFFER_BYTES = 1024 * 1024


@dataclass
class Payload:
    """The decompressed CSV bytes of one export file.

    Attributes:
        stream: Buffered binary stream of the CSV bytes.
        path: The export file.
        member: The zip member read, or None for gzip and plain files.
        compression: `gzip`, `zip` or `none`, outermost layer first joined
            by `+` when layers are nested (`gzip+gzip`).
    """

    stream: BinaryIO
    path: Path
    member: str | None
    compression: str
    _guard: _Guard
    _file: BinaryIO

    @property
    def bytes_read(self) -> int:
        """Decompressed bytes returned so far."""
        return self._guard.total

    @property
    def nul_seen(self) -> bool:
        """Whether the bytes returned so far contain a NUL byte."""
        return self._guard.nul_seen

    def close(self) -> None:
        """Close the stream and the file below it."""
        try:
            self.stream.close()
        finally:
            self._file.close()


def open_payload(path: Path, options: TransformOptions) -> Payload:
    """Open `path` and return its decompressed CSV bytes as a stream.

    Raises:
        DataError: The file is not a CSV export (another compression, a zip
            without exactly one CSV member, a member with an unsafe name).
        DownloadError: The file cannot be read.
    """
    path = Path(path)
    try:
        raw = path.open("rb")
    except OSError as err:
        raise DownloadError(
            f"Cannot open export file {path}: {err}", path=str(path)
        ) from err
    try:
        return _open_layers(raw, path, options)
    except BaseException:
        raw.close()
        raise


def _open_layers(raw: BinaryIO, path: Path, options: TransformOptions) -> Payload:
    size = path.stat().st_size
    head = raw.read(8)
    raw.seek(0)
    layers: list[str] = []
    member = None
    stream: BinaryIO = raw

    if head.startswith(ZIP_MAGIC):
        stream, member = _open_zip_member(raw, path)
        layers.append("zip")
    else:
        _reject_other_compression(head, path)

    # Each layer counts what it returns; the innermost layer's count is the
    # CSV's size. It is known to be innermost only after its first read.
    mapper = _ErrorMapper(stream, path, "zip" if member else None)
    mapper.guard = _Guard(path, size, options)
    stream = io.BufferedReader(mapper, buffer_size=_READ_BUFFER_BYTES)
    while stream.peek(2)[:2] == GZIP_MAGIC:
        if len(layers) >= MAX_GZIP_LAYERS:
            raise DataError(
                f"{path} has more than {MAX_GZIP_LAYERS} nested gzip layers; "
                "it is not a DiVA export.",
                path=str(path),
            )
        gzip_file = _gzip.GzipFile(fileobj=stream, mode="rb")
        mapper = _ErrorMapper(gzip_file, path, "gzip")
        mapper.guard = _Guard(path, size, options)
        stream = io.BufferedReader(mapper, buffer_size=_READ_BUFFER_BYTES)
        layers.append("gzip")

    guard = mapper.guard
    compression = "+".join(layers) or "none"
    log.debug("Opened %s (%s, %d bytes on disk).", path, compression, size)
    return Payload(stream, path, member, compression, guard, raw)


def _reject_other_compression(head: bytes, path: Path) -> None:
    for magic, name in _OTHER_MAGIC.items():
        if head.startswith(magic):
            raise DataError(
                f"{path} is {name}-compressed; DiVA exports are gzip, zip or "
                "plain CSV. Export again with compress=gz or compress=zip.",
                path=str(path),
            )


def _open_zip_member(raw: BinaryIO, path: Path) -> tuple[BinaryIO, str]:
    try:
        archive = zipfile.ZipFile(raw)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DownloadError(
            f"{path} is a truncated or corrupt zip archive ({err}); download it again.",
            path=str(path),
        ) from err

    for info in infos:
        _check_member_name(info.filename, path)
    member = _pick_csv_member(infos, path)
    if can_inflate(member):
        return InflateReader(raw, member, path), member.filename
    try:
        return archive.open(member), member.filename
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as err:
        raise DataError(
            f"Cannot read member {member.filename} of {path}: {err}",
            path=str(path),
            value=member.filename,
        ) from err


def _check_member_name(name: str, path: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    absolute = name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
    if absolute or ".." in parts:
        raise DataError(
            f"Zip archive {path} has a member with an unsafe name: {name!r} "
            "(absolute or containing '..'). The archive is rejected and nothing "
            "was extracted.",
            path=str(path),
            value=name,
        )


def _is_junk_member(info: zipfile.ZipInfo) -> bool:
    parts = PurePosixPath(info.filename).parts
    return (
        info.is_dir()
        or "__MACOSX" in parts
        or any(part.startswith("._") for part in parts)
        or parts[-1] in {".DS_Store", "Thumbs.db"}
    )


def _pick_csv_member(infos: list[zipfile.ZipInfo], path: Path) -> zipfile.ZipInfo:
    candidates = [info for info in infos if not _is_junk_member(info)]
    csv_members = [
        info
        for info in candidates
        if ".csv" in PurePosixPath(info.filename.lower()).suffixes
    ]
    if len(csv_members) == 1:
        return csv_members[0]
    # A lone member without the .csv suffix is still read, because its
    # content is checked when parsed.
    if not csv_members and len(candidates) == 1:
        return candidates[0]
    names = ", ".join(info.filename for info in csv_members or candidates)
    if not names:
        raise DataError(
            f"Zip archive {path} contains no CSV member; download the export again.",
            path=str(path),
        )
    raise DataError(
        f"Zip archive {path} contains several candidate CSV members ({names}); "
        "expected exactly one.",
        path=str(path),
        value=names,
    )


class _ErrorMapper(io.RawIOBase):
    """Turn a decompressor's low-level errors into `DownloadError`.

    It also passes what it returns to its `guard`.
    """

    def __init__(self, inner: BinaryIO, path: Path, layer: str | None) -> None:
        self._inner = inner
        self._path = path
        self._layer = layer
        self.guard: _Guard | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            count = self._inner.readinto(buffer)
        except (EOFError, OSError, zlib.error, _IsalError, zipfile.BadZipFile) as err:
            kind = self._layer or "file"
            raise DownloadError(
                f"{self._path} is a truncated or corrupt {kind} ({err}); "
                "download the export again.",
                path=str(self._path),
            ) from err
        if self.guard is not None and count:
            self.guard.check(buffer, count)
        return count

    def close(self) -> None:
        self._inner.close()
        super().close()


class _Guard:
    """Count decompressed bytes and stop at the decompression bomb limits.

    It also notes whether any NUL byte went by, so that the values of a file
    without one need no search for it.
    """

    def __init__(self, path: Path, file_bytes: int, options: TransformOptions) -> None:
        self._path = path
        self._file_bytes = max(file_bytes, 1)
        self._max_bytes = options.max_uncompressed_bytes
        self._max_ratio = options.max_expansion_ratio
        self.total = 0
        self.nul_seen = False

    def check(self, buffer, count: int) -> None:
        """Account for `count` bytes just read into `buffer`."""
        self.total += count
        if not self.nul_seen:
            # The smallest byte is 0 exactly when the block contains a NUL.
            self.nul_seen = int(np.frombuffer(buffer, np.uint8, count).min()) == 0
        if self.total > self._max_bytes:
            raise DataError(
                f"{self._path} decompresses to more than "
                f"{self._max_bytes} bytes (max_uncompressed_bytes); it was "
                "rejected as a possible decompression bomb. Raise the limit if "
                "the export is genuine.",
                path=str(self._path),
            )
        if self.total > self._max_ratio * self._file_bytes:
            raise DataError(
                f"{self._path} expands more than {self._max_ratio:g} times its "
                f"{self._file_bytes} bytes on disk (max_expansion_ratio); it was "
                "rejected as a possible decompression bomb. Raise the limit if "
                "the export is genuine.",
                path=str(self._path),
            )
