"""Fault switches that tests flip on a running sandbox.

Two kinds of switch exist. Settings (plain attributes such as `row_cap` or
`chunk_delay_s`) hold until changed. Armed faults, added by methods such as
`throttle` or `drop_download`, hit the next matching requests and are then
used up, so that a client's retry meets a healthy server. With `times=None` a
fault stays armed for every request.

Routes that armed faults can target: `views`, `json`, `schema`, `export`,
`download`, or `any`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

ROUTES = ("views", "json", "schema", "export", "download", "any")
RETRY_AFTER_STYLES = ("seconds", "http-date", None)


@dataclass
class ArmedFault:
    """One fault waiting for its next matching requests."""

    kind: str
    route: str
    remaining: int | None
    params: dict[str, Any] = field(default_factory=dict)


class Faults:
    """The sandbox's fault switches, safe to change while it serves.

    Attributes:
        pending_polls: Download polls that return `Pending` before a file is
            ready, counted per export.
        pending_s: Seconds an export stays `Pending`, besides the polls.
        row_cap: Maximum rows of an export, whatever its `max_count`;
            None keeps DiVA's limits only.
        chunk_size: Bytes per write of a download body.
        chunk_delay_s: Seconds slept between two chunks of a download.
        ignore_range: Answer `Range` requests with the whole file (200).
        content_encoding_gzip: Label gzip downloads `Content-Encoding: gzip`.
        content_type_text_csv: Send downloads as `text/csv` without charset.
    """

    def __init__(self, pending_polls: int = 1, row_cap: int | None = None) -> None:
        self.pending_polls = pending_polls
        self.pending_s = 0.0
        self.row_cap = row_cap
        self.chunk_size = 64 * 1024
        self.chunk_delay_s = 0.0
        self.ignore_range = False
        self.content_encoding_gzip = False
        self.content_type_text_csv = False
        self._armed: list[ArmedFault] = []
        self._lock = Lock()

    def throttle(
        self,
        times: int | None = 1,
        route: str = "any",
        retry_after: str | None = "seconds",
        delay_s: float = 1.0,
    ) -> None:
        """Throttle the next `times` requests of `route` with 429.

        Args:
            times: Requests to throttle; None throttles every request.
            route: The route to throttle.
            retry_after: `seconds` sends `Retry-After: <delay_s>`, `http-date`
                sends the moment `delay_s` ahead as an HTTP date, None sends
                no `Retry-After` at all.
            delay_s: The pause that `Retry-After` requests, in seconds.
        """
        if retry_after not in RETRY_AFTER_STYLES:
            raise ValueError(
                f"Invalid retry_after {retry_after!r}: expected one of {RETRY_AFTER_STYLES}."
            )
        self._arm("throttle", route, times, retry_after=retry_after, delay_s=delay_s)

    def fail(self, *statuses: int, route: str = "any") -> None:
        """Fail the next requests of `route` with these 5xx statuses, in order."""
        for status in statuses or (500,):
            if not 500 <= status <= 599:
                raise ValueError(
                    f"Invalid server error status {status}: expected 500..599."
                )
            self._arm("fail", route, 1, status=status)

    def drop_download(self, after_bytes: int, times: int | None = 1) -> None:
        """Close the connection after `after_bytes` bytes of the next downloads.

        The response still promises the whole file in `Content-Length`.
        """
        self._arm("drop", "download", times, after_bytes=after_bytes)

    def cut_chunked(self, after_bytes: int, times: int | None = 1) -> None:
        """Send the next downloads chunked and close in the middle of a chunk."""
        self._arm("cut_chunked", "download", times, after_bytes=after_bytes)

    def truncate_gzip(self, times: int | None = 1) -> None:
        """Serve the next downloads cut short, with a matching Content-Length."""
        self._arm("truncate", "download", times)

    def corrupt_gzip(self, times: int | None = 1) -> None:
        """Serve the next gzip downloads with a wrong CRC-32 in the trailer."""
        self._arm("corrupt_gzip", "download", times)

    def corrupt_zip(self, times: int | None = 1) -> None:
        """Serve the next zip downloads with a wrong member CRC-32."""
        self._arm("corrupt_zip", "download", times)

    def expire_first_download(self, times: int | None = 1) -> None:
        """Answer 410 when the next `times` exports are first fetched once ready."""
        self._arm("expire", "download", times)

    def take(self, kind: str, route: str) -> dict[str, Any] | None:
        """Use up one armed fault of `kind` for a request of `route`.

        Returns:
            The fault's parameters, or None when no such fault is armed.
        """
        with self._lock:
            for fault in self._armed:
                if fault.kind == kind and fault.route in (route, "any"):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._armed.remove(fault)
                    return dict(fault.params)
        return None

    def clear(self) -> None:
        """Disarm every armed fault; settings keep their values."""
        with self._lock:
            self._armed.clear()

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply settings and arm faults from a mapping, such as a `faults` option.

        A key naming a setting sets it. A key naming an arming method calls
        that method with the value as keyword arguments (a mapping), as
        positional arguments (a list) or with no argument (`True`).

        Raises:
            ValueError: A key names neither a setting nor a fault.
        """
        for name, value in options.items():
            method = getattr(self, name, None) if name in _ARMING_METHODS else None
            if method is not None:
                if isinstance(value, Mapping):
                    method(**value)
                elif isinstance(value, list | tuple):
                    method(*value)
                elif value:
                    method()
            elif name in _SETTINGS:
                setattr(self, name, value)
            else:
                known = ", ".join(sorted(_SETTINGS | _ARMING_METHODS))
                raise ValueError(
                    f"Unknown fault option {name!r}; known options: {known}."
                )

    def _arm(self, kind: str, route: str, times: int | None, **params: Any) -> None:
        if route not in ROUTES:
            raise ValueError(f"Invalid route {route!r}: expected one of {ROUTES}.")
        if times is not None and times < 1:
            raise ValueError(
                f"Invalid times {times}: expected at least 1, or None for always."
            )
        with self._lock:
            self._armed.append(ArmedFault(kind, route, times, params))


_SETTINGS = frozenset(
    {
        "pending_polls",
        "pending_s",
        "row_cap",
        "chunk_size",
        "chunk_delay_s",
        "ignore_range",
        "content_encoding_gzip",
        "content_type_text_csv",
    }
)
_ARMING_METHODS = frozenset(
    {
        "throttle",
        "fail",
        "drop_download",
        "cut_chunked",
        "truncate_gzip",
        "corrupt_gzip",
        "corrupt_zip",
        "expire_first_download",
    }
)
