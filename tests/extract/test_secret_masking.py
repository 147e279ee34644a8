"""No credential or export token in any log line or error of a failing run."""

from __future__ import annotations

import base64
import logging
import socket
import traceback
from datetime import date

import pytest
from conftest import ACCESS_TOKEN, APP_TOKEN
from replay import ReplayServer

from connector.errors import DivaError
from connector.extract.export import export_window
from connector.extract.rundir import RunDirectory
from connector.redaction import SecretsFilter
from connector.windows import Window

WINDOW = Window(date(2024, 3, 5), date(2024, 3, 5))
EXPORT_TOKENS = ("3f9c2a7e5b1d4c08", "8d41e0b6a2c97f15")
BASIC = base64.b64encode(f"{APP_TOKEN}:{ACCESS_TOKEN}".encode()).decode()
FORBIDDEN = (APP_TOKEN, ACCESS_TOKEN, BASIC, *EXPORT_TOKENS)
ECHO = (
    f"invalid credentials {APP_TOKEN}:{ACCESS_TOKEN} for token=3f9c2a7e5b1d4c08.csv.gz"
)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured():
    """Collect every log line: the connector's own as emitted, and every
    logger's (urllib3 included) through the filter the command line installs."""
    own, filtered = _Collector(), _Collector()
    filtered.addFilter(SecretsFilter([APP_TOKEN, ACCESS_TOKEN, BASIC]))
    root, connector = logging.getLogger(), logging.getLogger("connector")
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(filtered)
    connector.addHandler(own)
    yield own, filtered
    connector.removeHandler(own)
    root.removeHandler(filtered)
    root.setLevel(old_level)


def _failing_servers():
    export = {"request": {"path": "/views/authorizations/detail/csv"}}
    download = {"request": {"path": "/download"}}
    echo = {"status": 401, "json": {"message": ECHO}}
    cut = {
        "status": 200,
        "body_bytes": b"\x1f\x8b" + b"x" * 5000,
        "close_after_bytes": 100,
    }
    token = {"status": 202, "json": {"token": "3f9c2a7e5b1d4c08.csv.gz"}}
    return {
        "expired-twice": ReplayServer.from_case(
            "26-download-410-expired.json", "410-again-after-re-export"
        ),
        "credentials-echoed": ReplayServer([{**export, "response": echo}]),
        "server-error-echoed": ReplayServer(
            [{**export, "response": {"status": 500, "body_text": ECHO}}],
            repeat_last=True,
        ),
        "download-cut": ReplayServer(
            [{**export, "response": token}, {**download, "response": cut}],
            repeat_last=True,
        ),
    }


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/data/v2"


@pytest.mark.parametrize(
    "scenario",
    [
        "expired-twice",
        "credentials-echoed",
        "server-error-echoed",
        "download-cut",
        "refused",
    ],
)
def test_failing_run_reveals_no_secret(
    scenario, captured, make_client, authorizations, tmp_path
):
    own, filtered = captured
    server = _failing_servers().get(scenario)
    base_url = server.base_url if server else _closed_port_url()

    with server or ReplayServer([]), pytest.raises(DivaError) as caught:
        client = make_client(base_url, retry_max_attempts=2)
        export_window(
            client,
            authorizations,
            WINDOW,
            RunDirectory.open(tmp_path, "k"),
            compress="gz",
            max_count=None,
            poll_interval_s=1.0,
            poll_max_interval_s=2.0,
            poll_timeout_s=60.0,
            max_reexports=1,
        )

    error_text = "".join(traceback.format_exception(caught.value))
    assert own.lines, "the failing run logged nothing"
    for secret in FORBIDDEN:
        assert secret not in error_text, f"{secret} in the error"
        for line in own.lines:
            assert secret not in line, f"{secret} in connector log line {line!r}"
        for line in filtered.lines:
            assert secret not in line, f"{secret} in filtered log line {line!r}"


def test_urllib3_lines_masked_only_by_filter(
    captured, make_client, authorizations, tmp_path
):
    _, filtered = captured
    server = ReplayServer.from_case(
        "26-download-410-expired.json", "410-then-export-again"
    )

    with server:
        export_window(
            make_client(server.base_url),
            authorizations,
            WINDOW,
            RunDirectory.open(tmp_path, "k"),
            compress="gz",
            max_count=None,
            poll_interval_s=1.0,
            poll_max_interval_s=2.0,
            poll_timeout_s=60.0,
            max_reexports=1,
        )

    download_lines = [line for line in filtered.lines if "/download?" in line]
    assert any("token=3f9c2a….csv.gz" in line for line in download_lines)
    assert not any(token in line for token in EXPORT_TOKENS for line in filtered.lines)
