"""Downloads: resuming with Range, starting over, and re-downloading corrupt files."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
from replay import ReplayServer

from connector.errors import DownloadError
from connector.extract.export import window_filename

TOKEN = "a1b2c3d4e5f60718.csv.gz"
BODY = gzip.compress(
    b"token,amount\n" + b"".join(b"t%d,%d.25\n" % (n, n) for n in range(500))
)


def download(status: int = 200, **response) -> dict:
    return {
        "request": {"path": "/download", "query": {"token": TOKEN}},
        "response": {"status": status, "body_bytes": BODY, **response},
    }


def fetch(make_client, server: ReplayServer, dest: Path, **settings) -> Path:
    client = make_client(server.base_url, **settings)
    return client.download_export(TOKEN, dest, filename="export.csv.gz")


def test_range_resume_appends_on_matching_206(make_client, tmp_path):
    exchanges = [
        download(close_after_bytes=500, headers={"Accept-Ranges": "bytes"}),
        download(honour_range=True),
    ]
    with ReplayServer(exchanges) as server:
        path = fetch(make_client, server, tmp_path)

    assert path.read_bytes() == BODY
    assert server.requests[1].headers.get("range") == "bytes=500-"
    assert server.mismatches == []


def test_mismatched_content_range_starts_over(make_client, tmp_path):
    wrong_range = {
        "Content-Range": f"bytes 0-{len(BODY) - 1}/{len(BODY)}",
        "Content-Length": str(len(BODY)),
    }
    exchanges = [
        download(close_after_bytes=500),
        download(206, headers=wrong_range),
        download(),
    ]
    with ReplayServer(exchanges) as server:
        path = fetch(make_client, server, tmp_path)

    assert path.read_bytes() == BODY
    assert server.requests[1].headers.get("range") == "bytes=500-"
    assert "range" not in server.requests[2].headers
    assert server.unserved == 0


def test_decoded_body_not_resumed_with_range(make_client, tmp_path):
    encoded = gzip.compress(BODY)
    exchanges = [
        download(
            body_bytes=encoded,
            headers={"Content-Encoding": "gzip"},
            close_after_bytes=len(encoded) // 2,
        ),
        download(body_bytes=encoded, headers={"Content-Encoding": "gzip"}),
    ]
    with ReplayServer(exchanges) as server:
        path = fetch(make_client, server, tmp_path)

    assert path.read_bytes() == BODY
    assert "range" not in server.requests[1].headers


def test_corrupt_file_downloaded_again(make_client, tmp_path, clock):
    truncated = BODY[: len(BODY) - 20]
    exchanges = [download(body_bytes=truncated), download()]
    with ReplayServer(exchanges) as server:
        path = fetch(make_client, server, tmp_path)

    assert path.read_bytes() == BODY
    assert len(server.requests) == 2
    assert len(clock.sleeps) == 1


def test_always_corrupt_file_raises_and_leaves_nothing(make_client, tmp_path):
    truncated = BODY[: len(BODY) - 20]
    exchanges = [download(body_bytes=truncated)]
    with ReplayServer(exchanges, repeat_last=True) as server:
        with pytest.raises(DownloadError) as caught:
            fetch(make_client, server, tmp_path, retry_max_attempts=3)

    message = str(caught.value)
    assert "truncated or corrupt gzip" in message
    assert "3 attempts" in message
    assert len(server.requests) == 3
    assert list(tmp_path.iterdir()) == []


def test_always_interrupted_download_raises_and_leaves_nothing(make_client, tmp_path):
    exchanges = [download(close_after_bytes=100)]
    with ReplayServer(exchanges, repeat_last=True) as server:
        with pytest.raises(DownloadError) as caught:
            fetch(make_client, server, tmp_path, retry_max_attempts=2)

    assert "2 attempts" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_ready_poll_response_reused_for_download(make_client, tmp_path):
    exchanges = [
        download(202, body_bytes=b"Pending"),
        download(),
    ]
    with ReplayServer(exchanges) as server:
        client = make_client(server.base_url)
        ready = [client.poll_export(TOKEN), client.poll_export(TOKEN)]
        path = client.download_export(TOKEN, tmp_path)

    assert ready == [False, True]
    assert len(server.requests) == 2
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(BODY).digest()
    assert TOKEN.split(".")[0] not in path.name
    assert path.name.endswith(".csv.gz")


def test_window_filename_is_portable(authorizations):
    from datetime import datetime

    from connector.windows import Window

    window = Window(datetime(2024, 3, 5, 13), datetime(2024, 3, 5, 13, 59, 59))

    name = window_filename(authorizations, window, TOKEN)

    assert name == "authorizations-detail_2024-03-05T130000..2024-03-05T135959.csv.gz"


def test_unsatisfiable_range_starts_over(make_client, tmp_path):
    exchanges = [
        download(close_after_bytes=500),
        download(416, body_bytes=b'{"message": "range outside the file"}'),
        download(),
    ]
    with ReplayServer(exchanges) as server:
        path = fetch(make_client, server, tmp_path)

    assert path.read_bytes() == BODY
    assert server.requests[1].headers.get("range") == "bytes=500-"
    assert "range" not in server.requests[2].headers


def test_download_requests_identity_encoding(make_client, tmp_path):
    with ReplayServer([download(202, body_bytes=b"Pending"), download()]) as server:
        client = make_client(server.base_url)
        client.poll_export(TOKEN)
        client.poll_export(TOKEN)
        client.download_export(TOKEN, tmp_path)

    encodings = [r.headers.get("accept-encoding") for r in server.requests]
    assert encodings == ["identity", "identity"]
