"""Export files held by the sandbox between the export request and download.

An export is made at once but reported `Pending` for a number of polls (and
seconds) so that clients exercise their poll loop. It completes on the first
poll that finds it ready and expires `expiry_s` seconds after completion,
as DiVA's files do after 60 minutes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from threading import Lock

PENDING = "pending"
READY = "ready"
EXPIRED = "expired"
UNKNOWN = "unknown"


@dataclass
class Export:
    """One export file and its progress from pending to expired."""

    token: str
    content: bytes
    compression: str
    row_count: int
    created_at: float
    pending_polls: int
    pending_s: float
    polls: int = 0
    completed_at: float | None = None
    expired: bool = False


class ExportStore:
    """The export files of a running sandbox, by token.

    Args:
        clock: Returns the current time in seconds; tests may pass their own.
        expiry_s: Seconds a completed file stays downloadable.
    """

    def __init__(self, clock: Callable[[], float], expiry_s: float) -> None:
        self.clock = clock
        self.expiry_s = expiry_s
        self._exports: dict[str, Export] = {}
        self._lock = Lock()

    def add(
        self,
        content: bytes,
        compression: str,
        row_count: int,
        pending_polls: int,
        pending_s: float,
    ) -> Export:
        """Store a new export file and return it with its fresh token."""
        extension = "csv.zip" if compression == "zip" else "csv.gz"
        export = Export(
            token=f"{secrets.token_hex(8)}.{extension}",
            content=content,
            compression=compression,
            row_count=row_count,
            created_at=self.clock(),
            pending_polls=pending_polls,
            pending_s=pending_s,
        )
        with self._lock:
            self._exports[export.token] = export
        return export

    def poll(self, token: str) -> tuple[str, Export | None]:
        """Count one poll of `token` and return its state and export."""
        with self._lock:
            export = self._exports.get(token)
            if export is None:
                return UNKNOWN, None
            export.polls += 1
            now = self.clock()

            if export.expired:
                return EXPIRED, export
            if export.completed_at is None:
                waited_s = now - export.created_at
                if export.polls <= export.pending_polls or waited_s < export.pending_s:
                    return PENDING, export
                export.completed_at = now
            if now >= export.completed_at + self.expiry_s:
                export.expired = True
                return EXPIRED, export
            return READY, export

    def expire(self, export: Export) -> None:
        """Mark `export` as expired for good."""
        with self._lock:
            export.expired = True

    def get(self, token: str) -> Export | None:
        """Return the export called `token`, without counting a poll."""
        with self._lock:
            return self._exports.get(token)
