"""The outcome of a run, as the command line and scripts see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connector.load.base import LoadResult
from connector.windows import Window


@dataclass
class RunSummary:
    """The outcome of one run, for the command line's summary and for scripts.

    Attributes:
        dataset: The `view/aggregation` name.
        window: The window loaded, or None for a file loaded by hand.
        exports: Export files read (more than one when a window was split).
        rows_read: Data records read from the export files.
        rows_rejected: Records set aside in quarantine mode.
        drift: Header differences from the schema, as readable lines.
        sinks: One result per sink written.
        seconds: Wall-clock time of the run.
    """

    dataset: str
    window: Window | None
    exports: int = 0
    rows_read: int = 0
    rows_rejected: int = 0
    drift: list[str] = field(default_factory=list)
    sinks: list[LoadResult] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-ready values."""
        return {
            "dataset": self.dataset,
            "window": self.window.to_filter() if self.window else None,
            "exports": self.exports,
            "rows_read": self.rows_read,
            "rows_rejected": self.rows_rejected,
            "drift": self.drift,
            "sinks": [
                {
                    "sink": result.sink,
                    "rows_written": result.rows_written,
                    "rows_inserted": result.rows_inserted,
                    "rows_updated": result.rows_updated,
                    "rows_superseded": result.rows_superseded,
                    "rows_rejected": result.rows_rejected,
                }
                for result in self.sinks
            ],
            "seconds": round(self.seconds, 3),
        }
