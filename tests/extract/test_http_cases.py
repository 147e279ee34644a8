"""The recorded HTTP fault cases, replayed over loopback through the export cycle.

Each test states the outcome the case requires beside it.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import date
from pathlib import Path

import pytest
from replay import ReplayServer, case_body, load_case

from connector.errors import ExportExpiredError, TransientApiError
from connector.extract.export import ExportedFile, export_window
from connector.extract.integrity import sniff_format
from connector.extract.rundir import RunDirectory
from connector.windows import Window

WINDOW = Window(date(2024, 3, 5), date(2024, 3, 5))
POLL_INTERVAL_S = 2.0


def run_export(
    client, dataset, work_dir: Path, *, max_reexports: int = 2
) -> ExportedFile:
    run_dir = RunDirectory.open(work_dir, "case")
    return export_window(
        client,
        dataset,
        WINDOW,
        run_dir,
        compress="gz",
        max_count=None,
        poll_interval_s=POLL_INTERVAL_S,
        poll_max_interval_s=30.0,
        poll_timeout_s=600.0,
        max_reexports=max_reexports,
    )


def decoded_csv(path: Path) -> bytes:
    """Return the CSV bytes of a file, gunzipped only if it starts with gzip magic."""
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def data_rows(path: Path) -> int:
    return decoded_csv(path).decode("utf-8").count("\n") - 1


def export_requests(server: ReplayServer) -> list:
    return [r for r in server.requests if r.path.endswith("/csv")]


def leftovers(work_dir: Path) -> list[Path]:
    return [p for p in work_dir.rglob("*") if p.name.endswith(".part")]


# Case 23: the body is cut short, so the same token is downloaded again. It
# resumes only on a 206 with a matching Content-Range and starts over on a
# 200. The final file matches the recorded digest and contains 20 rows, and
# no partial file is left.
@pytest.mark.parametrize(
    "scenario",
    [
        "content-length-short-body-then-range-ignored",
        "chunked-transfer-cut-mid-chunk-then-ok",
    ],
)
def test_interrupted_download_fetched_again(
    scenario, make_client, authorizations, tmp_path
):
    case = load_case("23-download-interrupted.json")
    server = ReplayServer.from_case("23-download-interrupted.json", scenario)
    with server:
        exported = run_export(make_client(server.base_url), authorizations, tmp_path)

    digest = hashlib.sha256(exported.path.read_bytes()).hexdigest()
    assert digest == case["bodies"]["export_gz"]["sha256"]
    assert data_rows(exported.path) == case["expected_rows"] == 20
    assert server.mismatches == []
    assert server.unserved == 0
    assert len(export_requests(server)) == 1
    assert leftovers(tmp_path) == []


def test_short_body_retry_requests_rest(make_client, authorizations, tmp_path):
    server = ReplayServer.from_case(
        "23-download-interrupted.json", "content-length-short-body-then-range-ignored"
    )
    with server:
        run_export(make_client(server.base_url), authorizations, tmp_path)

    retry = server.requests[-1]
    assert retry.headers.get("range") == "bytes=802-"


# Case 24, scenario 1: waits of at least 2 s, 3 s and 1 s before the matching
# retries, exactly one export created, 3 rows.
def test_retry_after_seconds_and_http_date_honoured(
    make_client, authorizations, clock, tmp_path
):
    server = ReplayServer.from_case(
        "24-http-429-retry-after.json", "seconds-then-http-date-then-ok"
    )
    with server:
        exported = run_export(make_client(server.base_url), authorizations, tmp_path)

    assert clock.sleeps[:3] == [2.0, 3.0, 1.0]
    assert len(clock.sleeps) == 4  # the three retries and one Pending poll
    assert POLL_INTERVAL_S * 0.9 <= clock.sleeps[3] <= POLL_INTERVAL_S * 1.1
    assert [r.path for r in export_requests(server)] == [
        "/views/authorizations/detail/csv"
    ] * 3
    assert data_rows(exported.path) == 3
    assert server.mismatches == []


# Case 24, scenario 2: Retry-After requests a day, over the cap, so the
# error comes straight away and nothing sleeps.
def test_retry_after_over_cap_fails_at_once(
    make_client, authorizations, clock, tmp_path
):
    server = ReplayServer.from_case(
        "24-http-429-retry-after.json", "retry-after-longer-than-allowed"
    )
    with server, pytest.raises(TransientApiError) as caught:
        run_export(
            make_client(server.base_url, retry_max_wait_s=60.0),
            authorizations,
            tmp_path,
        )

    message = str(caught.value)
    assert "86400 s" in message
    assert "retry_max_wait_s=60" in message
    assert caught.value.status == 429
    assert clock.sleeps == []
    assert len(server.requests) == 1


# Case 24, scenario 3: no Retry-After and always 429: bounded attempts with
# growing backoff, then an error naming 429 and the attempt count.
def test_endless_429_gives_up_after_attempts(
    make_client, authorizations, clock, tmp_path
):
    server = ReplayServer.from_case(
        "24-http-429-retry-after.json", "no-retry-after-always-429"
    )
    with server, pytest.raises(TransientApiError) as caught:
        run_export(
            make_client(server.base_url, retry_max_attempts=4), authorizations, tmp_path
        )

    message = str(caught.value)
    assert "429" in message
    assert "4 attempts" in message
    assert "rate limit exceeded" in message
    assert caught.value.attempts == 4
    assert len(server.requests) == 4
    assert len(clock.sleeps) == 3
    for number, wait in enumerate(clock.sleeps):
        assert 2**number <= wait <= 2**number + 1


# Case 26, scenario 1: 410 means "export again", not a transient fault: the
# dead token is not retried, one new export is requested and polled, 3 rows.
def test_expired_export_requested_again(make_client, authorizations, clock, tmp_path):
    server = ReplayServer.from_case(
        "26-download-410-expired.json", "410-then-export-again"
    )
    with server:
        exported = run_export(
            make_client(server.base_url), authorizations, tmp_path, max_reexports=1
        )

    downloads_of_dead_token = [
        r for r in server.requests if r.query.get("token") == "3f9c2a7e5b1d4c08.csv.gz"
    ]
    assert len(downloads_of_dead_token) == 2  # one Pending, one 410
    assert len(export_requests(server)) == 2
    assert exported.token == "8d41e0b6a2c97f15.csv.gz"
    assert data_rows(exported.path) == 3
    assert server.mismatches == []
    assert server.unserved == 0


# Case 26, scenario 2: the re-export's file is gone too; after the bounded
# number of re-exports, a clear error naming both tokens and the 410.
def test_expired_twice_fails_naming_both_tokens(make_client, authorizations, tmp_path):
    server = ReplayServer.from_case(
        "26-download-410-expired.json", "410-again-after-re-export"
    )
    with server, pytest.raises(ExportExpiredError) as caught:
        run_export(
            make_client(server.base_url), authorizations, tmp_path, max_reexports=1
        )

    message = str(caught.value)
    assert "410" in message
    assert "3f9c2a….csv.gz" in message
    assert "8d41e0….csv.gz" in message
    assert "3f9c2a7e5b1d4c08" not in message
    assert caught.value.status == 410
    assert server.unserved == 0
    assert [p for p in tmp_path.rglob("*.csv*")] == []


# Case 11: text/csv without charset, an uncompressed UTF-8 body; the bytes
# are stored unchanged, so the transform stage decodes them as UTF-8.
def test_text_csv_body_stored_byte_for_byte(make_client, authorizations, tmp_path):
    case = load_case("11-http-text-csv-no-charset.json")
    server = ReplayServer.from_case(
        "11-http-text-csv-no-charset.json", "uncompressed-utf8-body-no-charset"
    )
    with server:
        exported = run_export(make_client(server.base_url), authorizations, tmp_path)

    assert exported.path.read_bytes() == case_body(case, "export_csv")
    assert exported.path.name.endswith(".csv")
    text = exported.path.read_bytes().decode("utf-8")
    assert text == case["body_text_utf8"]
    for name in ("Café Zürich", "Łódź Kebab", "東京ラーメン"):
        assert name in text


# Case 12: gzip labelled Content-Encoding, gzip inside gzip, plain gzip. The
# HTTP layer undoes the Content-Encoding only, and the magic bytes of the
# stored file, not its extension, tell whether to gunzip: every scenario
# yields the same 3 rows.
@pytest.mark.parametrize(
    ("scenario", "stored_format"),
    [
        ("file-is-gzip-and-labelled-content-encoding", "csv"),
        ("server-gzips-the-gzip-again", "gzip"),
        ("plain-gzip-no-content-encoding", "gzip"),
    ],
)
def test_content_encoding_undone_once(
    scenario, stored_format, make_client, authorizations, tmp_path
):
    case = load_case("12-http-content-encoding-gzip.json")
    server = ReplayServer.from_case("12-http-content-encoding-gzip.json", scenario)
    with server:
        exported = run_export(make_client(server.base_url), authorizations, tmp_path)

    assert sniff_format(exported.path) == stored_format
    assert decoded_csv(exported.path).decode("utf-8") == case["decoded_csv_utf8"]
    assert data_rows(exported.path) == 3
    assert server.mismatches == []
