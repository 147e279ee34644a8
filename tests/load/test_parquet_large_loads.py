"""Parquet loads of many rows: integer keys, dictionary encoding, row grouping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector.datasets import Dataset
from connector.load.parquet import open_parquet_writer, read_parquet_dataset
from connector.load.parquet_duplicates import _DeduplicatingWriter

ORDERS = Dataset.from_dict(
    {
        "view": "orders",
        "aggregation": "detail",
        "key": ["order_id"],
        "date_column": "created_time",
        "columns": [
            {"field": "order_id", "type": "bigint", "nullable": False},
            {"field": "created_time", "type": "timestamp", "nullable": False},
            {"field": "reference", "type": "character varying(40)"},
            {"field": "state", "type": "character varying(20)"},
        ],
    }
)
START = datetime(2024, 3, 1, tzinfo=UTC)


def _orders(ids: range, label: str, days: int = 1) -> pa.RecordBatch:
    """Orders `ids`, one second apart, dealt round-robin over `days` days."""
    return pa.RecordBatch.from_pylist(
        [
            {
                "order_id": n,
                "created_time": START + timedelta(days=n % days, seconds=n // days),
                "reference": f"{label}-{n:08d}",
                "state": ("OPEN", "PAID", "SHIPPED")[n % 3],
            }
            for n in ids
        ],
        schema=ORDERS.arrow_schema(),
    )


@pytest.fixture
def rewrites(monkeypatch):
    """Record the staged files that the duplicate-key step rewrites."""
    names = []
    original = _DeduplicatingWriter._rewrite_without

    def spy(self, staged, rows_dropped):
        names.append(staged.name)
        return original(self, staged, rows_dropped)

    monkeypatch.setattr(_DeduplicatingWriter, "_rewrite_without", spy)
    return names


def test_integer_key_repeated_across_batches(tmp_path, rewrites):
    writer = open_parquet_writer(str(tmp_path), ORDERS)
    writer.write(_orders(range(0, 3000), "first"))
    writer.write(_orders(range(2990, 6000), "second"))

    result = writer.commit(None, None)

    assert result.rows_superseded == 10
    assert rewrites
    table = read_parquet_dataset(str(tmp_path), ORDERS).sort_by("order_id")
    assert table.num_rows == 6000
    references = table.column("reference").to_pylist()
    assert references[2989] == "first-00002989"
    assert references[2990] == "second-00002990"


def test_integer_keys_without_repeats(tmp_path, rewrites):
    writer = open_parquet_writer(str(tmp_path), ORDERS)
    for start in range(0, 20_000, 5000):
        writer.write(_orders(range(start, start + 5000), "only"))

    result = writer.commit(None, None)

    assert result.rows_superseded == 0
    assert rewrites == []
    assert read_parquet_dataset(str(tmp_path), ORDERS).num_rows == 20_000


def _dictionary_encoded(path: str) -> dict[str, bool]:
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(0)
    return {
        group.column(i).path_in_schema: any(
            "DICTIONARY" in encoding for encoding in group.column(i).encodings
        )
        for i in range(group.num_columns)
    }


def test_dictionary_encoding_repeating_columns(tmp_path):
    writer = open_parquet_writer(str(tmp_path), ORDERS)
    writer.write(_orders(range(20_000), "ref"))

    result = writer.commit(None, None)

    (path,) = result.details["files"]
    assert _dictionary_encoded(path) == {
        "order_id": False,
        "created_time": False,
        "reference": False,
        "state": True,
    }


def test_dictionary_encoding_small_load(tmp_path):
    writer = open_parquet_writer(str(tmp_path), ORDERS)
    writer.write(_orders(range(100), "ref"))

    result = writer.commit(None, None)

    (path,) = result.details["files"]
    assert all(_dictionary_encoded(path).values())


def test_many_days_keep_row_order(tmp_path):
    writer = open_parquet_writer(str(tmp_path), ORDERS)
    # 30 days, interleaved: consecutive ids fall on different days.
    ids = list(range(90_000))
    for start in range(0, len(ids), 7000):
        writer.write(_orders(range(start, min(start + 7000, len(ids))), "r", days=30))

    result = writer.commit(None, None)

    assert result.rows_written == 90_000
    assert len(result.details["partitions"]) == 30
    for path in result.details["files"]:
        ids_in_file = pq.read_table(path, columns=["order_id"])["order_id"].to_pylist()
        assert ids_in_file == sorted(ids_in_file)
    table = read_parquet_dataset(str(tmp_path), ORDERS)
    assert sorted(table.column("order_id").to_pylist()) == ids
