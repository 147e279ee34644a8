"""Shared helpers of the extract tests: a fake clock and client factories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connector.datasets import Dataset, load_dataset
from connector.extract.client import DivaClient
from connector.settings import Settings, load_settings

APP_TOKEN = "app-7f3e91c2d4"
ACCESS_TOKEN = "secret-b2c4d8e6f0a1"
PROGRAM = "demo_program"


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps.

    Pass the instance as `clock` and its `sleep` method as `sleep`: every
    wait is recorded in `sleeps` and advances the time at once.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(base_url: str, **overrides: Any) -> Settings:
    """Build settings for a loopback server, with short retry waits."""
    values: dict[str, Any] = {
        "base_url": base_url,
        "app_token": APP_TOKEN,
        "access_token": ACCESS_TOKEN,
        "program": PROGRAM,
        "retry_max_attempts": 4,
        "request_timeout_s": 5.0,
    }
    values.update(overrides)
    return load_settings(None, **values)


@pytest.fixture
def make_client(clock: FakeClock) -> Callable[..., DivaClient]:
    """Return a factory of clients bound to the fake clock; closes them after."""
    clients: list[DivaClient] = []

    def factory(base_url: str, **overrides: Any) -> DivaClient:
        client = DivaClient(
            make_settings(base_url, **overrides), sleep=clock.sleep, clock=clock
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def authorizations() -> Dataset:
    return load_dataset("authorizations/detail")
