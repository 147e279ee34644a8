"""The client-side request budget: a sliding window shared across threads."""

from __future__ import annotations

import threading

import pytest
from conftest import FakeClock
from replay import ReplayServer

from connector.extract.budget import RequestBudget


def test_budget_allows_requests_up_to_limit_without_waiting(clock):
    budget = RequestBudget(3, 10.0, sleep=clock.sleep, clock=clock)

    waits = [budget.acquire() for _ in range(3)]

    assert waits == [0.0, 0.0, 0.0]
    assert clock.sleeps == []


def test_budget_waits_until_oldest_request_leaves_window(clock):
    budget = RequestBudget(3, 10.0, sleep=clock.sleep, clock=clock)
    for _ in range(3):
        budget.acquire()
    clock.now += 4.0

    waited = budget.acquire()

    assert waited == pytest.approx(6.0)
    assert clock.sleeps == [pytest.approx(6.0)]


def test_budget_window_slides(clock):
    budget = RequestBudget(2, 10.0, sleep=clock.sleep, clock=clock)
    budget.acquire()
    clock.now += 5.0
    budget.acquire()
    clock.now += 5.0

    assert budget.acquire() == 0.0
    assert budget.acquire() == pytest.approx(5.0)


def test_budget_rejects_invalid_limits():
    with pytest.raises(ValueError, match="max_requests"):
        RequestBudget(0, 10.0)
    with pytest.raises(ValueError, match="period_s"):
        RequestBudget(1, 0.0)


class _ThreadSafeClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            super().sleep(seconds)


def test_budget_shared_by_threads_never_exceeds_limit():
    clock = _ThreadSafeClock()
    budget = RequestBudget(10, 100.0, sleep=clock.sleep, clock=clock)
    acquired_at: list[float] = []
    acquired_lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            budget.acquire()
            with acquired_lock:
                acquired_at.append(clock())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    acquired_at.sort()
    assert len(acquired_at) == 40
    for first, eleventh in zip(acquired_at, acquired_at[10:]):
        assert eleventh - first >= 100.0


def test_client_requests_wait_for_budget(make_client, clock):
    exchanges = [
        {
            "request": {"path": "/views"},
            "response": {"status": 200, "json": [{"name": "authorizations"}]},
        }
    ]
    with ReplayServer(exchanges, repeat_last=True) as server:
        client = make_client(server.base_url, requests_per_5min=2)

        for _ in range(3):
            client.list_views()

    assert len(server.requests) == 3
    assert clock.sleeps == [pytest.approx(300.0)]
