"""Staging and merging for SQLite: `executemany`, then `ON CONFLICT`."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from connector.load.sql_exact_text import _exact_text
from connector.load.sql_generic import SEQUENCE_COLUMN, MergeCounts, StagingMerger


class SqliteMerger(StagingMerger):
    """Stage with `executemany`, merge with `INSERT ... ON CONFLICT DO UPDATE`."""

    def stage_batch(self, batch: pa.RecordBatch, first_seq: int) -> None:
        """Insert one batch into the staging table with `executemany`."""
        arrays = [
            _exact_text(column, timestamp_format="%Y-%m-%d %H:%M:%S", text_dates=True)
            for column in batch.columns
        ]
        arrays = [
            pc.cast(a, pa.int8()) if pa.types.is_boolean(a.type) else a for a in arrays
        ]
        rows = list(
            zip(
                *(a.to_pylist() for a in arrays),
                range(first_seq, first_seq + batch.num_rows),
            )
        )
        marks = ", ".join(["?"] * (len(self.columns) + 1))
        columns = f"{self._column_list()}, {self.quote(SEQUENCE_COLUMN)}"
        self.conn.exec_driver_sql(
            f"INSERT INTO {self.quote(self.stage)} ({columns}) VALUES ({marks})", rows
        )

    def upsert(self, written: int, existing: int) -> MergeCounts:
        """Merge with one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`."""
        action = self._conflict_action("excluded", "IS NOT")
        changes = self.conn.exec_driver_sql(
            f"INSERT INTO {self._target} AS existing ({self._column_list()}) "
            f"{self.selected_rows()} {action}"
        ).rowcount
        inserted = written - existing
        return MergeCounts(written, inserted=inserted, updated=changes - inserted)
