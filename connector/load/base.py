"""The sink interface: a writer that commits whole or not at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from connector.windows import Window


@dataclass
class LoadResult:
    """The outcome of one load into one sink.

    Attributes:
        sink: A short description of the destination, secrets masked.
        rows_written: Rows the sink contains from this load.
        rows_inserted: New keys, when the sink can tell.
        rows_updated: Existing keys whose rows were replaced, when known.
        rows_superseded: Rows dropped because a later row in the same load
            had the same key.
        rows_rejected: Rows set aside in the sink's rejects file or table.
        details: Sink-specific facts (files written, manifest path, ...).
    """

    sink: str
    rows_written: int = 0
    rows_inserted: int | None = None
    rows_updated: int | None = None
    rows_superseded: int = 0
    rows_rejected: int = 0
    details: dict = field(default_factory=dict)


class BatchWriter(Protocol):
    """A sink being loaded: batches go in, and nothing is visible before commit.

    The pipeline calls `write` for each typed batch of a load, then either
    `commit` once or `abort` once. A writer that fails in `commit` leaves
    its sink as it was before the load.
    """

    def write(self, batch: pa.RecordBatch) -> None:
        """Stage one batch whose schema is the dataset's Arrow schema."""

    def write_rejects(self, rejects: pa.Table) -> None:
        """Stage rows set aside by the transform stage (quarantine mode)."""

    def commit(self, window: Window | None, export_token: str | None) -> LoadResult:
        """Make every staged row visible at once and return what was done."""

    def abort(self) -> None:
        """Drop everything staged; the sink stays as it was."""
