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
  root folder, and every windowed load replaces all of them.

Replacement rules:

- Each data file name carries the window of its load, e.g.
  `part-20240301_20240307-...` or `part-20240301T010000_20240301T015959-...`.
- A load with a window looks at every partition of the window's days and of
  the days in its rows. There it replaces the files whose window overlaps
  its own, and files without a window in their name count as covering their
  whole day. So a reload of a window removes days that have no rows any
  more, and an hour window replaces only that hour of its day.
- A window that starts or ends inside a day (the pipeline passes windows
  of local days as UTC instants when `source_timezone` is not UTC) keeps,
  in that day's partition, the rows of each replaced file that lie outside
  the new window but inside the file's own window, in a "kept" file named
  with the old file's window.
- A load without a window (a file loaded by hand) is not the whole truth
  of any day. It upserts by the dataset's key (one or more columns) into
  the partitions of the days in its rows, `__null__` included. There a
  file holding none of the load's keys stays as it is. A file holding some
  is replaced by a "kept" file with its rows of other keys, named with the
  old file's window so that later windowed loads still replace those rows,
  and the load's own rows are added. The
  swap is the same as for windowed loads, so a failure leaves the old files.
  Old rows count in the result as `details["rows_replaced"]`; load rows
  whose key existed before count as `rows_updated`, the others as
  `rows_inserted`. A dataset without a date column is upserted the same
  way in its single folder.
- NOTE: an upsert looks only at the partitions of the days in its rows. When
  a key's new row falls on another day than its old row (a corrected
  timestamp), the old row stays in its partition unless that partition also
  gets rows from this load. A windowed reload of the old day removes it.
- A dataset without a key cannot be upserted. Its loads without a window
  replace the partitions of the days in their rows, or all files when the
  dataset has no date column. The null-date rows of windowed loads stay.
- A load with a key keeps one row per key of its own rows, as the
  warehouse sink does. The row with the latest date wins, and a row with a
  null date never beats one with a date. Ties go to the later row in input
  order. The other rows count as `rows_superseded`, and the partitions of
  their days are still replaced even when no row of theirs is left.
  A dataset without a key keeps every row.
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

The code lives in five modules beside this one: `parquet_layout` (folders,
partition key, file names, replacement rules), `parquet_staging` (buffers,
writer threads, staging files), `parquet_duplicates` (one row per key of a
load), `parquet_upsert` (key matching and kept rows of loads without a
window) and `parquet_commit` (plan, manifest, swap).
This module holds the public API and `ParquetBatchWriter`'s public methods.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from connector.datasets import Dataset, rejects_schema
from connector.errors import ConfigError, LoadError, SchemaError
from connector.load import parquet_staging
from connector.load.base import BatchWriter, LoadResult
from connector.load.parquet_commit import _CommittingWriter
from connector.load.parquet_layout import (
    _REJECTS,
    _STAGING,
    NULL_PARTITION,
    _check_date_type,
    _new_load_id,
    dataset_root,
    partition_key,
)
from connector.load.parquet_staging import (
    _SPLIT_ROWS,
    _WRITER_THREADS,
    _close_quietly,
    _Lane,
    _Partition,
    _StagedFile,
)

if TYPE_CHECKING:
    from connector.windows import Window

__all__ = [
    "NULL_PARTITION",
    "ParquetBatchWriter",
    "dataset_root",
    "open_parquet_writer",
    "partition_key",
    "read_parquet_dataset",
]

log = logging.getLogger(__name__)


_STATE_TEXT = {
    "committing": "being committed",
    "committed": "already committed",
    "aborted": "aborted",
    "failed": "unusable after a failed commit",
}
_CODECS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")


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


def check_parquet_destination(
    destination: str | os.PathLike, dataset: Dataset, filesystem: Any = None
) -> None:
    """Check that the folder of `dataset` below `destination` can be written.

    A run calls it before exporting, so that a wrong destination fails
    before the export instead of at commit. The folder itself may not exist
    yet: the nearest existing folder above it must, and on the local disk
    it must be writable.

    Raises:
        ConfigError: The URL names an unavailable filesystem, a path on the
            way is a file, or the local folder is not writable.
    """
    root = dataset_root(destination, dataset)
    fs, path = _resolve_filesystem(root, filesystem)
    existing = path
    info = fs.get_file_info(existing)
    while info.type == pafs.FileType.NotFound:
        parent = posixpath.dirname(existing.rstrip("/"))
        if not parent or parent == existing:
            return
        existing = parent
        info = fs.get_file_info(existing)

    if info.type != pafs.FileType.Directory:
        raise ConfigError(
            f"Cannot write Parquet below {_mask_url(str(destination))}: "
            f"{existing} is a file, not a folder. Pass a folder to --parquet "
            "(parquet= from Python).",
            path=existing,
        )
    local = isinstance(fs, pafs.LocalFileSystem)
    if local and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"Cannot write Parquet below {_mask_url(str(destination))}: the "
            f"folder {existing} is not writable. Choose another folder or fix "
            "its permissions.",
            path=existing,
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


class ParquetBatchWriter(_CommittingWriter):
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
        self._upsert = None
        self._rejects = _Partition(_REJECTS)
        self._rejects_rows = 0
        self._buffered_bytes = 0.0
        self._unsplit: list[pa.RecordBatch] = []
        self._unsplit_rows = 0
        self._unsplit_bytes = 0
        self._row_bytes = 0.0
        self._dictionary_columns = None
        self._rows = 0
        self._rows_superseded = 0
        self._files_rewritten = 0
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

        self._unsplit.append(batch)
        self._unsplit_rows += batch.num_rows
        self._unsplit_bytes += batch.get_total_buffer_size()
        self._rows += batch.num_rows
        if (
            self._unsplit_rows >= min(_SPLIT_ROWS, self._row_group_rows)
            or self._unsplit_bytes >= parquet_staging._MAX_BUFFERED_BYTES / 4
        ):
            self._split_unsplit()

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
                replaced even where the load has no rows. None upserts by
                key into the partitions of the days present in the rows.
            export_token: DiVA's export token, recorded masked in the manifest.

        Raises:
            LoadError: A file could not be finished or moved; the renames
                already done are undone and the dataset is left as it was.
        """
        self._check_open()
        self._state = "committing"
        try:
            self._finish_files()
            self._drop_superseded()
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
        if result.details["rows_replaced"] is not None:
            log.info(
                "Upserted by %s: %d old rows replaced, %d new keys.",
                ", ".join(self._dataset.key),
                result.details["rows_replaced"],
                result.rows_inserted,
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

    def _check_open(self) -> None:
        if self._state != "open":
            raise LoadError(
                f"The Parquet writer for {self._dataset.name} is "
                f"{_STATE_TEXT[self._state]}; open a new writer for another load."
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


def _mask_url(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)
