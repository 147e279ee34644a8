"""Read an export file into Arrow record batches typed by the dataset schema."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa

from connector.datasets import Dataset, rejects_schema
from connector.errors import DataError
from connector.transform.cast import (
    ValueProblem,
    cast_column,
    expected_type,
    find_bad_rows,
    finish_parsed,
    parse_type,
)
from connector.transform.csv import (
    MAX_BLOCK_BYTES,
    ScannedRecord,
    TextBatchReader,
    block_too_small,
    conversion_error_column,
    has_bad_utf8,
    read_header,
    scan_records,
)
from connector.transform.decompress import open_payload
from connector.transform.drift import (
    ColumnLookup,
    DriftItem,
    normalize_header,
    reconcile_header,
)
from connector.transform.options import TransformOptions

log = logging.getLogger(__name__)

_SHOWN_VALUE_CHARS = 80


@dataclass
class TransformReport:
    """Counts and findings of reading one export.

    Attributes:
        path: The export file.
        member: The zip member read, or None.
        compression: `gzip`, `zip`, `none`, or nested layers such as
            `gzip+gzip`.
        rows_read: Data records parsed, rejected ones included.
        rows_rejected: Records set aside in quarantine mode.
        batches: Batches yielded.
        file_bytes: Size of the file on disk.
        uncompressed_bytes: CSV bytes after decompression.
        drift: Differences between the header and the schema.
    """

    path: str
    member: str | None = None
    compression: str = "none"
    rows_read: int = 0
    rows_rejected: int = 0
    batches: int = 0
    file_bytes: int = 0
    uncompressed_bytes: int = 0
    drift: list[DriftItem] = field(default_factory=list)

    @property
    def rows_loaded(self) -> int:
        """Rows handed on in batches."""
        return self.rows_read - self.rows_rejected


class _ReadAsText(Exception):
    """A parsed column has a value that only the text path can describe."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.position = position


@dataclass
class _Reject:
    index: int | None
    column: str | None
    reason: str


def read_export(
    path: Path,
    dataset: Dataset,
    options: TransformOptions,
    *,
    column_lookup: ColumnLookup | None = None,
    work_dir: Path | None = None,
) -> ExportReader:
    """Open an export file and check its header against the dataset.

    Args:
        path: The downloaded export: gzip, zip or plain CSV, detected from
            their leading bytes.
        dataset: The dataset the export should hold.
        options: Parsing and typing options.
        column_lookup: Returns DiVA's schema object for a column that the
            header has and the schema lacks, or None when it is unknown.
        work_dir: The run's scratch folder. The reader streams every member
            and writes no file, so nothing is placed there.

    Raises:
        DataError: The file is empty, not CSV, or fails the bomb guard.
        SchemaError: The header cannot be matched with the schema.
        DownloadError: The file is truncated or corrupt.
    """
    return ExportReader(Path(path), dataset, options, column_lookup, work_dir)


