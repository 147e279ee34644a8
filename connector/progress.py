"""Counters of a run's progress, shared by every stage and thread.

The stages count what they do (exports requested and ready, bytes
downloaded, rows typed, rows loaded) with `count`, which costs one lock
when a display is attached and nothing otherwise. The command line
attaches a live display on a terminal; elsewhere the log lines suffice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

COUNTERS = (
    "exports_requested",
    "exports_ready",
    "bytes_downloaded",
    "rows_typed",
    "rows_loaded",
)


class Progress:
    """Thread-safe counters with the time they started."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._values = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        """Add `amount` to the counter `name`."""
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, float]:
        """Return a copy of the counters and the seconds elapsed."""
        with self._lock:
            values: dict[str, float] = dict(self._values)
        values["seconds"] = time.monotonic() - self.started
        return values


_active: Progress | None = None


def count(name: str, amount: int = 1) -> None:
    """Add to a counter of the attached `Progress`, if any."""
    progress = _active
    if progress is not None:
        progress.add(name, amount)


@contextmanager
def tracking() -> Iterator[Progress]:
    """Attach a fresh `Progress` for the duration of the block."""
    global _active
    previous, _active = _active, Progress()
    try:
        yield _active
    finally:
        _active = previous


def describe(values: dict[str, float]) -> str:
    """Return one line describing the counters, with rates per second."""
    seconds = max(values["seconds"], 1e-6)
    pending = int(values["exports_requested"] - values["exports_ready"])
    megabytes = values["bytes_downloaded"] / 1e6
    return (
        f"exports pending {pending} · {megabytes:,.1f} MB "
        f"({megabytes / seconds:,.1f} MB/s) · typed {int(values['rows_typed']):,} "
        f"({values['rows_typed'] / seconds:,.0f}/s) · loaded "
        f"{int(values['rows_loaded']):,}"
    )
