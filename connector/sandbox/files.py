"""Export files: CSV text, gzip and zip archives, and their broken variants.

DiVA does not document its CSV layout, so the sandbox writes the most likely
one: a header of field names, RFC 4180 quoting, CRLF line ends, UTF-8 without
a byte order mark, and empty cells for nulls. Dates are `YYYY-MM-DD` and
timestamps `YYYY-MM-DD HH:MM:SS` (or ISO 8601 with milliseconds and `Z`).
Booleans are `true`/`false`, and decimals are plain text with exactly their
declared scale.

Archives are byte-for-byte deterministic: gzip members carry no name and a
zero modification time, zip members a fixed name and date.
"""

from __future__ import annotations

import csv
import gzip
import io
import struct
import zipfile
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

#: Timestamp styles of CSV cells: `plain` (`YYYY-MM-DD HH:MM:SS`) or `iso`
#: (`YYYY-MM-DDTHH:MM:SS.000Z`).
TIMESTAMP_FORMATS = ("plain", "iso")

_ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def format_text(value: object, timestamp_format: str = "plain") -> str | None:
    """Return a value as it appears in a CSV cell, or None for a null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if timestamp_format == "iso":
            return (
                value.strftime("%Y-%m-%dT%H:%M:%S.")
                + f"{value.microsecond // 1000:03d}Z"
            )
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def format_json(value: object) -> object:
    """Return a value as DiVA's JSON responses carry it.

    Dates and timestamps are ISO 8601 with milliseconds and `Z`, even for
    `date` columns. Decimals become JSON numbers, so a scale above about 15
    significant digits loses precision in JSON (never in CSV).
    """
    if isinstance(value, datetime):
        return format_text(value, "iso")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00.000Z"
    if isinstance(value, Decimal):
        return float(value)
    return value


def render_csv(
    rows: Iterable[dict[str, object]],
    fields: list[str],
    timestamp_format: str = "plain",
) -> bytes:
    """Return the CSV file of `rows` restricted to `fields`, encoded as UTF-8."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow(
            [
                ""
                if (text := format_text(row[name], timestamp_format)) is None
                else text
                for name in fields
            ]
        )
    return buffer.getvalue().encode("utf-8")


def build_archive(csv_bytes: bytes, compression: str, member_name: str) -> bytes:
    """Pack a CSV file as gzip (`gz`) or as a zip holding one member (`zip`)."""
    if compression == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            info = zipfile.ZipInfo(member_name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, csv_bytes)
        return buffer.getvalue()
    return gzip.compress(csv_bytes, mtime=0)


def truncate_archive(data: bytes) -> bytes:
    """Return the first two thirds of an archive, as a cut-off file looks."""
    return data[: max(1, len(data) * 2 // 3)]


def corrupt_gzip_crc(data: bytes) -> bytes:
    """Return a gzip file whose trailer CRC-32 no longer matches its content."""
    crc = struct.unpack("<I", data[-8:-4])[0]
    return data[:-8] + struct.pack("<I", crc ^ 0xFFFFFFFF) + data[-4:]


def corrupt_zip_crc(data: bytes) -> bytes:
    """Return a zip file whose member CRC-32 no longer matches its content.

    Both the local header and the central directory are changed, so the
    archive still opens and the error surfaces only when the member is read.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.infolist()[0]
    wrong = struct.pack("<I", info.CRC ^ 0xFFFFFFFF)
    right = struct.pack("<I", info.CRC)

    patched = bytearray(data)
    local = info.header_offset
    patched[local + 14 : local + 18] = wrong
    central = patched.rfind(b"PK\x01\x02")
    if patched[central + 16 : central + 20] != right:
        raise ValueError(
            "Unexpected zip layout: the central directory CRC was not found."
        )
    patched[central + 16 : central + 20] = wrong
    return bytes(patched)
