"""Fixtures for the sandbox tests: a running sandbox and a small HTTP client.

These tests talk to the sandbox over HTTP with `requests` only, and decode
its files with gzip, zipfile and csv, so that they never rely on the
connector's own client or parser.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from collections.abc import Iterator
from datetime import date

import pytest
import requests

from connector.sandbox import Sandbox

APP_TOKEN = "app"
ACCESS_TOKEN = "secret"
PROGRAM = "demo"
TODAY = date(2024, 4, 1)
MARCH_WINDOW = "2024-03-01..2024-03-03"


class Client:
    """A thin `requests` wrapper that sends the sandbox's credentials."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.session = requests.Session()
        self.session.auth = (APP_TOKEN, ACCESS_TOKEN)

    def get(self, path: str, **params: object) -> requests.Response:
        """Send a GET to `path` below the base URL, adding the program."""
        params.setdefault("program", PROGRAM)
        return self.session.get(
            f"{self.sandbox.base_url}{path}", params=params, timeout=10
        )

    def export(self, view: str = "authorizations/detail", **params: object) -> str:
        """Request an export and return its token."""
        params.setdefault("transaction_timestamp", MARCH_WINDOW)
        response = self.get(f"/views/{view}/csv", **params)
        assert response.status_code == 202, response.text
        return response.json()["token"]

    def download(self, token: str, **kwargs: object) -> requests.Response:
        """Poll the download endpoint once."""
        return self.session.get(
            f"{self.sandbox.base_url}/download",
            params={"token": token},
            timeout=10,
            **kwargs,
        )

    def fetch(self, token: str, polls: int = 5) -> requests.Response:
        """Poll until the file is no longer `Pending` and return that response."""
        for _ in range(polls):
            response = self.download(token)
            if response.status_code != 202:
                return response
        raise AssertionError(f"Export {token} still pending after {polls} polls")


def read_rows(content: bytes, token: str) -> list[dict[str, str | None]]:
    """Decompress an export file and return its rows, empty cells as None."""
    if token.endswith(".csv.zip"):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            (member,) = archive.namelist()
            text = archive.read(member).decode("utf-8")
    else:
        text = gzip.decompress(content).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return [{name: value or None for name, value in row.items()} for row in reader]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A small sandbox whose data ends before 2024-04-01."""
    with Sandbox(
        seed=7,
        rows_per_day=20,
        app_token=APP_TOKEN,
        access_token=ACCESS_TOKEN,
        program=PROGRAM,
        pending_polls=1,
        today=TODAY,
    ) as running:
        yield running


@pytest.fixture
def client(sandbox: Sandbox) -> Client:
    """A client for the `sandbox` fixture."""
    return Client(sandbox)
