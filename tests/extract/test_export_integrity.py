"""Integrity checks of export files, decided by magic bytes."""

from __future__ import annotations

import gzip
import io
import shutil
import zipfile
from pathlib import Path

import pytest

from connector.errors import DownloadError
from connector.extract.integrity import sniff_format, verify_export_file

CASES = Path(__file__).resolve().parents[1] / "cases"
CSV = b"token,amount\n" + b"".join(b"t%d,%d.50\n" % (n, n) for n in range(2000))


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _zip_bytes(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.csv", data)
    return buffer.getvalue()


def test_truncated_case_file_fails_naming_file(tmp_path):
    path = shutil.copy(CASES / "05-truncated.csv.gz", tmp_path / "05-truncated.csv.gz")

    with pytest.raises(DownloadError) as caught:
        verify_export_file(Path(path))

    message = str(caught.value)
    assert "truncated or corrupt gzip" in message
    assert "05-truncated.csv.gz" in message
    assert caught.value.path == str(path)


@pytest.mark.parametrize(
    "name",
    ["03-header-only.csv.gz", "06-multimember.csv.gz", "07-zip-dir-and-macosx.zip"],
)
def test_complete_case_files_pass(name):
    verify_export_file(CASES / name)


def test_gzip_with_bad_crc_fails(tmp_path):
    data = bytearray(gzip.compress(CSV))
    data[-8] ^= 0xFF
    path = _write(tmp_path, "bad-crc.csv.gz", bytes(data))

    with pytest.raises(DownloadError, match="bad-crc.csv.gz"):
        verify_export_file(path)


def test_gzip_with_truncated_second_member_fails(tmp_path):
    member = gzip.compress(CSV)
    path = _write(tmp_path, "two.csv.gz", member + member[: len(member) // 2])

    with pytest.raises(DownloadError, match="truncated or corrupt gzip"):
        verify_export_file(path)


def test_truncated_zip_fails(tmp_path):
    data = _zip_bytes(CSV)
    path = _write(tmp_path, "cut.csv.zip", data[: len(data) - 30])

    with pytest.raises(DownloadError, match="cut.csv.zip"):
        verify_export_file(path)


def test_zip_with_bad_member_crc_fails(tmp_path):
    data = bytearray(_zip_bytes(CSV))
    # The central directory entry contains the member's CRC-32 at offset 16;
    # testzip compares the decompressed data against it.
    central = data.rfind(b"PK\x01\x02")
    data[central + 16] ^= 0xFF
    path = _write(tmp_path, "crc.csv.zip", bytes(data))

    with pytest.raises(DownloadError, match="crc.csv.zip"):
        verify_export_file(path)


def test_format_is_read_from_magic_bytes_not_extension(tmp_path):
    gz_named_csv = _write(tmp_path, "a.csv", gzip.compress(CSV))
    csv_named_gz = _write(tmp_path, "b.csv.gz", CSV)
    zip_named_gz = _write(tmp_path, "c.csv.gz", _zip_bytes(CSV))

    assert sniff_format(gz_named_csv) == "gzip"
    assert sniff_format(csv_named_gz) == "csv"
    assert sniff_format(zip_named_gz) == "zip"


def test_plain_csv_under_gz_name_passes(tmp_path):
    verify_export_file(_write(tmp_path, "plain.csv.gz", CSV))


def test_truncated_gzip_under_csv_name_fails(tmp_path):
    data = gzip.compress(CSV)
    path = _write(tmp_path, "plain.csv", data[: len(data) // 2])

    with pytest.raises(DownloadError):
        verify_export_file(path)
