"""A client-side request budget, so a run stays under DiVA's rate limit.

DiVA allows 300 requests per 5 minutes per credential and returns 429 beyond
that; polls and downloads are counted too, as far as is known. Waiting on
our side before DiVA refuses is cheaper than a 429 and a backoff, and it
keeps parallel backfill threads from starving each other with retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class RequestBudget:
    """A sliding-window limit of `max_requests` per `period_s` seconds.

    One budget is shared by every request of a run, across threads.
    `acquire` takes a slot, waiting first when the last `period_s` seconds
    already hold `max_requests` requests.
    """

    def __init__(
        self,
        max_requests: int = 300,
        period_s: float = 300.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, got {max_requests}.")
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}.")
        self.max_requests = max_requests
        self.period_s = period_s
        self._sleep = sleep
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one request slot, waiting until one is free.

        Returns:
            The seconds spent waiting, 0.0 when a slot was free.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._forget_before(now - self.period_s)
                if len(self._sent) < self.max_requests:
                    self._sent.append(now)
                    return waited
                wait = self._sent[0] + self.period_s - now

            log.info(
                "Request budget of %d per %g s used up; waiting %.1f s.",
                self.max_requests,
                self.period_s,
                wait,
            )
            # The lock is released while sleeping, so other threads can see
            # the budget; each one re-checks it after its own wait.
            self._sleep(wait)
            waited += wait

    def _forget_before(self, cutoff: float) -> None:
        while self._sent and self._sent[0] <= cutoff:
            self._sent.popleft()
