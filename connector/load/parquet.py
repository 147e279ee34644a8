"""The Parquet sink: one folder per dataset, one hive partition per day.

Layout under `<destination>/<view>/<aggregation>/` (`<destination>/<view>/`
for a view without aggregation):

    date=2024-03-01/part-20240301_20240307-<load id>-0000.parquet
    date=__null__/part-...parquet      rows whose date column is null
    _manifests/<load id>-<window>.json one per committed load
    _rejects/<load id>.parquet         rows set aside in quarantine mode
    _staging/<load id>/...             files of a load not committed yet

Partitioning rules:

- The partition value is the day of the dataset's date column, in UTC for
  timestamp columns. The date column itself stays in every file with its
  exact type, so the folder name is only a label for readers to prune on.
- The partition key is `date`, unless the dataset has a column of that
  name: then it is `partition_date`, then `partition_date_1`, and so on.
  A key equal to a column name would make readers add a string column that
  clashes with the real one. `partition_key()` returns the key.
- Rows with a null date go to the `<key>=__null__` partition. The name is a
  plain string on purpose: with Hive's null marker
  (`__HIVE_DEFAULT_PARTITION__`), pyarrow 26 reads the partition column as a
  dictionary with nulls, and `pandas.read_parquet` (3.1) then fails with
  "Cannot yet unify dictionaries with nulls".
- A dataset without a date column is not partitioned: its files sit in the
  root folder, and every load replaces all of them.

Replacement rules:

- Each data file name carries the window of its load, e.g.
  `part-20240301_20240307-...` or `part-20240301T010000_20240301T015959-...`.
- A load with a window looks at every partition of the window's days and of
  the days in its rows. There it replaces the files whose window overlaps
  its own, and files without a window in their name count as covering their
  whole day. So a reload of a window removes days that have no rows any
  more, and an hour window replaces only that hour of its day.
- A load without a window (a file loaded by hand) replaces whole partitions
  of the days present in its rows.
- A zero-row load writes no data file, except for an unpartitioned dataset:
  it gets a 0-row file so that readers still see the columns and types.

Every name starting with `_` or `.` is skipped by `pyarrow.dataset` and by
`pandas.read_parquet` (their default ignore prefixes), which keeps staging
files, manifests, rejects and replaced files out of the readers' sight.

A load streams into staging files, one `ParquetWriter` per partition, with
memory bounded by the row-group buffers (`_MAX_BUFFERED_BYTES`). Row groups
are encoded on background threads (`_WRITER_THREADS`) while the caller
prepares the next batches. `commit` then swaps partition by partition: the
new files are renamed into place and the files they replace are renamed to
hidden names. The manifest (dataset, window, rows, bytes, each file with
its SHA-256, the export token masked) is moved in last, and the hidden
files are deleted after that. An error during the swap undoes the renames
done so far.

NOTE: the swap is not atomic across partitions. While `commit` runs, a
reader may see some days already replaced and others not, and for a moment
one day with both its old and new files. A process killed during the swap
leaves that state behind, with no manifest for the load. On object stores
(`s3://`, `gs://`) a rename is a copy followed by a delete, so the swap
takes time in proportion to the data written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from connector.datasets import Dataset, rejects_schema
from connector.errors import ConfigError, DataError, LoadError, SchemaError
from connector.load.base import BatchWriter, LoadResult

if TYPE_CHECKING:
    from connector.windows import Window

log = logging.getLogger(__name__)

#: Partition value of rows whose date column is null.
NULL_PARTITION = "__null__"

#: Arrow memory buffered across all partitions, in bytes, before the largest
#: buffer is written out as a smaller row group. It is an estimate: a slice
#: counts its share of its batch's buffers, and keeps the whole batch alive.
_MAX_BUFFERED_BYTES = 256 * 1024 * 1024

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

_STATE_TEXT = {
    "committing": "being committed",
    "committed": "already committed",
    "aborted": "aborted",
    "failed": "unusable after a failed commit",
}
_CODECS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")
# NOTE: the staging folder of a load whose process was killed stays behind
# until deleted by hand. Readers ignore it; nothing removes it automatically.
_STAGING = "_staging"
_MANIFESTS = "_manifests"
_REJECTS = "_rejects"
_EPOCH = date(1970, 1, 1)
_FILE_WINDOW = re.compile(r"^part-(\d{8}(?:T\d{6})?)_(\d{8}(?:T\d{6})?)-")


def dataset_root(destination: str | os.PathLike, dataset: Dataset) -> str:
    """Return the folder of `dataset` below `destination`, in the same form.

    The folder is `<destination>/<view>/<aggregation>`, or
    `<destination>/<view>` for a view without aggregation.
    """
    root = f"{os.fspath(destination).rstrip('/')}/{dataset.view}"
    if dataset.aggregation:
        root += f"/{dataset.aggregation}"
    return root


def partition_key(dataset: Dataset) -> str | None:
    """Return the hive partition key of `dataset`, or None when unpartitioned.

    The key is `date` unless a column has that name, then the first of
    `partition_date`, `partition_date_1`, ... that is not a column name.
    """
    if dataset.date_column is None:
        return None

    names = set(dataset.column_names)
    candidates = ["date", "partition_date"]
    candidates += [f"partition_date_{n}" for n in range(1, len(names) + 2)]
    return next(name for name in candidates if name not in names)


def open_parquet_writer(
    destination: str | os.PathLike,
    dataset: Dataset,
    *,
    compression: str = "zstd",
    row_group_rows: int = 128 * 1024,
    filesystem: Any = None,
) -> BatchWriter:
    """Open a writer that loads `dataset` into Parquet files below `destination`.

    Args:
        destination: A local folder or an fsspec URL (`file://`, `s3://`,
            `gs://`, `memory://`); the dataset goes to `dataset_root()`.
        dataset: The dataset whose Arrow schema every batch has.
        compression: A Parquet codec name: zstd, snappy, gzip, brotli, lz4
            or none.
        row_group_rows: Rows per row group. A partition's last row group is
            smaller, and so are row groups written early to bound memory.
        filesystem: An fsspec or pyarrow filesystem to use instead of the
            one `destination` names; `destination` is then a path on it.

    Raises:
        ConfigError: The codec is unknown, `row_group_rows` is not positive,
            or the destination URL names an unavailable filesystem.
    """
    codec = _check_codec(compression)
    if row_group_rows < 1:
        raise ConfigError(
            f"Invalid row group size {row_group_rows}: it must be at least 1 row."
        )

    root = dataset_root(destination, dataset)
    fs, path = _resolve_filesystem(root, filesystem)
    return ParquetBatchWriter(
        fs,
        path,
        dataset,
        location=_mask_url(root),
        compression=codec,
        row_group_rows=row_group_rows,
    )


def read_parquet_dataset(
    destination: str | os.PathLike, dataset: Dataset, filesystem: Any = None
) -> pa.Table:
    """Read every committed row of `dataset` below `destination`.

    The table has the dataset's Arrow schema exactly, without the partition
    column. A dataset never loaded reads as an empty table.
    """
    import pyarrow.dataset as ds

    schema = dataset.arrow_schema()
    fs, root = _resolve_filesystem(dataset_root(destination, dataset), filesystem)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return schema.empty_table()

    key = partition_key(dataset)
    partitioning = None
    if key is not None:
        partitioning = ds.partitioning(pa.schema([(key, pa.string())]), flavor="hive")
    data = ds.dataset(
        root,
        schema=schema,
        format="parquet",
        filesystem=fs,
        partitioning=partitioning,
    )
    return data.to_table(columns=schema.names)


@dataclass
class _StagedFile:
    """One finished data file waiting in the staging folder."""

    partition: str
    name: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class _Swap:
    """The files that `commit` moves into and out of one partition folder."""

    folder: str
    new: list[tuple[_StagedFile, str]]
    old: list[str]


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


class ParquetBatchWriter:
    """A load into a Parquet dataset folder: staged by `write`, swapped by `commit`.

    Use `open_parquet_writer` to build one. The module docstring describes
    the layout, the replacement rules and what a reader may see meanwhile.
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        root: str,
        dataset: Dataset,
        *,
        location: str,
        compression: str,
        row_group_rows: int,
    ) -> None:
        self._fs = fs
        self._root = root
        self._dataset = dataset
        self._schema = dataset.arrow_schema()
        self._key = partition_key(dataset)
        self._date_index = None
        if dataset.date_column is not None:
            self._date_index = self._schema.get_field_index(dataset.date_column)
            _check_date_type(dataset, self._schema.field(self._date_index).type)
        self._location = location
        self._sink = f"parquet {location}"
        self._compression = compression
        self._row_group_rows = row_group_rows
        self._load_id = _new_load_id()
        self._staging = posixpath.join(root, _STAGING, self._load_id)
        self._partitions: dict[str, _Partition] = {}
        self._lanes = [_Lane() for _ in range(_WRITER_THREADS)]
        self._staged: list[_StagedFile] = []
        self._rejects = _Partition(_REJECTS)
        self._rejects_rows = 0
        self._buffered_bytes = 0.0
        self._rows = 0
        self._state = "open"

    def write(self, batch: pa.RecordBatch) -> None:
        """Stage one batch whose schema is the dataset's Arrow schema.

        Raises:
            SchemaError: The batch's columns or types differ from the schema.
            DataError: A column declared not nullable contains nulls.
            LoadError: The staging file could not be written.
        """
        self._check_open()
        batch = self._conform(batch)
        if batch.num_rows == 0:
            return

        # RecordBatch.nbytes walks every buffer of every slice, which costs
        # more than the split itself, so slices are sized from the batch.
        row_bytes = batch.get_total_buffer_size() / batch.num_rows
        try:
            for folder, rows in self._split(batch):
                self._buffer(folder, rows, rows.num_rows * row_bytes)
        except (OSError, pa.ArrowException) as err:
            raise LoadError(
                f"Could not write staging files under {self._staging}: {err}"
            ) from err
        self._rows += batch.num_rows

    def write_rejects(self, rejects: pa.Table) -> None:
        """Stage rows set aside by the transform stage, for `_rejects/` on commit.

        Raises:
            SchemaError: The table lacks a column of `rejects_schema()`.
            LoadError: The staging file could not be written.
        """
        self._check_open()
        if rejects.num_rows == 0:
            return

        schema = rejects_schema()
        try:
            table = rejects.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid) as err:
            raise SchemaError(
                f"Rejected rows do not match the rejects schema ({err}); expected "
                f"the columns {', '.join(schema.names)}."
            ) from err

        try:
            if self._rejects.writer is None:
                path = posixpath.join(self._staging, _REJECTS + ".parquet")
                self._rejects.writer, self._rejects.stream = self._open_file(
                    path, schema
                )
            self._rejects.writer.write_table(table)
        except (OSError, pa.ArrowException) as err:
            raise LoadError(f"Could not stage rejected rows: {err}") from err
        self._rejects_rows += table.num_rows

    def commit(self, window: Window | None, export_token: str | None) -> LoadResult:
        """Swap the staged files into place and write the load's manifest.

        Args:
            window: The window the load covers; its days' partitions are
                replaced even where the load has no rows. None replaces the
                partitions of the days present in the rows.
            export_token: DiVA's export token, recorded masked in the manifest.

        Raises:
            LoadError: A file could not be finished or moved; the renames
                already done are undone and the dataset is left as it was.
        """
        self._check_open()
        self._state = "committing"
        try:
            self._finish_files()
            plan = self._plan(window)
            moves = self._stage_extras(window, export_token, plan)
            trash = self._swap(plan, moves)
        except (OSError, pa.ArrowException) as err:
            self._state = "failed"
            raise LoadError(
                f"Could not commit the Parquet load of {self._dataset.name} to "
                f"{self._sink}: {err}. The dataset was left as it was."
            ) from err
        self._state = "committed"

        self._clean_up(plan, trash)
        result = self._result(plan, moves)
        log.info(
            "Wrote %d rows of %s in %d files to %s (window %s).",
            result.rows_written,
            self._dataset.name,
            len(result.details["files"]),
            self._sink,
            window or "none",
        )
        return result

    def abort(self) -> None:
        """Drop every staged file; the dataset stays as it was.

        Calling it after a successful `commit`, or twice, does nothing.
        """
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"

        self._stop_threads()
        for part in [*self._partitions.values(), self._rejects]:
            _close_quietly(part)
        self._partitions.clear()
        try:
            if self._fs.get_file_info(self._staging).type != pafs.FileType.NotFound:
                self._fs.delete_dir(self._staging)
        except (OSError, pa.ArrowException) as err:
            log.warning(
                "Could not remove the staging folder %s after an aborted load: %s. "
                "Readers ignore it; delete it by hand.",
                self._staging,
                err,
            )
        log.info("Aborted the Parquet load of %s.", self._dataset.name)

    # Staging: split, buffer, write row groups.

    def _check_open(self) -> None:
        if self._state != "open":
            raise LoadError(
                f"The Parquet writer for {self._dataset.name} is "
                f"{_STATE_TEXT[self._state]}; open a new writer for another load."
            )

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

    def _split(self, batch: pa.RecordBatch) -> list[tuple[str, pa.RecordBatch]]:
        """Cut `batch` into one slice per partition folder."""
        if self._key is None:
            return [("", batch)]

        import pyarrow.compute as pc

        days = _day_numbers(batch.column(self._date_index))
        if days.null_count == len(days):
            return [(self._folder(None), batch)]
        if days.null_count == 0:
            bounds = pc.min_max(days)
            if bounds["min"] == bounds["max"]:
                return [(self._folder(bounds["min"].as_py()), batch)]

        # A stable sort keeps the rows of each day in their input order.
        order = pc.array_sort_indices(days)
        runs = pc.run_end_encode(days.take(order))
        rows = batch.take(order)
        slices, start = [], 0
        for end, day in zip(runs.run_ends.to_pylist(), runs.values.to_pylist()):
            slices.append((self._folder(day), rows.slice(start, end - start)))
            start = end
        return slices

    def _folder(self, day: int | None) -> str:
        value = NULL_PARTITION if day is None else _EPOCH + timedelta(days=day)
        return f"{self._key}={value}"

    def _buffer(self, folder: str, batch: pa.RecordBatch, nbytes: float) -> None:
        part = self._partitions.get(folder)
        if part is None:
            lane = len(self._partitions) % len(self._lanes)
            part = self._partitions[folder] = _Partition(folder, lane)
        part.batches.append(batch)
        part.rows += batch.num_rows
        part.nbytes += nbytes
        self._buffered_bytes += nbytes

        if part.rows >= self._row_group_rows:
            self._flush(part, whole_groups=True)
        while self._buffered_bytes > _MAX_BUFFERED_BYTES:
            largest = max(self._partitions.values(), key=lambda p: p.nbytes)
            self._flush(largest, whole_groups=False)

    def _flush(self, part: _Partition, *, whole_groups: bool) -> None:
        """Write a partition's buffered rows, or only its full row groups."""
        table = pa.Table.from_batches(part.batches, self._schema)
        count = table.num_rows
        if whole_groups:
            count -= count % self._row_group_rows
        if count == 0:
            return

        lane = self._lanes[part.lane]
        self._submit(lane, self._write_rows, part, table.slice(0, count))

        rest = table.slice(count)
        rest_bytes = part.nbytes * rest.num_rows / table.num_rows
        self._buffered_bytes -= part.nbytes - rest_bytes
        part.batches = [b for b in rest.to_batches() if b.num_rows]
        part.rows = rest.num_rows
        part.nbytes = rest_bytes

    def _submit(self, lane: _Lane, task: Callable[..., None], *args: Any) -> None:
        """Queue `task` on `lane`'s thread; wait while too many are queued.

        Parquet encoding releases the GIL, so the threads encode and compress
        while the caller parses and casts the next batches. Each partition
        stays on one lane, whose single thread runs tasks in order, so row
        groups keep their order and a staging file is used by one thread.
        """
        if lane.executor is None:
            lane.executor = ThreadPoolExecutor(1, thread_name_prefix="parquet-writer")
        lane.pending.append(lane.executor.submit(task, *args))
        while len(lane.pending) > _MAX_PENDING_TASKS:
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
        writer = pq.ParquetWriter(
            stream.buffered(), schema, compression=self._compression
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

    # Commit: plan, manifest, swap, clean up.

    def _plan(self, window: Window | None) -> list[_Swap]:
        """List, per partition folder, the files to move in and to replace."""
        window_id = _window_id(window)
        new: dict[str, list[_StagedFile]] = {}
        for staged in self._staged:
            new.setdefault(staged.partition, []).append(staged)

        folders = set(new)
        if self._key is None:
            folders.add("")
        elif window is not None:
            folders.update(self._folder((day - _EPOCH).days) for day in window.days)

        plan = []
        for folder in sorted(folders):
            old = [
                name
                for name in self._list_visible(folder)
                if _replaces(name, folder, window, partitioned=self._key is not None)
            ]
            named = [
                (staged, f"part-{window_id}-{self._load_id}-{staged.name}")
                for staged in new.get(folder, [])
            ]
            plan.append(_Swap(folder, named, old))
        return plan

    def _list_visible(self, folder: str) -> list[str]:
        selector = pafs.FileSelector(self._folder_path(folder), allow_not_found=True)
        return sorted(
            info.base_name
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and not info.base_name.startswith(("_", "."))
        )

    def _folder_path(self, folder: str) -> str:
        return posixpath.join(self._root, folder) if folder else self._root

    def _stage_extras(
        self, window: Window | None, export_token: str | None, plan: list[_Swap]
    ) -> list[tuple[str, str]]:
        """Stage the manifest and return the moves of the non-data files."""
        moves = []
        rejects = None
        if self._rejects.stream is not None:
            relative = f"{_REJECTS}/{self._load_id}.parquet"
            staged = posixpath.join(self._staging, _REJECTS + ".parquet")
            moves.append((staged, posixpath.join(self._root, relative)))
            rejects = {
                "path": relative,
                "rows": self._rejects_rows,
                "bytes": self._rejects.stream.size,
                "sha256": self._rejects.stream.hexdigest(),
            }

        manifest = self._manifest(window, export_token, plan, rejects)
        staged = posixpath.join(self._staging, "manifest.json")
        self._fs.create_dir(self._staging, recursive=True)
        with self._fs.open_output_stream(staged) as out:
            out.write(json.dumps(manifest, indent=2, ensure_ascii=False).encode())
        relative = f"{_MANIFESTS}/{self._load_id}-{_window_id(window)}.json"
        moves.append((staged, posixpath.join(self._root, relative)))
        return moves

    def _manifest(
        self,
        window: Window | None,
        export_token: str | None,
        plan: list[_Swap],
        rejects: dict | None,
    ) -> dict[str, Any]:
        files = [
            {
                "path": posixpath.join(swap.folder, name),
                "rows": staged.rows,
                "bytes": staged.bytes,
                "sha256": staged.sha256,
            }
            for swap in plan
            for staged, name in swap.new
        ]
        return {
            "dataset": self._dataset.name,
            "load_id": self._load_id,
            "window": _window_json(window),
            "export_token": _mask_token(export_token),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "partition_key": self._key,
            "partitions": [swap.folder for swap in plan if swap.folder],
            "rows": self._rows,
            "bytes": sum(item["bytes"] for item in files),
            "compression": self._compression,
            "row_group_rows": self._row_group_rows,
            "files": files,
            "replaced_files": [
                posixpath.join(swap.folder, name) for swap in plan for name in swap.old
            ],
            "rejects": rejects,
        }

    def _swap(self, plan: list[_Swap], moves: list[tuple[str, str]]) -> list[str]:
        """Rename new files in and old files out; return the hidden old files.

        On any failure the renames done so far are undone before re-raising.
        """
        done: list[tuple[str, str]] = []
        trash = []
        try:
            for swap in plan:
                folder_path = self._folder_path(swap.folder)
                if swap.new:
                    self._fs.create_dir(folder_path, recursive=True)
                for staged, name in swap.new:
                    source = posixpath.join(self._staging, swap.folder, staged.name)
                    self._move(source, posixpath.join(folder_path, name), done)
                for name in swap.old:
                    hidden = posixpath.join(
                        folder_path, f".replaced-{self._load_id}-{name}"
                    )
                    self._move(posixpath.join(folder_path, name), hidden, done)
                    trash.append(hidden)

            for source, target in moves:
                self._fs.create_dir(posixpath.dirname(target), recursive=True)
                self._move(source, target, done)
        except BaseException:
            self._undo(done)
            raise
        return trash

    def _move(self, source: str, target: str, done: list[tuple[str, str]]) -> None:
        self._fs.move(source, target)
        done.append((source, target))

    def _undo(self, done: list[tuple[str, str]]) -> None:
        for source, target in reversed(done):
            try:
                self._fs.move(target, source)
            except (OSError, pa.ArrowException) as err:
                log.error(
                    "Could not move %s back to %s while undoing a failed commit: %s",
                    target,
                    source,
                    err,
                )

    def _clean_up(self, plan: list[_Swap], trash: list[str]) -> None:
        """Delete replaced files, emptied partition folders and the staging folder.

        The load is committed already, so failures are only logged. The
        `_staging` folder itself stays, since another load may be using it.
        """
        steps = [partial(self._fs.delete_file, path) for path in trash]
        steps += [
            partial(self._delete_if_empty, self._folder_path(swap.folder))
            for swap in plan
            if swap.folder and swap.old and not swap.new
        ]
        steps.append(partial(self._fs.delete_dir, self._staging))

        errors = []
        for step in steps:
            try:
                step()
            except (OSError, pa.ArrowException) as err:
                errors.append(err)
        if errors:
            log.warning(
                "Committed %s, but %d old or staging files could not be removed "
                "(last error: %s). Readers ignore them; delete them by hand.",
                self._dataset.name,
                len(errors),
                errors[-1],
            )

    def _delete_if_empty(self, path: str) -> None:
        selector = pafs.FileSelector(path, allow_not_found=True)
        if not self._fs.get_file_info(selector):
            self._fs.delete_dir(path)

    def _result(self, plan: list[_Swap], moves: list[tuple[str, str]]) -> LoadResult:
        files = [
            f"{self._location}/{posixpath.join(swap.folder, name)}"
            for swap in plan
            for _, name in swap.new
        ]
        relative = [posixpath.relpath(target, self._root) for _, target in moves]
        rejects = [path for path in relative if path.startswith(_REJECTS + "/")]
        return LoadResult(
            sink=self._sink,
            rows_written=self._rows,
            rows_rejected=self._rejects_rows,
            details={
                "root": self._location,
                "files": files,
                "bytes": sum(s.bytes for swap in plan for s, _ in swap.new),
                "manifest": f"{self._location}/{relative[-1]}",
                "rejects_file": f"{self._location}/{rejects[0]}" if rejects else None,
                "partitions": [swap.folder for swap in plan if swap.folder],
                "files_replaced": sum(len(swap.old) for swap in plan),
            },
        )


def _check_codec(compression: str) -> str:
    """Return the Parquet codec name for `compression`, or raise ConfigError."""
    codec = compression.lower()
    if codec == "uncompressed":
        return "none"
    if codec == "none" or (codec in _CODECS and pa.Codec.is_available(codec)):
        return codec
    raise ConfigError(
        f"Invalid Parquet compression {compression!r}: use one of "
        f"{', '.join(_CODECS)} (available in this pyarrow build)."
    )


def _resolve_filesystem(url: str, filesystem: Any) -> tuple[pafs.FileSystem, str]:
    """Return a pyarrow filesystem and the path on it for `url`."""
    if isinstance(filesystem, pafs.FileSystem):
        return filesystem, url

    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    if filesystem is None:
        try:
            filesystem, url = url_to_fs(url)
        except (ImportError, ValueError) as err:
            raise ConfigError(
                f"Cannot open the Parquet destination {_mask_url(url)}: {err}. "
                "Check the URL, or install the fsspec package for its scheme "
                "(s3fs for s3://, gcsfs for gs://)."
            ) from err

    # pyarrow's own local filesystem writes without a Python round trip.
    if isinstance(filesystem, LocalFileSystem):
        return pafs.LocalFileSystem(), url
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), url


