"""The full export cycle against the sandbox, with its faults switched on."""

from __future__ import annotations

import csv
import gzip
import io
import time
import zipfile
from datetime import date
from pathlib import Path

import pytest
from conftest import ACCESS_TOKEN, APP_TOKEN, PROGRAM

from connector.errors import AuthError
from connector.extract.export import ExportedFile, export_window
from connector.extract.integrity import sniff_format
from connector.extract.rundir import RunDirectory
from connector.windows import Window

sandbox = pytest.importorskip("connector.sandbox")

WINDOW = Window(date(2024, 3, 1), date(2024, 3, 3))
ROWS_PER_DAY = 40
POLL_INTERVAL_S = 2.0


@pytest.fixture
def sb():
    with sandbox.Sandbox(
        seed=7,
        rows_per_day=ROWS_PER_DAY,
        app_token=APP_TOKEN,
        access_token=ACCESS_TOKEN,
        program=PROGRAM,
        pending_polls=1,
        expiry_s=3600.0,
    ) as server:
        yield server


def run(client, dataset, work_dir: Path, *, compress="gz", key="k") -> ExportedFile:
    return export_window(
        client,
        dataset,
        WINDOW,
        RunDirectory.open(work_dir, key),
        compress=compress,
        max_count=None,
        poll_interval_s=POLL_INTERVAL_S,
        poll_max_interval_s=10.0,
        poll_timeout_s=600.0,
        max_reexports=2,
    )


def csv_rows(path: Path) -> list[list[str]]:
    """Return the CSV records of an export file, opened by its magic bytes."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = archive.read(archive.namelist()[0])
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def requests_of(sb, route: str, minimum: int) -> list:
    """Return the sandbox's recorded requests of a route, once `minimum` are in.

    The sandbox records a request after sending its response, so the last
    one can reach the list a moment after the client has moved on.
    """
    deadline = time.monotonic() + 2.0
    while True:
        matching = [r for r in sb.requests if r.path.endswith(route)]
        if len(matching) >= minimum or time.monotonic() > deadline:
            return matching
        time.sleep(0.01)


def export_count(sb) -> int:
    return sum(1 for r in sb.requests if r.path.endswith("/csv") and r.status == 202)


@pytest.mark.parametrize("compress", ["gz", "zip"])
def test_full_cycle_delivers_every_row(
    compress, sb, make_client, authorizations, clock, tmp_path
):
    sb.faults.pending_polls = 2
    client = make_client(sb.base_url)

    exported = run(client, authorizations, tmp_path, compress=compress)
    total = client.count_rows(authorizations, WINDOW)

    rows = csv_rows(exported.path)
    assert sniff_format(exported.path) == ("gzip" if compress == "gz" else "zip")
    assert exported.path.name.endswith(f".csv.{compress}")
    assert total == 3 * ROWS_PER_DAY
    assert len(rows) - 1 == total
    assert "transaction_timestamp" in rows[0]
    assert len(clock.sleeps) == 2
    assert clock.sleeps[1] > clock.sleeps[0]
    assert export_count(sb) == 1


def test_throttled_export_waits_retry_after(
    sb, make_client, authorizations, clock, tmp_path
):
    sb.faults.throttle(times=2, route="export", retry_after="seconds", delay_s=3.0)

    run(make_client(sb.base_url), authorizations, tmp_path)

    assert clock.sleeps[:2] == [3.0, 3.0]
    assert export_count(sb) == 1


def test_server_errors_on_download_retried(sb, make_client, authorizations, tmp_path):
    sb.faults.fail(503, 502, route="download")

    exported = run(make_client(sb.base_url), authorizations, tmp_path)

    statuses = [r.status for r in sb.requests if r.path.endswith("/download")]
    assert statuses[:2] == [503, 502]
    assert len(csv_rows(exported.path)) - 1 == 3 * ROWS_PER_DAY


@pytest.mark.parametrize(
    "arm",
    [
        lambda faults: faults.drop_download(after_bytes=1000),
        lambda faults: (
            setattr(faults, "ignore_range", True),
            faults.drop_download(1000),
        ),
        lambda faults: faults.cut_chunked(after_bytes=1500),
        lambda faults: faults.truncate_gzip(),
        lambda faults: faults.corrupt_gzip(),
    ],
    ids=["dropped", "dropped-range-ignored", "chunked-cut", "truncated", "bad-crc"],
)
def test_broken_download_fetched_again(arm, sb, make_client, authorizations, tmp_path):
    healthy = csv_rows(
        run(make_client(sb.base_url), authorizations, tmp_path / "a").path
    )
    arm(sb.faults)

    exported = run(make_client(sb.base_url), authorizations, tmp_path / "b")

    downloads = requests_of(sb, "/download", 5)
    assert csv_rows(exported.path) == healthy
    assert len(downloads) >= 5  # two per healthy run, plus at least one retry
    assert list((tmp_path / "b").rglob("*.part")) == []


def test_corrupt_zip_fetched_again(sb, make_client, authorizations, tmp_path):
    sb.faults.corrupt_zip()

    exported = run(make_client(sb.base_url), authorizations, tmp_path, compress="zip")

    assert len(csv_rows(exported.path)) - 1 == 3 * ROWS_PER_DAY


def test_expired_file_exported_again(sb, make_client, authorizations, tmp_path):
    sb.faults.expire_first_download()

    exported = run(make_client(sb.base_url), authorizations, tmp_path)

    assert export_count(sb) == 2
    assert [r.status for r in sb.requests].count(410) == 1
    assert len(csv_rows(exported.path)) - 1 == 3 * ROWS_PER_DAY


def test_content_encoding_gzip_stored_decoded(
    sb, make_client, authorizations, tmp_path
):
    healthy = csv_rows(
        run(make_client(sb.base_url), authorizations, tmp_path / "a").path
    )
    sb.faults.content_encoding_gzip = True

    exported = run(make_client(sb.base_url), authorizations, tmp_path / "b")

    assert sniff_format(exported.path) == "csv"
    assert csv_rows(exported.path) == healthy


def test_wrong_password_fails_without_retry(
    sb, make_client, authorizations, clock, tmp_path
):
    client = make_client(sb.base_url, access_token="wrong-password-123")

    with pytest.raises(AuthError) as caught:
        run(client, authorizations, tmp_path)

    assert caught.value.status == 401
    assert clock.sleeps == []
    assert len(requests_of(sb, "/csv", 1)) == 1


def test_threads_share_client_and_run_directory(
    sb, make_client, authorizations, tmp_path
):
    from concurrent.futures import ThreadPoolExecutor

    client = make_client(sb.base_url)
    run_dir = RunDirectory.open(tmp_path, "backfill")
    windows = [Window(date(2024, 3, day), date(2024, 3, day)) for day in range(1, 7)]

    def export(window: Window) -> ExportedFile:
        return export_window(
            client,
            authorizations,
            window,
            run_dir,
            compress="gz",
            max_count=None,
            poll_interval_s=POLL_INTERVAL_S,
            poll_max_interval_s=10.0,
            poll_timeout_s=600.0,
            max_reexports=2,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        exported = list(pool.map(export, windows))

    assert len({item.path for item in exported}) == len(windows)
    for item in exported:
        assert len(csv_rows(item.path)) - 1 == ROWS_PER_DAY
        assert run_dir.recorded_file(item.window) == item.path
    assert export_count(sb) == len(windows)
