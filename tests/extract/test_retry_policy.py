"""The retry policy over real HTTP: what is retried, how long it waits, and
what is raised at once."""

from __future__ import annotations

import base64
import socket
from datetime import date

import pytest
from conftest import ACCESS_TOKEN, APP_TOKEN
from replay import ReplayServer

from connector.errors import AuthError, PermanentApiError, TransientApiError
from connector.extract.retry import RetryPolicy
from connector.windows import Window

WINDOW = Window(date(2024, 3, 5), date(2024, 3, 6))
VIEWS_OK = {"status": 200, "json": [{"name": "authorizations"}]}


def responding(*responses: dict) -> list[dict]:
    """Return exchanges that respond to GET /views with `responses` in order."""
    return [{"request": {"path": "/views"}, "response": r} for r in responses]


def error(status: int, message: str = "failed", code: str | None = None) -> dict:
    body = {"message": message}
    if code:
        body["error_code"] = code
    return {"status": status, "json": body}


def test_server_errors_retried_with_growing_backoff(make_client, clock):
    exchanges = responding(error(503), error(502), error(500), VIEWS_OK)
    with ReplayServer(exchanges) as server:
        views = make_client(server.base_url).list_views()

    assert views == [{"name": "authorizations"}]
    assert len(server.requests) == 4
    assert len(clock.sleeps) == 3
    for number, wait in enumerate(clock.sleeps):
        assert 2**number <= wait <= 2**number + 1


def test_server_error_retries_bounded_by_attempts(make_client, clock):
    with ReplayServer(
        responding(error(500, "database down")), repeat_last=True
    ) as server:
        client = make_client(server.base_url, retry_max_attempts=3)
        with pytest.raises(TransientApiError) as caught:
            client.list_views()

    message = str(caught.value)
    assert "3 attempts" in message
    assert "500" in message
    assert "database down" in message
    assert caught.value.status == 500
    assert len(server.requests) == 3
    assert len(clock.sleeps) == 2


def test_retries_bounded_by_total_time(make_client, clock):
    with ReplayServer(responding(error(503)), repeat_last=True) as server:
        client = make_client(
            server.base_url, retry_max_attempts=20, retry_total_timeout_s=10.0
        )
        with pytest.raises(TransientApiError, match="attempts"):
            client.list_views()

    assert sum(clock.sleeps) <= 10.0
    assert len(server.requests) < 20


def test_backoff_capped_at_max_wait():
    policy = RetryPolicy(max_wait_s=5.0, jitter_s=1.0)

    waits = [policy.next_wait(RuntimeError(), number) for number in range(1, 10)]

    assert max(waits) <= 5.0
    assert waits[-1] == 5.0


def test_retry_after_on_503_honoured(make_client, clock):
    busy = {**error(503), "headers": {"Retry-After": "7"}}
    with ReplayServer(responding(busy, VIEWS_OK)) as server:
        make_client(server.base_url).list_views()

    assert clock.sleeps == [7.0]


def test_connection_refused_retried_then_raised(make_client, clock):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}/data/v2", retry_max_attempts=3)

    with pytest.raises(TransientApiError) as caught:
        client.list_views()

    assert "3 attempts" in str(caught.value)
    assert f"cannot connect to 127.0.0.1:{port}" in str(caught.value)
    assert "DIVA_BASE_URL" in str(caught.value)
    assert "retry_max_attempts" not in str(caught.value)
    assert caught.value.status is None
    assert len(clock.sleeps) == 2


def test_read_timeout_retried(make_client, clock):
    slow = {**VIEWS_OK, "delay_s": 1.0}
    with ReplayServer(responding(slow, VIEWS_OK)) as server:
        client = make_client(server.base_url, request_timeout_s=0.2)
        views = client.list_views()

    assert views == [{"name": "authorizations"}]
    assert len(server.requests) == 2
    assert len(clock.sleeps) == 1


def test_bad_request_raised_at_once_with_diva_message(
    make_client, authorizations, clock
):
    rejected = error(400, "view authorizations does not have a column with the name x")
    with ReplayServer(responding(rejected)) as server:
        server.exchanges[0]["request"]["path"] = "/views/authorizations/detail/csv"
        with pytest.raises(PermanentApiError) as caught:
            make_client(server.base_url).request_export(authorizations, WINDOW)

    message = str(caught.value)
    assert "400" in message
    assert "does not have a column with the name x" in message
    assert "authorizations/detail" in message
    assert caught.value.status == 400
    assert caught.value.dataset == "authorizations/detail"
    assert clock.sleeps == []
    assert len(server.requests) == 1


def test_long_error_body_truncated(make_client):
    body = {"status": 400, "body_text": "x" * 5000}
    with ReplayServer(responding(body)) as server:
        with pytest.raises(PermanentApiError) as caught:
            make_client(server.base_url).list_views()

    assert len(str(caught.value)) < 600
    assert "x" * 300 + "…" in str(caught.value)


def test_not_found_names_dataset(make_client):
    exchanges = [
        {
            "request": {"path": "/views/authorizations/hour/schema"},
            "response": error(404, "no such view"),
        }
    ]
    with ReplayServer(exchanges) as server:
        with pytest.raises(PermanentApiError) as caught:
            make_client(server.base_url).fetch_schema("authorizations/hour")

    assert "authorizations/hour" in str(caught.value)
    assert "404" in str(caught.value)
    assert caught.value.dataset == "authorizations/hour"
    assert len(server.requests) == 1


def test_unauthorized_is_config_error(make_client, clock):
    with ReplayServer(responding(error(401, "bad credentials"))) as server:
        with pytest.raises(AuthError) as caught:
            make_client(server.base_url).list_views()

    assert "DIVA_APP_TOKEN" in str(caught.value)
    assert caught.value.exit_code == 2
    assert clock.sleeps == []
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        ("403001", "field is not permitted"),
        ("403002", "filter is not permitted"),
        ("403003", "program is forbidden"),
    ],
)
def test_forbidden_explains_sub_code(code, meaning, make_client, clock):
    with ReplayServer(responding(error(403, "forbidden", code))) as server:
        with pytest.raises(AuthError) as caught:
            make_client(server.base_url).list_views()

    assert meaning in str(caught.value)
    assert code in str(caught.value)
    assert caught.value.code == code
    assert caught.value.status == 403
    assert clock.sleeps == []
    assert len(server.requests) == 1


def test_requests_carry_auth_and_program(make_client):
    with ReplayServer(responding(VIEWS_OK)) as server:
        make_client(server.base_url).list_views()

    request = server.requests[0]
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert request.query["program"] == "demo_program"
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{APP_TOKEN}:{ACCESS_TOKEN}"
