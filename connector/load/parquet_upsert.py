"""Partial replacement of Parquet files: upserts by key, and cut days.

The `connector.load.parquet` module docstring states when a load upserts
instead of replacing whole partitions. Here a partition's files are checked
one at a time. A file without any of the load's keys stays as it is. A file
with some is replaced, and its rows of other keys are copied into a "kept"
staging file that moves in with the load's own files. A windowed load whose
window cuts a day keeps the rows outside it the same way.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connector.load.keys import integer_values
from connector.load.parquet_layout import (
    _file_span,
    _folder_day,
    _kept_name,
    _replaces,
    _span,
)
from connector.load.parquet_staging import _StagedFile, _StagingWriter, read_columns

if TYPE_CHECKING:
    from collections.abc import Callable

    from connector.load.parquet_staging import _ChecksumStream
    from connector.windows import Window


@dataclass
class _Upsert:
    """The load's keys, and what the upsert found in the existing files.

    The keys are read by `read_keys` when first needed, which a load into
    folders without files never does.
    """

    read_keys: Callable[[], pa.Array]
    rows: int
    rows_replaced: int = 0
    found: list[pa.Array] = field(default_factory=list)
    _keys: pa.Array | None = None

    @property
    def keys(self) -> pa.Array:
        """One value per row of the load, as `_key_values` returns them."""
        if self._keys is None:
            self._keys = self.read_keys()
        return self._keys

    def rows_inserted(self) -> int:
        """Count the load's rows whose key was in no existing file."""
        if not self.found:
            return self.rows
        found = pa.concat_arrays([a.cast(self.keys.type) for a in self.found])
        hit = pc.is_in(self.keys, value_set=pc.unique(found))
        return len(self.keys) - (pc.sum(hit).as_py() or 0)


