"""Messages of the retry policy when no response arrives at all."""

from __future__ import annotations

import socket

import pytest

from connector.errors import TransientApiError
from connector.extract.client import DivaClient
from connector.settings import load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection_names_host_and_setting():
    port = free_port()
    settings = load_settings(
        None, base_url=f"http://127.0.0.1:{port}/data/v2", app_token="a",
        access_token="b", program="p", retry_max_attempts=2,
    )
    client = DivaClient(settings, sleep=lambda seconds: None)

    with pytest.raises(TransientApiError) as caught:
        client.list_views()

    message = str(caught.value)
    assert f"cannot connect to 127.0.0.1:{port}" in message
    assert "Connection refused" in message
    assert "DIVA_BASE_URL" in message