class ExportReader:
    """Typed record batches of one export file; iterate once.

    Every batch has exactly `schema`. `report` is filled while iterating.
    In quarantine mode, bad rows are dropped from the batches and kept in
    `rejects()`.
    """

    def __init__(
        self,
        path: Path,
        dataset: Dataset,
        options: TransformOptions,
        column_lookup: ColumnLookup | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.path = path
        self.options = options
        self.work_dir = work_dir
        self.report = TransformReport(path=str(path))

        payload = open_payload(path, options)
        try:
            self._header = read_header(payload)
            self.report.member = payload.member
            self.report.compression = payload.compression
        finally:
            payload.close()
        self.report.file_bytes = path.stat().st_size
        if payload.member is not None:
            log.info("Reading member %s of zip archive %s.", payload.member, path)

        self.dataset, self.report.drift = reconcile_header(
            self._header, dataset, column_lookup, path=str(path)
        )
        # Batches name their columns as written; cast steps use stripped names.
        self._names, _ = normalize_header(self._header, str(path))
        self.schema = self.dataset.arrow_schema()
        # What pyarrow converts each header column to while parsing. A
        # column falls back to text when one of its values does not fit.
        known = {column.name: column for column in self.dataset.columns}
        self._resumed = False
        self._parse_types = {
            raw: parse_type(known[name]) if name in known else pa.string()
            for raw, name in zip(self._header, self._names, strict=True)
        }
        self._rejects: list[_Reject] = []
        self._rejects_table: pa.Table | None = None
        self._generator: Generator[pa.RecordBatch, None, None] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; an unfinished iteration ends."""
        if self._generator is not None:
            self._generator.close()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._generator is not None:
            raise RuntimeError(f"The reader of {self.path} can be iterated only once.")
        self._generator = self._batches()
        return self._generator

    def _batches(self) -> Iterator[pa.RecordBatch]:
        offset = 0
        while True:
            text_reader = TextBatchReader(
                self.path,
                self._header,
                self.options,
                skip_invalid_rows=self.options.on_bad_rows == "quarantine",
                column_types=self._parse_types,
                skip_rows=offset,
            )
            parsed_batches = iter(text_reader)
            try:
                while (parsed := self._next_parsed(parsed_batches)) is not None:
                    parsed = parsed.rename_columns(self._names)
                    batch = self._type_batch(parsed, offset, text_reader.nul_seen)
                    offset += parsed.num_rows
                    self._update_report(offset, text_reader.invalid_rows)
                    if batch.num_rows:
                        self.report.batches += 1
                        yield batch
                break
            except _ReadAsText as retry:
                # Reading resumes after the rows already yielded, with this
                # column as text, so that the cast names the bad value. Each
                # resumption parses the file again from its start, so after
                # the first one every column is read as text.
                self._parse_types[self._header[retry.position]] = pa.string()
                if self._resumed:
                    self._parse_types = dict.fromkeys(self._parse_types, pa.string())
                self._resumed = True
                log.debug(
                    "Reading column %s of %s as text from row %d on.",
                    self._names[retry.position],
                    self.path,
                    offset,
                )
            finally:
                parsed_batches.close()
        self._update_report(offset, text_reader.invalid_rows)
        self.report.uncompressed_bytes = text_reader.bytes_read
        log.info(
            "Read %d rows from %s (%d rejected, %d bytes of CSV).",
            self.report.rows_read,
            self.path,
            self.report.rows_rejected,
            self.report.uncompressed_bytes,
        )

    def _update_report(self, records: int, invalid_rows: int) -> None:
        self.report.rows_read = records + invalid_rows
        self.report.rows_rejected = len(self._rejects) + invalid_rows

    def _next_parsed(
        self, parsed_batches: Iterator[pa.RecordBatch]
    ) -> pa.RecordBatch | None:
        try:
            return next(parsed_batches)
        except StopIteration:
            return None
        except pa.ArrowInvalid as err:
            position = conversion_error_column(err)
            if (
                position is not None
                and position < len(self._header)
                and self._parse_types[self._header[position]] != pa.string()
            ):
                raise _ReadAsText(position) from err
            raise self._parse_error(err) from err

    def _type_batch(
        self, text_batch: pa.RecordBatch, offset: int, may_hold_nul: bool
    ) -> pa.RecordBatch:
        arrays, failed = self._cast_columns(text_batch, may_hold_nul)
        if not failed:
            return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

        problems = self._find_problems(text_batch, failed)
        if self.options.on_bad_rows == "fail":
            index = min(problems)
            column_name, reason = problems[index]
            value = text_batch.column(column_name)[index].as_py()
            raise self._value_error(offset + index, column_name, value, reason)

        for index in sorted(problems):
            column_name, reason = problems[index]
            self._rejects.append(_Reject(offset + index, column_name, reason))
        if len(problems) == text_batch.num_rows:
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        keep = np.ones(text_batch.num_rows, dtype=bool)
        keep[sorted(problems)] = False
        # Built from bits: pa.array() would make pyarrow import pandas.
        bits = pa.py_buffer(np.packbits(keep, bitorder="little"))
        mask = pa.Array.from_buffers(pa.bool_(), len(keep), [None, bits])
        arrays, failed = self._cast_columns(text_batch.filter(mask), may_hold_nul)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _cast_columns(
        self, text_batch: pa.RecordBatch, may_hold_nul: bool
    ) -> tuple[list[pa.Array], dict[str, ValueProblem]]:
        present = set(text_batch.schema.names)
        arrays = []
        failed = {}
        for column in self.dataset.columns:
            if column.name not in present:
                arrays.append(pa.nulls(text_batch.num_rows, column.type.arrow_type()))
                continue
            values = text_batch.column(column.name)
            if values.type != pa.string():
                try:
                    arrays.append(finish_parsed(values, column, self.options))
                except ValueProblem as problem:
                    raise _ReadAsText(self._names.index(column.name)) from problem
                continue
            try:
                arrays.append(
                    cast_column(values, column, self.options, may_hold_nul=may_hold_nul)
                )
            except ValueProblem as problem:
                failed[column.name] = problem
        return arrays, failed

    def _find_problems(
        self, text_batch: pa.RecordBatch, failed: dict[str, ValueProblem]
    ) -> dict[int, tuple[str, str]]:
        """Map the index of each bad row to its first bad column and reason."""
        problems: dict[int, tuple[str, str]] = {}
        first_only = self.options.on_bad_rows == "fail"
        for name, problem in failed.items():
            column = self.dataset.column(name)
            values = text_batch.column(name)
            found = False
            for index, reason in find_bad_rows(values, column, self.options):
                found = True
                # Columns come in schema order, so a row keeps its first bad column.
                problems.setdefault(index, (name, reason))
                if first_only:
                    break
            if not found:
                # The whole column failed but no single value does: report
                # the column rather than a row that cannot be named.
                raise DataError(
                    f"{self.path}, column {name}: values could not be read as "
                    f"{expected_type(column)}: {problem.reason}.",
                    path=str(self.path),
                    column=name,
                )
        return problems

    def _value_error(
        self, index: int, column_name: str, value: str | None, reason: str
    ) -> DataError:
        record = self._locate([index]).get(index)
        line = record.line if record else None
        column = self.dataset.column(column_name)
        display_value = _shorten(value)
        return DataError(
            f"{self.path}, line {line}, column {column_name}: invalid value "
            f"{display_value!r} for {expected_type(column)}: {reason}. Fix the "
            "export, or set on_bad_rows to quarantine to set bad rows aside.",
            path=str(self.path),
            line=line,
            column=column_name,
            value=display_value,
        )

    def _locate(self, indices: list[int]) -> dict[int, ScannedRecord]:
        pending = set(indices)
        found = {}
        with closing(self._scan()) as records:
            for record in records:
                if record.index in pending:
                    found[record.index] = record
                    if len(found) == len(pending):
                        break
        return found

    def _parse_error(self, err: pa.ArrowInvalid) -> DataError:
        message = str(err)
        if "UTF8" in message or "UTF-8" in message:
            record = _first(self._scan(), lambda r: has_bad_utf8(r.text))
            problem = "contains bytes that are not valid UTF-8; DiVA exports are UTF-8"
        elif "columns" in message:
            record = _first(self._scan(), lambda r: r.index is None)
            problem = (
                "has a different number of fields than the header's "
                f"{len(self._header)}"
            )
        elif block_too_small(err):
            record = None
            problem = (
                f"is longer than {MAX_BLOCK_BYTES} bytes, most likely because a "
                "quote is never closed"
            )
        else:
            record = None
            problem = f"could not be parsed as CSV ({message})"
        line = record.line if record else None
        where = f", line {line}" if line else ""
        return DataError(
            f"{self.path}{where}: the record {problem}. The export is malformed; "
            "export the window again.",
            path=str(self.path),
            line=line,
            value=_shorten(record.text) if record else None,
        )

    def _scan(self) -> Generator[ScannedRecord, None, None]:
        return scan_records(self.path, self.options)

    def rejects(self) -> pa.Table:
        """Return the rows set aside in quarantine mode, with their lines.

        Each row contains the file, the line the record starts on, the first bad
        column (null for a record with a wrong field count), the reason, and
        the record text as written, except that each NUL character is written
        as the four characters `\\x00` so that every sink can store it. Call
        it after iterating; it parses the file once more to find the lines.
        """
        if self._rejects_table is None:
            self._rejects_table = self._build_rejects()
        return self._rejects_table

    def _build_rejects(self) -> pa.Table:
        rows = []
        if self.report.rows_rejected:
            by_index = {reject.index: reject for reject in self._rejects}
            for record in self._scan():
                reject = (
                    by_index.get(record.index) if record.index is not None else None
                )
                if record.index is None:
                    fields, width = len(record.fields), len(self._header)
                    reason = f"{fields} fields, the header has {width}"
                    reject = _Reject(None, None, reason)
                if reject is not None:
                    rows.append(
                        {
                            "file": str(self.path),
                            "line": record.line,
                            "column": reject.column,
                            "reason": reject.reason,
                            "record": record.text.replace("\x00", "\\x00"),
                        }
                    )
        if not rows:
            # from_pylist, even of nothing, makes pyarrow import pandas.
            return pa.Table.from_batches([], schema=rejects_schema())
        return pa.Table.from_pylist(rows, schema=rejects_schema())


def _first(
    records: Generator[ScannedRecord, None, None],
    test: Callable[[ScannedRecord], bool],
) -> ScannedRecord | None:
    with closing(records):
        for record in records:
            if test(record):
                return record
    return None


def _shorten(value: str | None) -> str | None:
    if value is None or len(value) <= _SHOWN_VALUE_CHARS:
        return value
    return value[:_SHOWN_VALUE_CHARS] + "..."
