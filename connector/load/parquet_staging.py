"""Staging of a Parquet load: split batches by day, buffer them, write files.

Each partition buffers its rows until a row group is full, or until the
buffers of all partitions together pass `_MAX_BUFFERED_BYTES`. Row groups
are then encoded into staging files on background writer threads. The
`connector.load.parquet` module docstring describes the whole load.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from connector.errors import DataError, LoadError, SchemaError
from connector.load.parquet_layout import _EPOCH, NULL_PARTITION, _day_numbers

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from connector.datasets import Dataset

log = logging.getLogger(__name__)


#: Arrow memory buffered across all partitions, in bytes, before every
#: buffer is written out as a row group, smaller than `row_group_rows` rows.
_MAX_BUFFERED_BYTES = 48 * 1024 * 1024

#: Rows gathered from incoming batches before they are split by day, unless
#: they reach a quarter of `_MAX_BUFFERED_BYTES` first. Sorting many small
#: batches at once costs less than sorting each.
_SPLIT_ROWS = 32 * 1024

#: Rows of the first split that decide which columns are dictionary-encoded.
_DICTIONARY_SAMPLE_ROWS = 8192

#: Staging files kept open at once, split evenly between the writer threads.
#: Past it, a thread finishes its least recently used file, and that
#: partition starts a new file when more rows arrive.
_MAX_OPEN_FILES = 64

#: Threads that encode and write staging files, each for its own partitions.
#: pyarrow encodes one file on one thread, so two let two partitions encode
#: at once while the caller reads the next batches.
_WRITER_THREADS = 2

#: Flushes queued per writer thread before `write` waits for the oldest.
_MAX_PENDING_TASKS = 2

#: Write buffer between a Parquet writer and its checksummed file, in bytes.
_BUFFER_BYTES = 1024 * 1024


@dataclass
class _StagedFile:
    """One finished data file waiting in the staging folder."""

    partition: str
    name: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class _Lane:
    """A writer thread, its queued tasks and the staging files only it writes."""

    executor: ThreadPoolExecutor | None = None
    pending: deque[Future] = field(default_factory=deque)
    open_files: OrderedDict[str, _Partition] = field(default_factory=OrderedDict)


@dataclass
class _Partition:
    """The buffered rows and open staging file of one partition."""

    folder: str
    lane: int = 0
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    nbytes: float = 0
    writer: pq.ParquetWriter | None = None
    stream: _ChecksumStream | None = None
    name: str = ""
    file_rows: int = 0
    sequence: int = 0


class _ChecksumStream:
    """A write-only file object that computes the SHA-256 of what passes.

    Parquet writers issue many small writes (page headers), so they write
    through `buffered()`, which calls into Python once per `_BUFFER_BYTES`.
    """

    def __init__(self, stream: pa.NativeFile) -> None:
        self._stream = stream
        self._sha256 = hashlib.sha256()
        self._buffer: pa.NativeFile | None = None
        self.size = 0

    def buffered(self) -> pa.NativeFile:
        self._buffer = pa.BufferedOutputStream(
            pa.PythonFile(self, mode="w"), _BUFFER_BYTES
        )
        return self._buffer

    def write(self, data: bytes) -> int:
        self._sha256.update(data)
        self._stream.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._stream.flush()

    def finish(self) -> None:
        """Flush the buffer and close the file (through the buffer's close)."""
        if self._buffer is not None:
            self._buffer.close()
        else:
            self._stream.close()

    def close(self) -> None:
        self._stream.close()

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def writable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


class _StagingWriter:
    """The staging steps of `ParquetBatchWriter`: split, buffer, write row groups.

    `ParquetBatchWriter.__init__` sets the state these methods share.
    """

    _fs: pafs.FileSystem
    _dataset: Dataset
    _schema: pa.Schema
    _key: str | None
    _date_index: int | None
    _compression: str
    _row_group_rows: int
    _staging: str
    _partitions: dict[str, _Partition]
    _lanes: list[_Lane]
    _staged: list[_StagedFile]
    _rejects: _Partition
    _buffered_bytes: float
    _row_bytes: float
    _unsplit: list[pa.RecordBatch]
    _unsplit_rows: int
    _unsplit_bytes: int
    _dictionary_columns: list[str] | None

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Return `batch` with the dataset's schema, or raise if it differs."""
        same_names = batch.schema.names == self._schema.names
        if not same_names or batch.schema.types != self._schema.types:
            raise SchemaError(
                f"Batch for {self._dataset.name} does not match its schema: "
                f"{_first_difference(batch.schema, self._schema)}. Type the "
                "batch with the dataset's Arrow schema before loading it."
            )

        for field_, column in zip(self._schema, batch.columns, strict=True):
            if not field_.nullable and column.null_count:
                raise DataError(
                    f"Column {field_.name} of {self._dataset.name} is declared not "
                    f"nullable, but {column.null_count} rows are null. Mark it "
                    "nullable in the schema file or reject those rows.",
                    column=field_.name,
                )

        if batch.schema.equals(self._schema):
            return batch
        # Only nullability or metadata differ, so the columns can be reused.
        return pa.RecordBatch.from_arrays(batch.columns, schema=self._schema)

    def _split_unsplit(self) -> None:
        """Split the batches received since the last split and buffer them."""
        if not self._unsplit:
            return
        rows = pa.Table.from_batches(self._unsplit, self._schema)
        self._unsplit, self._unsplit_rows, self._unsplit_bytes = [], 0, 0
        if self._dictionary_columns is None:
            self._dictionary_columns = _repeating_columns(rows)
        try:
            for folder, day_rows in self._split(rows):
                # The slices of one split share its buffers, so each is
                # counted by its share of the rows.
                self._buffer(folder, day_rows, day_rows.num_rows * self._row_bytes)
        except (OSError, pa.ArrowException) as err:
            raise LoadError(
                f"Could not write staging files under {self._staging}: {err}"
            ) from err

    def _split(self, rows: pa.Table) -> list[tuple[str, pa.Table]]:
        """Cut `rows` into one slice per partition folder.

        Sets `_row_bytes` to the average size of a row of the result.
        """
        self._row_bytes = rows.get_total_buffer_size() / max(rows.num_rows, 1)
        if self._key is None:
            return [("", rows)]

        import pyarrow.compute as pc

        days = _day_numbers(rows.column(self._date_index).combine_chunks())
        if days.null_count == len(days):
            return [(self._folder(None), rows)]
        if days.null_count == 0:
            bounds = pc.min_max(days)
            if bounds["min"] == bounds["max"]:
                return [(self._folder(bounds["min"].as_py()), rows)]

        # A stable sort keeps the rows of each day in their input order.
        order = pc.array_sort_indices(days)
        runs = pc.run_end_encode(days.take(order))
        rows = rows.take(order)
        self._row_bytes = rows.get_total_buffer_size() / rows.num_rows
        slices, start = [], 0
        for end, day in zip(runs.run_ends.to_pylist(), runs.values.to_pylist()):
            slices.append((self._folder(day), rows.slice(start, end - start)))
            start = end
        return slices

    def _folder(self, day: int | None) -> str:
        value = NULL_PARTITION if day is None else _EPOCH + timedelta(days=day)
        return f"{self._key}={value}"

    def _buffer(self, folder: str, rows: pa.Table, nbytes: float) -> None:
        part = self._partitions.get(folder)
        if part is None:
            lane = len(self._partitions) % len(self._lanes)
            part = self._partitions[folder] = _Partition(folder, lane)
        part.batches.extend(rows.to_batches())
        part.rows += rows.num_rows
        part.nbytes += nbytes
        self._buffered_bytes += nbytes

        if part.rows >= self._row_group_rows:
            self._flush(part, whole_groups=True)
        if self._buffered_bytes > _MAX_BUFFERED_BYTES:
            # Every partition is written out, not only the largest: slices of
            # one split share its buffers, which stay alive while any slice
            # is buffered. Waiting for the previous round of writes first
            # keeps at most two buffers' worth of rows in memory. This round
            # then runs on the writer threads while the caller reads on.
            self._drain()
            pa.default_memory_pool().release_unused()
            for other in self._partitions.values():
                self._flush(other, whole_groups=False, wait=False)

    def _flush(
        self, part: _Partition, *, whole_groups: bool, wait: bool = True
    ) -> None:
        """Write a partition's buffered rows, or only its full row groups.

        With `wait` false, the write is queued without waiting for earlier ones.
        """
        table = pa.Table.from_batches(part.batches, self._schema)
        count = table.num_rows
        if whole_groups:
            count -= count % self._row_group_rows
        if count == 0:
            return

        lane = self._lanes[part.lane]
        self._submit(lane, self._write_rows, part, table.slice(0, count), wait=wait)

        rest = table.slice(count)
        rest_bytes = part.nbytes * rest.num_rows / table.num_rows
        self._buffered_bytes -= part.nbytes - rest_bytes
        part.batches = [b for b in rest.to_batches() if b.num_rows]
        part.rows = rest.num_rows
        part.nbytes = rest_bytes

    def _submit(
        self, lane: _Lane, task: Callable[..., None], *args: Any, wait: bool = True
    ) -> None:
        """Queue `task` on `lane`'s thread; wait while too many are queued.

        Parquet encoding releases the GIL, so the threads encode and compress
        while the caller parses and casts the next batches. Each partition
        stays on one lane, whose single thread runs tasks in order, so row
        groups keep their order and a staging file is used by one thread.
        """
        if lane.executor is None:
            lane.executor = ThreadPoolExecutor(1, thread_name_prefix="parquet-writer")
        lane.pending.append(lane.executor.submit(task, *args))
        while wait and len(lane.pending) > _MAX_PENDING_TASKS:
            lane.pending.popleft().result()

    def _drain(self) -> None:
        """Wait for every queued task; re-raise the first error."""
        for lane in self._lanes:
            while lane.pending:
                lane.pending.popleft().result()

    def _stop_threads(self) -> None:
        for lane in self._lanes:
            for future in lane.pending:
                future.cancel()
            lane.pending.clear()
            if lane.executor is not None:
                lane.executor.shutdown(wait=True)
                lane.executor = None

    # Runs on a lane's thread, or on the caller's once the lanes are drained.

    def _write_rows(self, part: _Partition, table: pa.Table) -> None:
        writer = self._writer_for(part)
        writer.write_table(table, row_group_size=self._row_group_rows)
        part.file_rows += table.num_rows

    def _writer_for(self, part: _Partition) -> pq.ParquetWriter:
        open_files = self._lanes[part.lane].open_files
        if part.writer is not None:
            open_files.move_to_end(part.folder)
            return part.writer

        if len(open_files) >= max(1, _MAX_OPEN_FILES // len(self._lanes)):
            _, oldest = open_files.popitem(last=False)
            self._finish_file(oldest)
        part.name = f"{part.sequence:04d}.parquet"
        part.sequence += 1
        path = posixpath.join(self._staging, part.folder, part.name)
        part.writer, part.stream = self._open_file(path, self._schema)
        open_files[part.folder] = part
        return part.writer

    def _open_file(
        self, path: str, schema: pa.Schema
    ) -> tuple[pq.ParquetWriter, _ChecksumStream]:
        self._fs.create_dir(posixpath.dirname(path), recursive=True)
        stream = _ChecksumStream(self._fs.open_output_stream(path))
        dictionary = self._dictionary_columns if schema == self._schema else None
        writer = pq.ParquetWriter(
            stream.buffered(),
            schema,
            compression=self._compression,
            use_dictionary=True if dictionary is None else dictionary,
        )
        return writer, stream

    def _finish_file(self, part: _Partition) -> None:
        part.writer.close()
        part.stream.finish()
        self._staged.append(
            _StagedFile(
                part.folder,
                part.name,
                part.file_rows,
                part.stream.size,
                part.stream.hexdigest(),
            )
        )
        self._lanes[part.lane].open_files.pop(part.folder, None)
        part.writer = part.stream = None
        part.file_rows = 0

    def _finish_open_files(self, lane: _Lane) -> None:
        for part in list(lane.open_files.values()):
            self._finish_file(part)

    def _finish_files(self) -> None:
        self._split_unsplit()
        for part in self._partitions.values():
            if part.rows:
                self._flush(part, whole_groups=False)
        for lane in self._lanes:
            self._submit(lane, self._finish_open_files, lane)
        self._drain()
        self._stop_threads()

        # An unpartitioned dataset always gets a file, so readers see its
        # columns even after a zero-row load.
        if self._key is None and not self._staged:
            part = self._partitions[""] = _Partition("")
            self._writer_for(part)
            self._finish_file(part)

        if self._rejects.writer is not None:
            self._rejects.writer.close()
            self._rejects.stream.finish()


def _repeating_columns(rows: pa.Table) -> list[str] | None:
    """Name the columns worth dictionary-encoding, judged from a sample.

    Dictionary encoding pays off when values repeat (codes, states,
    currencies). For columns of mostly distinct values (tokens, times) it
    only costs time: the encoder builds a dictionary, finds it too large
    and starts over in plain encoding. Returns None, meaning every column,
    when the sample is too small to judge.
    """
    if rows.num_rows < _DICTIONARY_SAMPLE_ROWS:
        return None
    import pyarrow.compute as pc

    sample = rows.slice(0, _DICTIONARY_SAMPLE_ROWS)
    return [
        name
        for name, column in zip(sample.column_names, sample.columns, strict=True)
        if pc.count_distinct(column).as_py() <= sample.num_rows // 2
    ]


def read_columns(fs: pafs.FileSystem, path: str, names: list[str]) -> pa.Table:
    """Read the columns `names` of the Parquet file at `path` on `fs`.

    The commit of every keyed load reads its staged keys back. It avoids
    `pq.read_table`, which goes through pyarrow's dataset module, because
    importing that module imports pandas too (measured here: 0.2 s, 35 MB).

    Raises:
        LoadError: The file is not a Parquet file, or a damaged one.
    """
    try:
        with fs.open_input_file(path) as file:
            return pq.ParquetFile(file).read(columns=names)
    except pa.ArrowInvalid as err:
        raise LoadError(
            f"Cannot read {path} as Parquet: {err}. Only the connector's Parquet "
            "files belong in a dataset folder; move other files out of it (names "
            "starting with _ or . are ignored). The dataset was left as it was.",
            path=path,
        ) from err


def _first_difference(actual: pa.Schema, expected: pa.Schema) -> str:
    """Describe the first column where `actual` differs from `expected`."""
    for position, column in enumerate(expected):
        if position >= len(actual):
            return f"column {column.name} is missing"

        found = actual.field(position)
        if found.name != column.name:
            return f"column {position + 1} is {found.name}, expected {column.name}"
        if found.type != column.type:
            return f"column {column.name} is {found.type}, expected {column.type}"

    extra = ", ".join(actual.names[len(expected) :])
    return f"unexpected extra columns {extra}"


def _close_quietly(part: _Partition) -> None:
    closers = [part.writer.close if part.writer else None]
    closers.append(part.stream.finish if part.stream else None)
    for close in filter(None, closers):
        try:
            close()
        except (OSError, pa.ArrowException) as err:
            log.debug("Ignored an error closing a staging file: %s", err)
    part.writer = part.stream = None