def _check_date_type(dataset: Dataset, date_type: pa.DataType) -> None:
    if not (pa.types.is_timestamp(date_type) or pa.types.is_date(date_type)):
        raise SchemaError(
            f"Cannot partition {dataset.name} by its date column "
            f"{dataset.date_column} of type {date_type}: it must be a date or "
            "timestamp. Fix the column's type in the schema file.",
            column=dataset.date_column,
        )


def _day_numbers(column: pa.Array) -> pa.Array:
    """Return the day of each value as days since 1970-01-01 (int32)."""
    if pa.types.is_timestamp(column.type):
        # Dropping the zone keeps the UTC instant, so the day is the UTC day.
        column = column.cast(pa.timestamp(column.type.unit)).cast(pa.date32())
    elif pa.types.is_date64(column.type):
        column = column.cast(pa.date32())
    return column.view(pa.int32())


def _replaces(
    name: str, folder: str, window: Window | None, *, partitioned: bool
) -> bool:
    """Tell whether a load of `window` replaces the file `folder/name`."""
    if not partitioned:
        return True

    day = _folder_day(folder)
    file_span = _file_span(name)
    if window is None:
        # Null-date rows of windowed loads stay; only those loaded by hand go.
        return day is not None or file_span is None
    if file_span is None:
        if day is None:
            return False
        start = datetime.combine(day, datetime.min.time())
        file_span = (start, start + timedelta(days=1))

    window_span = _span(window.start, window.end)
    return file_span[0] < window_span[1] and window_span[0] < file_span[1]


