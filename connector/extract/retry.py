"""The one retry policy for every request to DiVA.

Retried: 429 (after `Retry-After` when DiVA sends it), 5xx, connection
errors, timeouts, bodies cut short, and downloads that fail their integrity
check. Everything else (400, 401, 403, 404) is raised at once, because
sending the same request again cannot change DiVA's response. Retries are
bounded twice: by a number of attempts and by the total time spent.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import requests

from connector.errors import DivaError, DownloadError, TransientApiError
from connector.extract.responses import RetryableResponseError, describe_subject
from connector.redaction import mask_text, scrub_exception

if TYPE_CHECKING:
    from connector.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors worth another attempt. Anything else propagates at once.
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    RetryableResponseError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    DownloadError,
)


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter, bounded in attempts and total time.

    The wait before attempt n+1 is `first_wait_s * 2**(n-1)` plus up to
    `jitter_s` of random jitter, capped at `max_wait_s`. When DiVA names a
    wait in `Retry-After`, that wait is honoured as given. A `Retry-After`
    longer than `max_wait_s` ends the call at once instead of sleeping.

    Attributes:
        max_attempts: Attempts per call, the first one included.
        max_wait_s: Maximum single wait between attempts, in seconds.
        total_timeout_s: Longest time one call may take, waits included.
        first_wait_s: Wait after the first failure, before jitter.
        jitter_s: Largest random addition to a computed wait.
        sleep: Waits the given seconds; tests pass a fake that only records.
        clock: Returns monotonic seconds; tests pass a fake clock.
        secrets: Values to mask in messages and chained exceptions.
        rng: Source of the jitter; tests seed it.
    """

    max_attempts: int = 6
    max_wait_s: float = 60.0
    total_timeout_s: float = 600.0
    first_wait_s: float = 1.0
    jitter_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    secrets: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        secrets: Iterable[str] = (),
    ) -> RetryPolicy:
        """Build the policy from the `retry_*` settings."""
        return cls(
            max_attempts=settings.retry_max_attempts,
            max_wait_s=settings.retry_max_wait_s,
            total_timeout_s=settings.retry_total_timeout_s,
            sleep=sleep,
            clock=clock,
            secrets=list(secrets),
        )

    def call(
        self, attempt: Callable[[], T], *, action: str, dataset: str | None = None
    ) -> T:
        """Run `attempt` until it succeeds or the policy gives up.

        Args:
            attempt: Makes one try. It raises one of `RETRYABLE_ERRORS` to
                request another.
            action: What is being done, for messages (`Export request`).
            dataset: The `view/aggregation` concerned, when there is one.

        Raises:
            TransientApiError: The retries ran out, or DiVA requested a wait
                longer than `max_wait_s`.
            DownloadError: A download stayed incomplete or corrupt through
                every attempt.
        """
        started = self.clock()
        for number in itertools.count(1):
            try:
                return attempt()
            except RETRYABLE_ERRORS as err:
                scrub_exception(err, self.secrets)
                self._check_retry_after(err, action, dataset)
                wait = self.next_wait(err, number)
                elapsed = self.clock() - started
                if number >= self.max_attempts or elapsed + wait > self.total_timeout_s:
                    raise self._give_up(err, number, elapsed, action, dataset) from err

                log.warning(
                    "%s failed (%s); retrying in %.1f s (attempt %d of %d).",
                    describe_subject(action, dataset),
                    self._describe(err),
                    wait,
                    number + 1,
                    self.max_attempts,
                )
                self.sleep(wait)
        raise AssertionError("unreachable")

    def next_wait(self, err: Exception, number: int) -> float:
        """Return the seconds to wait after failed attempt `number` (from 1)."""
        retry_after = getattr(err, "retry_after_s", None)
        if retry_after is not None:
            return retry_after

        backoff = self.first_wait_s * 2 ** (number - 1)
        return min(self.max_wait_s, backoff + self.jitter_s * self.rng.random())

    def _check_retry_after(
        self, err: Exception, action: str, dataset: str | None
    ) -> None:
        retry_after = getattr(err, "retry_after_s", None)
        if retry_after is None or retry_after <= self.max_wait_s:
            return
        raise TransientApiError(
            f"{describe_subject(action, dataset)} failed: DiVA returned "
            f"{err.status} and requested a wait of {retry_after:.0f} s before "
            f"retrying, longer than retry_max_wait_s={self.max_wait_s:g}. Try "
            "again later, or raise retry_max_wait_s to wait that long.",
            status=err.status,
            dataset=dataset,
            code=getattr(err, "code", None),
            retry_after_s=retry_after,
        ) from err

    def _give_up(
        self,
        err: Exception,
        attempts: int,
        elapsed: float,
        action: str,
        dataset: str | None,
    ) -> DivaError:
        summary = f"Gave up after {attempts} attempts in {elapsed:.0f} s."
        log.error(
            "%s failed: %s %s",
            describe_subject(action, dataset),
            self._describe(err),
            summary,
        )
        if isinstance(err, DownloadError):
            context = {k: v for k, v in vars(err).items() if k != "message"}
            return DownloadError(
                f"{describe_subject(action, dataset)} failed after {attempts} "
                f"attempts in {elapsed:.0f} s. Last error: {err.message} Try again "
                "later, or raise retry_max_attempts.",
                **context,
            )

        unreachable = isinstance(err, requests.ConnectionError) and (
            _describe_connection_error(str(err)) is not None
        )
        if unreachable:
            # More retries cannot fix a wrong address, so the URL comes first.
            advice = (
                "Check that DIVA_BASE_URL (base_url) is right and that this machine "
                "can reach it, then try again."
            )
        else:
            advice = (
                "DiVA may be overloaded or unreachable; try again later, or raise "
                "retry_max_attempts or retry_total_timeout_s."
            )
        return TransientApiError(
            f"{describe_subject(action, dataset)} failed after {attempts} attempts "
            f"in {elapsed:.0f} s: {self._describe(err)}. {advice}",
            status=getattr(err, "status", None),
            dataset=dataset,
            code=getattr(err, "code", None),
            attempts=attempts,
        )

    def _describe(self, err: Exception) -> str:
        if isinstance(err, RetryableResponseError):
            return f"DiVA returned {err.status}: {str(err.detail).rstrip('.')}"
        if isinstance(err, DivaError):
            return err.message
        if isinstance(err, requests.ConnectionError):
            described = _describe_connection_error(str(err))
            if described:
                return described
        text = mask_text(str(err), self.secrets)
        if len(text) > 200:
            text = text[:200] + "…"
        return f"{type(err).__name__}: {text}"


_POOL_HOST = re.compile(r"host='([^']+)', port=(\d+)")
_OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _describe_connection_error(text: str) -> str | None:
    """Name the host, port and socket error of a failed connection, if found.

    urllib3 wraps the socket error several levels deep, so the useful part
    (`[Errno 111] Connection refused`) sits at the end of a long message.
    """
    host = _POOL_HOST.search(text)
    reason = _OS_ERROR.search(text)
    if host is None or reason is None:
        return None
    return f"cannot connect to {host.group(1)}:{host.group(2)} ({reason.group(1)})"