class _UpsertingWriter(_StagingWriter):
    """The upsert steps of `ParquetBatchWriter`, used by its commit.

    `ParquetBatchWriter.__init__` sets the state these methods share.
    """

    _root: str
    _load_id: str

    def _folder_path(self, folder: str) -> str:
        return posixpath.join(self._root, folder) if folder else self._root

    def _load_keys(self) -> pa.Array:
        """Read the key columns back from the staged files of this load."""
        names = list(self._dataset.key)
        tables = [
            read_columns(
                self._fs,
                posixpath.join(self._staging, staged.partition, staged.name),
                names,
            )
            for staged in self._staged
        ]
        if not tables:
            return pa.array([], pa.string())
        return self._key_values(pa.concat_tables(tables))

    def _key_values(self, table: pa.Table) -> pa.Array:
        """Return one comparable value per row for the dataset's key columns.

        A single key column is compared as it is. Composite keys become one
        string per row: each column as `<length>:<text>`, or `-` when null,
        joined by `|`, which no two different keys can share.
        """
        columns = [
            table.column(name).cast(self._schema.field(name).type)
            for name in self._dataset.key
        ]
        if len(columns) == 1:
            return columns[0].combine_chunks()

        pieces = []
        for column in columns:
            text = column.cast(pa.string())
            length = pc.binary_length(text).cast(pa.string())
            piece = pc.binary_join_element_wise(length, text, ":")
            pieces.append(pc.fill_null(piece, "-"))
        return pc.binary_join_element_wise(*pieces, "|").combine_chunks()

    def _upsert_folder(
        self, folder: str, names: list[str], upsert: _Upsert
    ) -> tuple[list[str], list[tuple[_StagedFile, str]]]:
        """Find the files of `folder` that hold keys of the load.

        Returns:
            The names of those files, to be replaced, and the staged files
            (with their final names) holding their rows of other keys.
        """
        replaced, kept = [], []
        for name in names:
            path = posixpath.join(self._folder_path(folder), name)
            keys = read_columns(self._fs, path, list(self._dataset.key))
            values = self._key_values(keys)
            hit = pc.is_in(values, value_set=upsert.keys)
            matched = pc.sum(hit).as_py() or 0
            if matched == 0:
                continue

            replaced.append(name)
            upsert.rows_replaced += matched
            upsert.found.append(values.filter(hit))
            if matched < keys.num_rows:
                staged = self._copy_unmatched(folder, path, len(kept), upsert)
                kept.append((staged, _kept_name(name, self._load_id, staged.name)))
        return replaced, kept

    def _copy_unmatched(
        self, folder: str, path: str, sequence: int, upsert: _Upsert
    ) -> _StagedFile:
        """Stage the rows of the file at `path` whose key is not in the load."""

        def unmatched(table: pa.Table) -> pa.Array:
            return pc.invert(pc.is_in(self._key_values(table), value_set=upsert.keys))

        return self._copy_rows(folder, path, sequence, unmatched)

    def _window_folder(
        self, folder: str, names: list[str], window: Window
    ) -> tuple[list[str], list[tuple[_StagedFile, str]]]:
        """Find the files of `folder` that a load of `window` replaces.

        A day partition lies wholly inside the window unless the window
        starts or ends within that day, as a window of local days does in
        UTC partitions. There, a replaced file keeps, in a staged copy, its
        rows outside the new window but inside the window it was loaded
        with. Its rows outside both are rows its own export had beyond its
        window, and they go with it.

        Returns:
            The names of the files to replace, and the staged files (with
            their final names) holding the rows they keep.
        """
        replaced = [
            name for name in names if _replaces(name, folder, window, partitioned=True)
        ]
        day = _folder_day(folder)
        start, end = _span(window.start, window.end)
        if day is None or self._date_index is None:
            return replaced, []
        if not pa.types.is_timestamp(self._schema.field(self._date_index).type):
            # A date column's day partitions match day windows exactly.
            return replaced, []
        day_start = datetime.combine(day, datetime.min.time())
        day_span = (day_start, day_start + timedelta(days=1))
        if start <= day_span[0] and day_span[1] <= end:
            return replaced, []

        date_name = self._schema.field(self._date_index).name
        kept = []
        for name in replaced:
            own_start, own_end = _file_span(name) or day_span

            def keep(table: pa.Table) -> pa.Array:
                dates = table.column(date_name)
                return pc.and_(
                    pc.invert(_within(dates, start, end)),
                    _within(dates, own_start, own_end),
                )

            path = posixpath.join(self._folder_path(folder), name)
            dates = read_columns(self._fs, path, [date_name])
            if not pc.any(keep(dates)).as_py():
                continue
            staged = self._copy_rows(folder, path, len(kept), keep)
            kept.append((staged, _kept_name(name, self._load_id, staged.name)))
        return replaced, kept

    def _copy_rows(
        self,
        folder: str,
        path: str,
        sequence: int,
        keep: Callable[[pa.Table], pa.Array],
    ) -> _StagedFile:
        """Stage the rows of the file at `path` for which `keep` is true."""
        name = f"kept-{sequence:04d}.parquet"
        target = posixpath.join(self._staging, folder, name)
        writer, stream = self._open_file(target, self._schema)
        rows = 0
        try:
            with self._fs.open_input_file(path) as source:
                for batch in pq.ParquetFile(source).iter_batches(
                    batch_size=self._row_group_rows
                ):
                    table = self._conform_old(pa.Table.from_batches([batch]))
                    table = table.filter(keep(table))
                    writer.write_table(table, row_group_size=self._row_group_rows)
                    rows += table.num_rows
        finally:
            _finish(writer, stream)
        return _StagedFile(folder, name, rows, stream.size, stream.hexdigest())

    def _conform_old(self, table: pa.Table) -> pa.Table:
        """Give rows of an existing file the dataset's schema.

        Columns the file lacks (added to the schema since) become nulls.
        """
        columns = [
            table.column(f.name).cast(f.type)
            if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type)
            for f in self._schema
        ]
        return pa.Table.from_arrays(columns, schema=self._schema)


_EPOCH_NAIVE = datetime(1970, 1, 1)


def _within(
    dates: pa.Array | pa.ChunkedArray, start: datetime, end: datetime
) -> pa.Array:
    """Tell for each timestamp whether it lies in `[start, end)` (naive UTC).

    The comparison runs in numpy on the stored integers, because comparing
    with a pyarrow scalar would make pyarrow import pandas.
    """
    if isinstance(dates, pa.ChunkedArray):
        dates = dates.combine_chunks()
    if len(dates) == 0:
        return pa.nulls(0, pa.bool_())
    unit = dates.type.unit
    ticks = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    low = (start - _EPOCH_NAIVE) // timedelta(seconds=1) * ticks
    high = (end - _EPOCH_NAIVE) // timedelta(seconds=1) * ticks
    values = integer_values(dates.view(pa.int64()))
    inside = (values >= low) & (values < high)
    if dates.null_count:
        inside &= _valid_mask(dates)
    bits = pa.py_buffer(np.packbits(inside, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), len(inside), [None, bits])


def _valid_mask(values: pa.Array) -> np.ndarray:
    bitmap = np.frombuffer(values.buffers()[0], dtype=np.uint8)
    bits = np.unpackbits(bitmap, bitorder="little")
    return bits[values.offset : values.offset + len(values)].astype(bool)


def _finish(writer: pq.ParquetWriter, stream: _ChecksumStream) -> None:
    writer.close()
    stream.finish()