def _folder_day(folder: str) -> date | None:
    value = folder.partition("=")[2]
    return None if value == NULL_PARTITION else date.fromisoformat(value)


def _file_span(name: str) -> tuple[datetime, datetime] | None:
    """Return the window recorded in a data file's name, as a half-open span."""
    match = _FILE_WINDOW.match(name)
    if match is None:
        return None
    start, end = (_parse_stamp(text) for text in match.groups())
    return _span(start, end)


def _span(start: date | datetime, end: date | datetime) -> tuple[datetime, datetime]:
    """Turn an inclusive window into a half-open span of naive UTC datetimes."""
    if isinstance(start, datetime):
        return _naive_utc(start), _naive_utc(end) + timedelta(seconds=1)
    first = datetime.combine(start, datetime.min.time())
    return first, datetime.combine(end, datetime.min.time()) + timedelta(days=1)


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _window_json(window: Window | None) -> dict[str, str] | None:
    if window is None:
        return None
    return {"start": window.start.isoformat(), "end": window.end.isoformat()}


def _window_id(window: Window | None) -> str:
    if window is None:
        return "nowindow"
    return f"{_stamp(window.start)}_{_stamp(window.end)}"


def _stamp(value: date | datetime) -> str:
    if isinstance(value, datetime):
        return _naive_utc(value).strftime("%Y%m%dT%H%M%S")
    return value.strftime("%Y%m%d")


def _parse_stamp(text: str) -> date | datetime:
    if "T" in text:
        return datetime.strptime(text, "%Y%m%dT%H%M%S")
    return datetime.strptime(text, "%Y%m%d").date()


def _new_load_id() -> str:
    """Return a unique, time-ordered id such as `20240301T101500123Z-1f2e3d`."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:6]}"


def _mask_token(token: str | None) -> str | None:
    if token is None:
        return None
    return f"{token[:6]}…" if len(token) > 6 else "…"


def _mask_url(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


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
