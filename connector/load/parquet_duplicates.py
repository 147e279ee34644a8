"""Duplicate keys within one Parquet load: keep the latest row of each key.

The warehouse sink keeps one row per key of a load, and this module makes
the Parquet sink keep the same one. The winner is the row with the latest
value of the dataset's date column. A row with a null date never beats a
row with a date. Ties go to the later row in the order the rows were
written. A dataset without a key keeps every row.

A single integer key is first read back alone and sorted (see
`connector.load.keys`), and a load whose keys are all different ends
there. Otherwise, at commit, only the key columns and the date column of
the staged files are read back, into memory for all rows of the load at
once. A load without duplicate keys leaves its staged files as they are.
Otherwise each staged file holding a losing row is rewritten without it
before the swap, so the swap stays the same.
"""

from __future__ import annotations

import logging
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connector.load.keys import KeyTracker
from connector.load.parquet_staging import _StagedFile, read_columns
from connector.load.parquet_upsert import _finish, _UpsertingWriter

log = logging.getLogger(__name__)

_KEY = "key"
_HAS_DATE = "has_date"
_DATE = "date"
_FILE = "file"
_ROW = "row"
_RANK = "rank"


class _DeduplicatingWriter(_UpsertingWriter):
    """The duplicate-key step of `ParquetBatchWriter`, run before its commit plan.

    `ParquetBatchWriter.__init__` sets the state these methods share.
    """

    _rows: int
    _rows_superseded: int
    _files_rewritten: int

    def _drop_superseded(self) -> None:
        """Rewrite the staged files that contain rows superseded by their key's winner.

        Updates `_staged`, `_rows` and `_rows_superseded`. Staged files are
        listed per partition in the order they were written, which together
        with the row number in each file gives the rows' input order within
        a day. Rows of equal dates share a day, so that order breaks ties.
        """
        if not self._dataset.key or not self._staged:
            return
        if self._keys_all_distinct():
            return

        rows = self._read_keys_and_dates()
        if len(pc.unique(rows.column(_KEY))) == rows.num_rows:
            return

        losers = _losing_rows(rows)
        self._rows_superseded = losers.num_rows
        self._rows -= losers.num_rows
        by_file = losers.group_by(_FILE).aggregate([(_ROW, "list")])
        rewritten: dict[int, _StagedFile | None] = {}
        for index, rows_dropped in zip(
            by_file.column(_FILE).to_pylist(),
            by_file.column(f"{_ROW}_list").to_pylist(),
            strict=True,
        ):
            rewritten[index] = self._rewrite_without(self._staged[index], rows_dropped)
        self._files_rewritten = len(rewritten)

        staged = [rewritten.get(i, s) for i, s in enumerate(self._staged)]
        self._staged = [s for s in staged if s is not None]
        log.info(
            "Dropped %d rows of %s superseded by a later row with the same %s "
            "(%d staged files rewritten).",
            self._rows_superseded,
            self._dataset.name,
            ", ".join(self._dataset.key),
            len(rewritten),
        )

    def _keys_all_distinct(self) -> bool:
        """Tell whether a single integer key is known to repeat nowhere."""
        tracker = KeyTracker(self._dataset, self._schema)
        if tracker.key is None:
            return False
        for staged in self._staged:
            path = posixpath.join(self._staging, staged.partition, staged.name)
            table = read_columns(self._fs, path, [tracker.key])
            for chunk in table.column(0).chunks:
                tracker.add_values(chunk)
        return tracker.all_distinct()

    def _read_keys_and_dates(self) -> pa.Table:
        """Read one row per staged row: key value, date, file index, row number."""
        date_name = self._dataset.date_column
        names = list(self._dataset.key)
        if date_name is not None and date_name not in names:
            names.append(date_name)

        tables = []
        for index, staged in enumerate(self._staged):
            path = posixpath.join(self._staging, staged.partition, staged.name)
            table = read_columns(self._fs, path, names)
            count = table.num_rows
            columns = {_KEY: self._key_values(table)}
            if date_name is None:
                columns[_HAS_DATE] = pa.repeat(False, count)
            else:
                columns[_HAS_DATE] = pc.is_valid(table.column(date_name))
                columns[_DATE] = table.column(date_name)
            columns[_FILE] = pa.repeat(pa.scalar(index, pa.int32()), count)
            columns[_ROW] = pa.array(range(count), pa.int64())
            tables.append(pa.table(columns))
        return pa.concat_tables(tables)

    def _rewrite_without(
        self, staged: _StagedFile, rows_dropped: list[int]
    ) -> _StagedFile | None:
        """Copy a staged file without the rows at `rows_dropped`, then delete it.

        Returns the new staged file, or None when no row is left.
        """
        folder = posixpath.join(self._staging, staged.partition)
        source = posixpath.join(folder, staged.name)
        name = f"deduplicated-{staged.name}"
        dropped = pa.array(rows_dropped, pa.int64())
        rows = first = 0

        writer, stream = self._open_file(posixpath.join(folder, name), self._schema)
        try:
            with self._fs.open_input_file(source) as file:
                for batch in pq.ParquetFile(file).iter_batches(
                    batch_size=self._row_group_rows
                ):
                    numbers = pa.array(range(first, first + batch.num_rows), pa.int64())
                    keep = pc.invert(pc.is_in(numbers, value_set=dropped))
                    table = pa.Table.from_batches([batch]).filter(keep)
                    writer.write_table(table, row_group_size=self._row_group_rows)
                    rows += table.num_rows
                    first += batch.num_rows
        finally:
            _finish(writer, stream)

        self._fs.delete_file(source)
        if rows == 0:
            self._fs.delete_file(posixpath.join(folder, name))
            return None
        return _StagedFile(
            staged.partition, name, rows, stream.size, stream.hexdigest()
        )


def _losing_rows(rows: pa.Table) -> pa.Table:
    """Return the file index and row number of each row that loses to its key's winner.

    All rows are ranked once from best to worst: a date before no date, the
    later date first, then the later file and the later row. The winner of a
    key is its row of lowest rank.
    """
    order = [(_HAS_DATE, "descending")]
    if _DATE in rows.column_names:
        order.append((_DATE, "descending"))
    order += [(_FILE, "descending"), (_ROW, "descending")]
    ranked = rows.take(pc.sort_indices(rows, sort_keys=order))
    ranked = ranked.append_column(_RANK, pa.array(range(ranked.num_rows), pa.int64()))

    best = ranked.group_by(_KEY).aggregate([(_RANK, "min")])
    winners = pc.is_in(ranked.column(_RANK), value_set=best.column(f"{_RANK}_min"))
    return ranked.filter(pc.invert(winners)).select([_FILE, _ROW])
