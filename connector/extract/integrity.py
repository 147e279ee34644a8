"""Integrity checks of downloaded export files, decided by their magic bytes.

The file type is read from the first bytes, never from the token's extension
or the Content-Type: DiVA or a proxy may send a `.csv.gz` token uncompressed,
or an HTTP layer may already have undone a gzip `Content-Encoding`.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from pathlib import Path
from typing import Literal

from isal import igzip, isal_zlib

from connector.errors import DownloadError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
#: Local file header, empty archive, and spanned archive signatures.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")

#: Bytes read at a time while decompressing a file to check it.
READ_CHUNK_BYTES = 1024 * 1024

FileFormat = Literal["gzip", "zip", "csv"]


def sniff_format(path: Path) -> FileFormat:
    """Return the format of a file from its leading bytes.

    Anything that is neither gzip nor zip is taken as plain CSV, since DiVA
    may send an export uncompressed.
    """
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head in ZIP_MAGICS:
        return "zip"
    return "csv"


def verify_export_file(path: Path) -> None:
    """Check that an export file is complete, by decompressing it fully.

    gzip: every member must decompress to its end and match its CRC and
    length trailer. zip: the central directory must be complete and every
    member must match its CRC. Plain CSV cannot be checked beyond the
    transfer length, which the download already compared.

    Raises:
        DownloadError: The file is truncated or corrupt; the message names it.
    """
    file_format = sniff_format(path)
    if file_format == "gzip":
        _verify_gzip(path)
    elif file_format == "zip":
        _verify_zip(path)
    log.debug("Export file %s passed its %s integrity check.", path.name, file_format)


def _verify_gzip(path: Path) -> None:
    try:
        with igzip.open(path, "rb") as stream:
            while stream.read(READ_CHUNK_BYTES):
                pass
    except (EOFError, OSError, ValueError, zlib.error, isal_zlib.error) as err:
        raise DownloadError(
            f"Export file {path} is a truncated or corrupt gzip stream ({err}); "
            "it must be downloaded again.",
            path=str(path),
        ) from err


def _verify_zip(path: Path) -> None:
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.header_offset + member.compress_size > size:
                    raise zipfile.BadZipFile(
                        f"member {member.filename!r} extends past the end of the file"
                    )
            bad_member = archive.testzip()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as err:
        raise DownloadError(
            f"Export file {path} is a truncated or corrupt zip archive ({err}); "
            "it must be downloaded again.",
            path=str(path),
        ) from err
    if bad_member is not None:
        raise DownloadError(
            f"Export file {path} is a corrupt zip archive: member {bad_member!r} "
            "fails its CRC check; it must be downloaded again.",
            path=str(path),
        )
