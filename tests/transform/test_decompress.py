"""Opening exports: magic-byte detection, zip members, bomb guard, corruption."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from connector.errors import DataError, DownloadError
from connector.transform import TransformOptions, count_records
from connector.transform.decompress import open_payload
from connector.transform.inflate import InflateReader

from .conftest import CASE_HEADER, case_row

CSV_TEXT = f"{CASE_HEADER}\n{case_row('a')}\n{case_row('b')}\n"


def payload_bytes(path: Path, **options) -> tuple[bytes, str, str | None]:
    payload = open_payload(path, TransformOptions(**options))
    try:
        return payload.stream.read(), payload.compression, payload.member
    finally:
        payload.close()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("name", "encode", "compression"),
    [
        ("plain.csv.gz", lambda data: data, "none"),
        ("gzip.csv", gzip.compress, "gzip"),
        ("double.csv", lambda data: gzip.compress(gzip.compress(data)), "gzip+gzip"),
        (
            "triple.zip",
            lambda data: gzip.compress(gzip.compress(gzip.compress(data))),
            "gzip+gzip+gzip",
        ),
    ],
)
def test_format_follows_magic_bytes_not_name(tmp_path, name, encode, compression):
    path = tmp_path / name
    path.write_bytes(encode(CSV_TEXT.encode()))

    data, found, member = payload_bytes(path)

    assert data == CSV_TEXT.encode()
    assert found == compression
    assert member is None


def test_gzip_inside_zip_is_unwrapped(tmp_path):
    path = make_zip(tmp_path / "e.zip", {"e.csv.gz": gzip.compress(CSV_TEXT.encode())})

    data, compression, member = payload_bytes(path)

    assert data == CSV_TEXT.encode()
    assert compression == "zip+gzip"
    assert member == "e.csv.gz"


def test_corrupt_gzip_raises_download_error(tmp_path):
    packed = bytearray(gzip.compress(CSV_TEXT.encode() * 50))
    packed[30:60] = b"\xff" * 30
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(bytes(packed))

    with pytest.raises(DownloadError, match="truncated or corrupt gzip") as info:
        payload_bytes(path)

    assert str(path) in str(info.value)


def test_gzip_missing_trailer_raises_download_error(tmp_path):
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(CSV_TEXT.encode())[:-8])

    with pytest.raises(DownloadError, match="truncated or corrupt gzip"):
        payload_bytes(path)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"a.csv": b"x", "b.csv": b"y"}, "a.csv, b.csv"),
        (
            {"dir/one.csv": b"x", "two.CSV.gz": b"y", "__MACOSX/._one.csv": b"z"},
            "dir/one.csv, two.CSV.gz",
        ),
    ],
)
def test_zip_with_several_csv_members_lists_them(tmp_path, members, expected):
    path = make_zip(tmp_path / "many.zip", members)

    with pytest.raises(DataError, match="several candidate CSV members") as info:
        payload_bytes(path)

    assert expected in str(info.value)
    assert "__MACOSX" not in str(info.value)


def test_zip_with_only_junk_members_is_rejected(tmp_path):
    path = make_zip(
        tmp_path / "junk.zip", {"__MACOSX/._a.csv": b"x", "d/.DS_Store": b"y"}
    )

    with pytest.raises(DataError, match="no CSV member"):
        payload_bytes(path)


@pytest.mark.parametrize(
    "member",
    [
        "/etc/transactions.csv",
        "../transactions.csv",
        "a/../../b.csv",
        "..\\evil.csv",
        "C:/x.csv",
    ],
)
def test_zip_unsafe_member_name_is_rejected(tmp_path, member):
    path = make_zip(tmp_path / "evil.zip", {member: CSV_TEXT.encode(), "ok.csv": b"a"})

    with pytest.raises(DataError, match="unsafe name") as info:
        payload_bytes(path)

    assert info.value.value == member
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


def test_bomb_guard_stops_at_uncompressed_limit(tmp_path):
    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 10_000))

    with pytest.raises(DataError, match="max_uncompressed_bytes"):
        payload_bytes(path, max_uncompressed_bytes=20_000)


def test_bomb_guard_stops_at_expansion_ratio(tmp_path):
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"0" * 5_000_000))

    with pytest.raises(DataError, match="max_expansion_ratio"):
        payload_bytes(path, max_expansion_ratio=100.0)


def test_bomb_guard_counts_zip_member_output(tmp_path):
    path = make_zip(tmp_path / "bomb.zip", {"bomb.csv": b"a,b\n" + b"0" * 5_000_000})

    with pytest.raises(DataError, match="max_expansion_ratio"):
        payload_bytes(path)


def test_bomb_guard_allows_export_within_limits(tmp_path):
    path = tmp_path / "ok.csv.gz"
    path.write_bytes(gzip.compress(CSV_TEXT.encode()))

    data, _, _ = payload_bytes(path, max_uncompressed_bytes=len(CSV_TEXT))

    assert data == CSV_TEXT.encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "decompressed to 0 bytes with no header"),
        (b"\x00\x01\x02\x03garbage\xff\xfe", "binary data"),
        (b"<!DOCTYPE html><html><body>Gateway Timeout</body></html>", "HTML"),
        (b"  <html><head></head></html>", "HTML"),
        (b'{"error_code": "404000", "error_message": "Not found"}', "JSON"),
        (b"BZh91AY&SY", "bzip2-compressed"),
        (b"\xfd7zXZ\x00\x00", "xz-compressed"),
    ],
)
def test_not_csv_input_raises_data_error(tmp_path, content, message):
    path = tmp_path / "export.csv.gz"
    path.write_bytes(content)

    with pytest.raises(DataError, match=message) as info:
        count_records(path, TransformOptions())

    assert info.value.path == str(path)


def test_gzip_of_binary_garbage_raises_data_error(tmp_path):
    path = tmp_path / "export.csv.gz"
    path.write_bytes(gzip.compress(bytes(range(256)) * 10))

    with pytest.raises(DataError, match="binary data"):
        count_records(path, TransformOptions())


def test_missing_file_raises_download_error(tmp_path):
    with pytest.raises(DownloadError, match="Cannot open export file"):
        payload_bytes(tmp_path / "absent.csv.gz")


def test_payload_close_releases_file(tmp_path):
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress(CSV_TEXT.encode()))
    payload = open_payload(path, TransformOptions())
    payload.stream.read(10)

    payload.close()

    assert payload.stream.closed
    assert payload._file.closed
    assert isinstance(payload.stream, io.BufferedReader)


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_zip_member_read_whole(tmp_path, compression):
    data = (CSV_TEXT * 3000).encode()
    path = tmp_path / "e.zip"
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("e.csv", data)

    read, _, member = payload_bytes(path)

    assert read == data
    assert member == "e.csv"


def test_zip_member_with_bad_crc_raises(tmp_path):
    data = (CSV_TEXT * 100).encode()
    path = make_zip(tmp_path / "e.zip", {"e.csv": data})
    archive_bytes = bytearray(path.read_bytes())
    crc = zipfile.ZipFile(path).getinfo("e.csv").CRC.to_bytes(4, "little")
    central = archive_bytes.rindex(crc)
    archive_bytes[central] ^= 0xFF
    path.write_bytes(bytes(archive_bytes))

    with pytest.raises(DownloadError, match="CRC-32") as info:
        payload_bytes(path)

    assert "e.csv" in str(info.value)


def test_zip_member_with_corrupt_data_raises(tmp_path):
    data = bytes(range(256)) * 400
    path = make_zip(tmp_path / "e.zip", {"e.csv": b"a,b\n" + data})
    archive_bytes = bytearray(path.read_bytes())
    archive_bytes[200:400] = b"\x00" * 200
    path.write_bytes(bytes(archive_bytes))

    with pytest.raises(DownloadError, match="truncated or corrupt zip"):
        payload_bytes(path)


def test_truncated_zip_archive_raises(tmp_path):
    path = make_zip(tmp_path / "e.zip", {"e.csv": CSV_TEXT.encode()})
    path.write_bytes(path.read_bytes()[:-30])

    with pytest.raises(DownloadError, match="truncated or corrupt zip"):
        payload_bytes(path)


def test_zip_inflate_steps_stay_small(tmp_path):
    # 8 MiB of zeros deflate to about 8 KB, a single input read.
    body = CASE_HEADER.encode() + b"\r\n" + b"0" * (8 * 1024 * 1024)
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.csv", body)
    info = zipfile.ZipFile(path).infolist()[0]

    with open(path, "rb") as raw:
        reader = InflateReader(raw, info, path)
        buffer = bytearray(64 * 1024 * 1024)
        steps = []
        while count := reader.readinto(buffer):
            steps.append(count)

    assert sum(steps) == len(body)
    assert max(steps) <= 1024 * 1024
