"""Each fault switch of the sandbox, observed over HTTP."""

from __future__ import annotations

import gzip
import http.client
import io
import time
import zipfile
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import pytest
import requests

from connector.sandbox import Sandbox

from .conftest import ACCESS_TOKEN, APP_TOKEN, PROGRAM, TODAY, Client, read_rows

DETAIL = "/views/authorizations/detail"


def ready_token(client: Client, **params: object) -> str:
    """Return the token of an export that the next poll delivers."""
    token = client.export(**params)
    assert client.download(token).status_code == 202
    return token


def raw_download(
    sandbox: Sandbox, token: str
) -> tuple[http.client.HTTPResponse, bytes]:
    """Download with http.client, returning the response and the bytes that arrived."""
    url = urlsplit(sandbox.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    credentials = requests.auth._basic_auth_str(APP_TOKEN, ACCESS_TOKEN)
    connection.request(
        "GET",
        f"{url.path}/download?token={token}",
        headers={"Authorization": credentials},
    )
    response = connection.getresponse()
    try:
        body = response.read()
    except http.client.IncompleteRead as err:
        body = err.partial
    connection.close()
    return response, body


def test_pending_polls_can_change_while_running(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.faults.pending_polls = 2
    token = client.export()

    statuses = [client.download(token).status_code for _ in range(3)]

    assert statuses == [202, 202, 200]


@pytest.mark.parametrize("route", ["export", "download", "json", "schema", "any"])
def test_throttle_hits_only_its_route(
    client: Client, sandbox: Sandbox, route: str
) -> None:
    token = ready_token(client)
    sandbox.faults.throttle(times=1, route=route)
    calls = {
        "json": lambda: client.get(DETAIL, transaction_timestamp="2024-03-01"),
        "schema": lambda: client.get(f"{DETAIL}/schema"),
        "export": lambda: client.get(
            f"{DETAIL}/csv", transaction_timestamp="2024-03-01"
        ),
        "download": lambda: client.download(token),
    }

    statuses = {name: call().status_code for name, call in calls.items()}

    throttled = {name for name, status in statuses.items() if status == 429}
    assert len(throttled) == 1
    if route != "any":
        assert throttled == {route}


def test_throttle_retry_after_seconds(client: Client, sandbox: Sandbox) -> None:
    sandbox.faults.throttle(times=2, route="json", retry_after="seconds", delay_s=3)

    schema = client.get(f"{DETAIL}/schema")
    responses = [client.get(DETAIL) for _ in range(3)]

    assert schema.status_code == 200
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["Retry-After"] == "3"
    assert responses[0].json()["error_code"] == "429001"


def test_throttle_retry_after_http_date(client: Client, sandbox: Sandbox) -> None:
    sandbox.faults.throttle(retry_after="http-date", delay_s=120)

    response = client.get(DETAIL)

    assert response.status_code == 429
    moment = parsedate_to_datetime(response.headers["Retry-After"])
    assert 100 < moment.timestamp() - time.time() < 140


def test_throttle_without_retry_after(client: Client, sandbox: Sandbox) -> None:
    sandbox.faults.throttle(retry_after=None)

    response = client.get(DETAIL)

    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_throttle_forever_until_cleared(client: Client, sandbox: Sandbox) -> None:
    sandbox.faults.throttle(times=None, route="export")

    throttled = [client.get(f"{DETAIL}/csv").status_code for _ in range(3)]
    sandbox.faults.clear()

    assert throttled == [429, 429, 429]
    assert client.get(f"{DETAIL}/csv").status_code == 202


def test_server_error_burst_in_order(client: Client, sandbox: Sandbox) -> None:
    sandbox.faults.fail(500, 502, 503, route="json")

    statuses = [client.get(DETAIL).status_code for _ in range(4)]

    assert statuses == [500, 502, 503, 200]


def test_dropped_download_stops_short_of_content_length(
    client: Client, sandbox: Sandbox
) -> None:
    token = ready_token(client)
    sandbox.faults.drop_download(after_bytes=100)

    response, body = raw_download(sandbox, token)
    retry = client.download(token)

    assert response.status == 200
    assert int(response.getheader("Content-Length")) == len(retry.content)
    assert len(body) == 100
    assert retry.status_code == 200
    assert retry.content[:100] == body


def test_dropped_download_raises_in_requests(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)
    sandbox.faults.drop_download(after_bytes=50)

    with pytest.raises(requests.exceptions.RequestException):
        client.download(token)


def test_chunked_download_cut_mid_chunk(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)
    sandbox.faults.chunk_size = 256
    sandbox.faults.cut_chunked(after_bytes=600)

    response, body = raw_download(sandbox, token)

    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Length") is None
    assert 512 <= len(body) < 600


def test_truncated_gzip_has_consistent_length(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)
    sandbox.faults.truncate_gzip()

    response = client.download(token)

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(EOFError):
        gzip.decompress(response.content)


def test_corrupt_gzip_fails_crc_check(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)
    sandbox.faults.corrupt_gzip()

    broken = client.download(token).content
    healthy = client.download(token).content

    with pytest.raises(gzip.BadGzipFile, match="CRC"):
        gzip.decompress(broken)
    assert read_rows(healthy, token)


def test_corrupt_zip_fails_crc_check(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client, compress="zip")
    sandbox.faults.corrupt_zip()

    content = client.download(token).content

    archive = zipfile.ZipFile(io.BytesIO(content))
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        archive.read(archive.namelist()[0])


def test_first_download_expires_then_new_export_works(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.faults.expire_first_download()
    token = ready_token(client)

    first = client.download(token)
    again = client.download(token)
    fresh = client.fetch(client.export())

    assert first.status_code == 410
    assert again.status_code == 410
    assert fresh.status_code == 200


def test_row_cap_can_change_while_running(client: Client, sandbox: Sandbox) -> None:
    sandbox.faults.row_cap = 5
    token = client.export()

    assert len(read_rows(client.fetch(token).content, token)) == 5


def test_slow_download_sleeps_between_chunks(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)
    sandbox.faults.chunk_size = 1024
    sandbox.faults.chunk_delay_s = 0.05

    started = time.monotonic()
    response = client.download(token)
    elapsed_s = time.monotonic() - started

    chunks = -(-len(response.content) // 1024)
    assert chunks >= 3
    assert elapsed_s >= 0.05 * (chunks - 1) * 0.9


def test_content_encoding_gzip_label(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)
    sandbox.faults.content_encoding_gzip = True

    response = client.session.get(
        f"{sandbox.base_url}/download", params={"token": token}, stream=True, timeout=5
    )
    raw = response.raw.read(decode_content=False)

    assert response.headers["Content-Encoding"] == "gzip"
    assert raw.startswith(b"\x1f\x8b")
    assert read_rows(raw, token)


def test_content_type_text_csv_without_charset(
    client: Client, sandbox: Sandbox
) -> None:
    token = ready_token(client)
    sandbox.faults.content_type_text_csv = True

    response = client.download(token)

    assert response.headers["Content-Type"] == "text/csv"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=10-", 10, None), ("bytes=0-99", 0, 100), ("bytes=-20", -20, None)],
)
def test_range_request_returns_206(
    client: Client, sandbox: Sandbox, header: str, start: int, end: int | None
) -> None:
    token = ready_token(client)
    whole = client.download(token).content

    part = client.download(token, headers={"Range": header})

    assert part.status_code == 206
    assert part.content == whole[start:end]
    first = start % len(whole)
    last = (end or len(whole)) - 1
    assert part.headers["Content-Range"] == f"bytes {first}-{last}/{len(whole)}"


def test_range_beyond_end_is_416(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)

    response = client.download(token, headers={"Range": "bytes=999999-"})

    assert response.status_code == 416
    assert response.headers["Content-Range"].startswith("bytes */")


def test_ignore_range_sends_whole_file(client: Client, sandbox: Sandbox) -> None:
    token = ready_token(client)
    sandbox.faults.ignore_range = True

    response = client.download(token, headers={"Range": "bytes=10-"})

    assert response.status_code == 200
    assert response.headers["Accept-Ranges"] == "none"
    assert read_rows(response.content, token)


def test_faults_option_configures_at_start() -> None:
    options = {"throttle": {"times": 2, "route": "json"}, "pending_polls": 0}
    with Sandbox(
        app_token=APP_TOKEN,
        access_token=ACCESS_TOKEN,
        program=PROGRAM,
        today=TODAY,
        faults=options,
    ) as sandbox:
        client = Client(sandbox)
        statuses = [client.get(DETAIL).status_code for _ in range(3)]
        token = client.export()
        first_poll = client.download(token).status_code

    assert statuses == [429, 429, 200]
    assert first_poll == 200


def test_faults_option_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="drop_everything"):
        Sandbox(faults={"drop_everything": True})
