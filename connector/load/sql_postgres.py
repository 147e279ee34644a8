"""Staging and merging for PostgreSQL: `COPY` in CSV, then `ON CONFLICT`."""

from __future__ import annotations

import io
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pa_csv

from connector.load.sql_exact_text import _exact_text
from connector.load.sql_generic import (
    SEQUENCE_COLUMN,
    MergeCounts,
    StagingMerger,
    _sequence,
)

if TYPE_CHECKING:
    from psycopg import Copy, Cursor


class _StagingCancelled(Exception):
    """The reason sent to end a `COPY` early, which fails the statement."""


class PostgresMerger(StagingMerger):
    """Stage with `COPY ... FROM STDIN`, merge with `INSERT ... ON CONFLICT`.

    All batches of a load go through one `COPY`, which stays open until the
    merge: the server parses the rows already sent while the client reads
    and types the next batches.
    """

    _copy_context: AbstractContextManager[Copy] | None = None
    _copy: Copy | None = None
    _cursor: Cursor | None = None

    def stage_batch(self, batch: pa.RecordBatch, first_seq: int) -> None:
        """Send one batch to the staging table as CSV text."""
        table = pa.Table.from_arrays(
            [_exact_text(column) for column in batch.columns]
            + [_sequence(batch, first_seq)],
            names=[*self.columns, SEQUENCE_COLUMN],
        )
        buffer = io.BytesIO()
        # Quoting every non-null value keeps empty strings apart from NULL,
        # which COPY's CSV format reads from an unquoted empty field.
        pa_csv.write_csv(
            table,
            buffer,
            pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"),
        )
        if self._copy is None:
            self._start_copy()
        self._copy.write(buffer.getbuffer())

    def _start_copy(self) -> None:
        columns = f"{self._column_list()}, {self.quote(SEQUENCE_COLUMN)}"
        statement = f"COPY {self.quote(self.stage)} ({columns}) FROM STDIN (FORMAT csv)"
        self._cursor = self.conn.connection.cursor()
        self._copy_context = self._cursor.copy(statement)
        self._copy = self._copy_context.__enter__()

    def finish_stage(self) -> None:
        """End the `COPY`, which is when the server reports any bad row."""
        self._end_copy(None)

    def cancel_stage(self) -> None:
        """Abort the `COPY`, which leaves the transaction to roll back."""
        self._end_copy(_StagingCancelled("the load was abandoned"))

    def _end_copy(self, error: BaseException | None) -> None:
        context, cursor = self._copy_context, self._cursor
        self._copy_context = self._copy = self._cursor = None
        if context is None:
            return
        try:
            if error is None:
                context.__exit__(None, None, None)
            else:
                context.__exit__(type(error), error, None)
        finally:
            cursor.close()

    def drop_stage(self) -> None:
        """Do nothing: the staging table is dropped at commit or rollback."""

    def upsert(self, written: int, existing: int) -> MergeCounts:
        """Merge in one statement that reports inserts and updates."""
        action = self._conflict_action("EXCLUDED", "IS DISTINCT FROM")
        statement = (
            f"WITH merged AS (INSERT INTO {self._target} AS existing "
            f"({self._column_list()}) "
            f"{self.selected_rows()} {action} RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), "
            "count(*) FILTER (WHERE NOT inserted) FROM merged"
        )
        inserted, updated = self.conn.exec_driver_sql(statement).one()
        return MergeCounts(written, inserted=inserted, updated=updated)

    def _count_keys(self, rows_staged: int) -> tuple[int, int]:
        """Return the number of distinct staged keys; the merge counts the rest."""
        if not self.dataset.key or self._keys_unique:
            return rows_staged, 0
        keys = ", ".join(self.quote(k) for k in self.dataset.key)
        written = self.conn.exec_driver_sql(
            f"SELECT count(*) FROM (SELECT DISTINCT {keys} "
            f"FROM {self.quote(self.stage)}) s"
        ).scalar_one()
        return written, 0
