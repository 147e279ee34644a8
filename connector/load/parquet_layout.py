"""Where the files of a Parquet dataset go: folders, partitions, file names.

These helpers implement the layout, partitioning and replacement rules that
the `connector.load.parquet` module docstring describes.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from connector.errors import SchemaError

if TYPE_CHECKING:
    from connector.datasets import Dataset
    from connector.windows import Window


#: Partition value of rows whose date column is null.
NULL_PARTITION = "__null__"

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


def _kept_name(old_name: str, load_id: str, staged_name: str) -> str:
    """Name the file of rows an upsert keeps from the data file `old_name`.

    The name keeps the old file's window, so later windowed loads replace
    the kept rows exactly as they would have replaced the old file.
    """
    match = _FILE_WINDOW.match(old_name)
    window_id = "_".join(match.groups()) if match else "nowindow"
    return f"part-{window_id}-{load_id}-{staged_name}"


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
