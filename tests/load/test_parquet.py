"""The Parquet sink, on local folders and fsspec's in-memory filesystem."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from connector.datasets import Dataset, rejects_schema
from connector.errors import ConfigError, DataError, LoadError, SchemaError
from connector.load import parquet_staging
from connector.load.parquet import (
    dataset_root,
    open_parquet_writer,
    partition_key,
    read_parquet_dataset,
)
from connector.load.parquet_duplicates import _DeduplicatingWriter
from connector.windows import Window

CASES_SCHEMA = Path(__file__).parents[1] / "cases" / "schema.json"

PAYMENTS = Dataset.from_dict(
    {
        "view": "payments",
        "aggregation": "detail",
        "key": ["token"],
        "date_column": "created_time",
        "columns": [
            {"field": "token", "type": "character varying(36)", "nullable": False},
            {"field": "created_time", "type": "timestamp without time zone"},
            {"field": "post_date", "type": "date"},
            {"field": "amount", "type": "numeric(18,2)"},
            {"field": "rate", "type": "numeric"},
            {"field": "installments", "type": "integer"},
            {"field": "sequence", "type": "bigint"},
            {"field": "priority", "type": "smallint"},
            {"field": "is_recurring", "type": "boolean"},
            {"field": "merchant_name", "type": "TEXT"},
        ],
    }
)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _row(token: str, created: str | None, **values) -> dict:
    row = dict.fromkeys(PAYMENTS.column_names)
    row.update(token=token, created_time=_ts(created) if created else None)
    row.update(values)
    return row


EVERY_TYPE_ROWS = [
    _row(
        "t1",
        "2024-03-01T00:00:00",
        post_date=date(2024, 3, 1),
        amount=Decimal("-0.01"),
        rate=Decimal("-12345678901234567890123456789.123456789"),
        installments=None,
        sequence=-(2**63),
        priority=-(2**15),
        is_recurring=True,
        merchant_name="Café Zürich 東京 🚀",
    ),
    _row(
        "t2",
        "2024-03-01T23:59:59.999999",
        post_date=date(2024, 3, 2),
        amount=Decimal("9999999999999999.99"),
        rate=Decimal("0.000000001"),
        installments=2**31 - 1,
        sequence=2**63 - 1,
        priority=2**15 - 1,
        is_recurring=False,
        merchant_name="",
    ),
    _row("t3", "2024-03-02T00:00:00.000001", amount=Decimal("-123.40")),
    _row("t4", None, post_date=date(1969, 12, 31), installments=-7),
    _row("t5", "1969-12-31T23:59:59.999999", is_recurring=None),
]


def _batch(rows: list[dict], dataset: Dataset = PAYMENTS) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=dataset.arrow_schema())


def _day_rows(day: str, count: int, label: str) -> list[dict]:
    return [
        _row(f"{label}-{day}-{n}", f"{day}T{n % 24:02d}:00:00", merchant_name=label)
        for n in range(count)
    ]


def _load(destination, rows, window=None, dataset=PAYMENTS, token="tok-123456789"):
    writer = open_parquet_writer(destination, dataset)
    if rows:
        writer.write(_batch(rows, dataset))
    return writer.commit(window, token)


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    fs, path = fsspec.core.url_to_fs(root)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _hive_table(root: str) -> pa.Table:
    fs, path = _filesystem(root)
    return ds.dataset(
        path, format="parquet", partitioning="hive", filesystem=fs
    ).to_table()


def _data_files(root: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path):
        return []
    names = [name[len(path) :].lstrip("/") for name in fs.find(path)]
    return sorted(n for n in names if not n.startswith("_") and "/." not in "/" + n)


def _tokens(table: pa.Table) -> list[str]:
    return sorted(table.column("token").to_pylist())


@pytest.fixture(params=["local", "file-url", "memory"])
def destination(request, tmp_path):
    """A fresh destination: a local folder, or a `memory://` URL removed after."""
    if request.param == "local":
        yield str(tmp_path / "out")
        return
    if request.param == "file-url":
        yield f"file://{tmp_path}/out"
        return
    url = f"memory://parquet-tests-{uuid.uuid4().hex}"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_round_trip_keeps_every_value_and_type(destination):
    result = _load(
        destination, EVERY_TYPE_ROWS, Window(date(2024, 3, 1), date(2024, 3, 2))
    )

    expected = pa.Table.from_pylist(EVERY_TYPE_ROWS, schema=PAYMENTS.arrow_schema())
    table = read_parquet_dataset(destination, PAYMENTS)
    assert result.rows_written == 5
    assert table.schema == PAYMENTS.arrow_schema()
    assert table.sort_by("token").equals(expected.sort_by("token"))


def test_pyarrow_dataset_reads_exact_types(destination):
    _load(destination, EVERY_TYPE_ROWS)

    table = _hive_table(dataset_root(destination, PAYMENTS))
    expected = pa.Table.from_pylist(EVERY_TYPE_ROWS, schema=PAYMENTS.arrow_schema())
    for field in PAYMENTS.arrow_schema():
        assert table.schema.field(field.name).type == field.type, field.name
    data = table.select(PAYMENTS.column_names).cast(PAYMENTS.arrow_schema())
    assert data.sort_by("token").equals(expected.sort_by("token"))
    assert sorted(set(table.column("date").to_pylist())) == [
        "1969-12-31",
        "2024-03-01",
        "2024-03-02",
        "__null__",
    ]


def test_pandas_reads_every_row_and_type(destination):
    _load(destination, EVERY_TYPE_ROWS)
    root = dataset_root(destination, PAYMENTS)

    arrow_backed = pd.read_parquet(root, dtype_backend="pyarrow")
    for field in PAYMENTS.arrow_schema():
        assert arrow_backed[field.name].dtype.pyarrow_dtype == field.type, field.name

    frame = pd.read_parquet(root).sort_values("token").reset_index(drop=True)
    assert frame["token"].tolist() == ["t1", "t2", "t3", "t4", "t5"]
    assert str(frame["created_time"].dtype) == "datetime64[us, UTC]"
    assert frame.loc[1, "created_time"] == pd.Timestamp("2024-03-01T23:59:59.999999Z")
    assert frame.loc[0, "amount"] == Decimal("-0.01")
    assert frame.loc[0, "rate"] == Decimal("-12345678901234567890123456789.123456789")
    assert frame.loc[0, "merchant_name"] == "Café Zürich 東京 🚀"
    assert frame.loc[1, "sequence"] == 2**63 - 1


def test_partitions_by_utc_day_with_null_partition(tmp_path):
    _load(tmp_path, EVERY_TYPE_ROWS)

    folders = {
        name.split("/")[0]
        for name in _data_files(dataset_root(str(tmp_path), PAYMENTS))
    }
    assert folders == {
        "date=1969-12-31",
        "date=2024-03-01",
        "date=2024-03-02",
        "date=__null__",
    }
    root = Path(dataset_root(str(tmp_path), PAYMENTS))
    assert _tokens(pq.read_table(root / "date=2024-03-01", partitioning=None)) == [
        "t1",
        "t2",
    ]


def test_dataset_root_with_and_without_aggregation():
    no_aggregation = Dataset("transactiontoken", "", (), None, PAYMENTS.columns)

    assert (
        dataset_root("s3://bucket/lake/", PAYMENTS)
        == "s3://bucket/lake/payments/detail"
    )
    assert dataset_root("/data", no_aggregation) == "/data/transactiontoken"


def _with_date_columns(*names: str) -> Dataset:
    columns = [{"field": "token", "type": "varchar(10)", "nullable": False}]
    columns += [{"field": name, "type": "date"} for name in names]
    return Dataset.from_dict(
        {
            "view": "daily",
            "aggregation": "day",
            "key": ["token"],
            "date_column": names[0],
            "columns": columns,
        }
    )


@pytest.mark.parametrize(
    ("names", "key"),
    [
        (("post_date",), "date"),
        (("date",), "partition_date"),
        (("date", "partition_date"), "partition_date_1"),
    ],
)
def test_partition_key_avoids_column_names(names, key):
    assert partition_key(_with_date_columns(*names)) == key


def test_date_column_named_date_reads_back(destination):
    dataset = _with_date_columns("date", "partition_date")
    rows = [
        {"token": "a", "date": date(2024, 5, 1), "partition_date": None},
        {"token": "b", "date": date(2024, 5, 2), "partition_date": date(2020, 1, 1)},
    ]
    _load(destination, rows, dataset=dataset)
    root = dataset_root(destination, dataset)

    assert _data_files(root)[0].startswith("partition_date_1=2024-05-01/")
    table = _hive_table(root)
    assert table.schema.field("date").type == pa.date32()
    assert table.schema.field("partition_date").type == pa.date32()
    frame = pd.read_parquet(root, dtype_backend="pyarrow").sort_values("token")
    assert frame["date"].tolist() == [date(2024, 5, 1), date(2024, 5, 2)]
    assert frame["partition_date_1"].astype(str).tolist() == [
        "2024-05-01",
        "2024-05-02",
    ]


def test_reload_replaces_only_window_partitions(destination):
    first = Window(date(2024, 3, 1), date(2024, 3, 3))
    second = Window(date(2024, 3, 4), date(2024, 3, 5))
    old_rows = [
        r
        for day in ("2024-03-01", "2024-03-02", "2024-03-03")
        for r in _day_rows(day, 3, "old")
    ]
    other_rows = [
        r for day in ("2024-03-04", "2024-03-05") for r in _day_rows(day, 2, "other")
    ]
    _load(destination, old_rows, first)
    _load(destination, other_rows, second)
    root = dataset_root(destination, PAYMENTS)
    other_files = [
        name
        for name in _data_files(root)
        if "2024-03-04" in name or "2024-03-05" in name
    ]

    new_rows = _day_rows("2024-03-01", 1, "new") + _day_rows("2024-03-02", 2, "new")
    result = _load(destination, new_rows, first)

    table = read_parquet_dataset(destination, PAYMENTS)
    assert _tokens(table) == sorted(r["token"] for r in new_rows + other_rows)
    assert result.details["files_replaced"] == 3
    folders = {name.split("/")[0] for name in _data_files(root)}
    assert "date=2024-03-03" not in folders
    assert [
        n for n in _data_files(root) if "2024-03-04" in n or "2024-03-05" in n
    ] == other_files
    fs, path = fsspec.core.url_to_fs(root)
    leftovers = [n for n in fs.find(path) if "/." in n or "/_staging/" in n]
    assert leftovers == []


def test_reload_of_empty_window_clears_its_days(destination):
    window = Window(date(2024, 3, 1), date(2024, 3, 2))
    _load(
        destination,
        _day_rows("2024-03-01", 2, "old") + _day_rows("2024-03-09", 1, "keep"),
    )

    result = _load(destination, [], window)

    assert result.rows_written == 0
    assert _tokens(read_parquet_dataset(destination, PAYMENTS)) == ["keep-2024-03-09-0"]


def _amounts(table: pa.Table) -> dict[str, Decimal]:
    return dict(
        zip(table["token"].to_pylist(), table["amount"].to_pylist(), strict=True)
    )


def test_load_without_window_upserts_into_windowed_day(destination):
    day = Window(date(2024, 3, 1), date(2024, 3, 1))
    rows = [{**r, "amount": Decimal("5.00")} for r in _day_rows("2024-03-01", 40, "w")]
    _load(destination, rows, day)
    changed = {**rows[7], "amount": Decimal("99.99")}

    updated = _load(destination, [changed])
    table = read_parquet_dataset(destination, PAYMENTS)
    inserted = _load(destination, [_row("hand-1", "2024-03-01T12:00:00")])

    assert table.num_rows == 40
    assert _amounts(table)[changed["token"]] == Decimal("99.99")
    assert [r["amount"] for r in table.to_pylist()].count(Decimal("5.00")) == 39
    assert (updated.rows_written, updated.rows_updated, updated.rows_inserted) == (
        1,
        1,
        0,
    )
    assert updated.details["rows_replaced"] == 1
    fs, _ = fsspec.core.url_to_fs(destination)
    assert json.loads(fs.cat(updated.details["manifest"]))["rows_replaced"] == 1
    assert inserted.details["rows_replaced"] == 0
    assert inserted.rows_inserted == 1
    final = read_parquet_dataset(destination, PAYMENTS)
    assert _tokens(final) == sorted([r["token"] for r in rows] + ["hand-1"])
    assert _amounts(final)[changed["token"]] == Decimal("99.99")


def test_upsert_keeps_window_of_rewritten_file(destination):
    day = Window(date(2024, 3, 1), date(2024, 3, 1))
    rows = _day_rows("2024-03-01", 4, "w")
    _load(destination, rows, day)
    _load(destination, [{**rows[0], "merchant_name": "fixed"}])
    root = dataset_root(destination, PAYMENTS)
    names = [name.split("/")[1] for name in _data_files(root)]

    reload = _load(destination, _day_rows("2024-03-01", 2, "again"), day)

    kept = [n for n in names if n.startswith("part-20240301_20240301-")]
    assert len(names) == 2
    assert len(kept) == 1
    assert "-kept-" in kept[0]
    assert reload.details["files_replaced"] == 2
    assert _tokens(read_parquet_dataset(destination, PAYMENTS)) == [
        "again-2024-03-01-0",
        "again-2024-03-01-1",
    ]


LINES = Dataset.from_dict(
    {
        "view": "lines",
        "aggregation": "detail",
        "key": ["token", "line"],
        "date_column": "created_time",
        "columns": [
            {"field": "token", "type": "varchar(36)", "nullable": False},
            {"field": "line", "type": "integer", "nullable": False},
            {"field": "created_time", "type": "timestamp without time zone"},
            {"field": "amount", "type": "numeric(18,2)"},
        ],
    }
)


def _line(token: str, line: int, amount: str) -> dict:
    created = _ts("2024-03-01T10:00:00")
    return {
        "token": token,
        "line": line,
        "created_time": created,
        "amount": Decimal(amount),
    }


def test_upsert_matches_every_column_of_composite_key(destination):
    old = [_line("a", 1, "1"), _line("a", 2, "2"), _line("a1", 2, "3")]
    _load(destination, old, Window(date(2024, 3, 1), date(2024, 3, 1)), LINES)

    result = _load(
        destination, [_line("a", 2, "20"), _line("a", 12, "4")], dataset=LINES
    )

    table = read_parquet_dataset(destination, LINES)
    lines = {(r["token"], r["line"]): r["amount"] for r in table.to_pylist()}
    assert lines == {
        ("a", 1): Decimal("1.00"),
        ("a", 2): Decimal("20.00"),
        ("a1", 2): Decimal("3.00"),
        ("a", 12): Decimal("4.00"),
    }
    assert result.details["rows_replaced"] == 1
    assert (result.rows_inserted, result.rows_updated) == (1, 1)


def test_upsert_moves_key_to_other_day(destination):
    old = _day_rows("2024-03-01", 3, "old") + _day_rows("2024-03-02", 3, "old")
    _load(destination, old, Window(date(2024, 3, 1), date(2024, 3, 2)))
    root = dataset_root(destination, PAYMENTS)
    day_two_files = [n for n in _data_files(root) if "2024-03-02" in n]
    moved = _row("old-2024-03-01-0", "2024-03-02T09:00:00", merchant_name="moved")
    added = _row("hand-1", "2024-03-01T09:00:00")

    result = _load(destination, [moved, added])

    table = read_parquet_dataset(destination, PAYMENTS)
    assert _tokens(table) == sorted([r["token"] for r in old] + ["hand-1"])
    row = next(r for r in table.to_pylist() if r["token"] == moved["token"])
    assert row["merchant_name"] == "moved"
    assert row["created_time"] == moved["created_time"]
    assert result.details["rows_replaced"] == 1
    assert set(day_two_files) <= set(_data_files(root))


def test_upsert_into_unpartitioned_dataset(destination):
    dataset = Dataset("cards", "", ("token",), None, PAYMENTS.columns)
    _load(destination, _day_rows("2024-03-01", 3, "old"), dataset=dataset)
    changed = _row("old-2024-03-01-1", None, merchant_name="changed")

    _load(destination, [changed, _row("new", None)], dataset=dataset)

    table = read_parquet_dataset(destination, dataset)
    assert _tokens(table) == [
        "new",
        "old-2024-03-01-0",
        "old-2024-03-01-1",
        "old-2024-03-01-2",
    ]
    names = {r["token"]: r["merchant_name"] for r in table.to_pylist()}
    assert names["old-2024-03-01-1"] == "changed"
    assert names["old-2024-03-01-0"] == "old"


def test_keyless_load_without_window_replaces_days(destination):
    dataset = Dataset("events", "detail", (), "created_time", PAYMENTS.columns)
    old = _day_rows("2024-03-01", 2, "old") + _day_rows("2024-03-02", 2, "old")
    _load(destination, old, dataset=dataset)

    _load(destination, _day_rows("2024-03-02", 1, "new"), dataset=dataset)

    assert _tokens(read_parquet_dataset(destination, dataset)) == [
        "new-2024-03-02-0",
        "old-2024-03-01-0",
        "old-2024-03-01-1",
    ]


def test_hour_window_replaces_only_its_hour(destination):
    def hour(h: int) -> Window:
        return Window(datetime(2024, 3, 1, h), datetime(2024, 3, 1, h, 59, 59))

    def rows(h: int, label: str) -> list[dict]:
        return [_row(f"{label}-{h}", f"2024-03-01T{h:02d}:30:00")]

    _load(destination, rows(0, "old"), hour(0))
    _load(destination, rows(1, "old"), hour(1))

    _load(destination, rows(0, "new"), hour(0))

    assert _tokens(read_parquet_dataset(destination, PAYMENTS)) == ["new-0", "old-1"]


def test_rows_outside_window_replace_same_window_only(destination):
    day_one = Window(date(2024, 3, 1), date(2024, 3, 1))
    day_two = Window(date(2024, 3, 2), date(2024, 3, 2))
    _load(destination, _day_rows("2024-03-02", 2, "own"), day_two)
    spill = [_row("spill-old", "2024-03-02T03:00:00")]
    _load(destination, _day_rows("2024-03-01", 1, "one") + spill, day_one)

    spill = [_row("spill-new", "2024-03-02T04:00:00")]
    _load(destination, _day_rows("2024-03-01", 1, "one") + spill, day_one)

    assert _tokens(read_parquet_dataset(destination, PAYMENTS)) == [
        "one-2024-03-01-0",
        "own-2024-03-02-0",
        "own-2024-03-02-1",
        "spill-new",
    ]


def test_abort_leaves_dataset_unchanged(destination):
    _load(destination, _day_rows("2024-03-01", 3, "old"))
    root = dataset_root(destination, PAYMENTS)
    files_before = _data_files(root)

    writer = open_parquet_writer(destination, PAYMENTS, row_group_rows=2)
    writer.write(_batch(_day_rows("2024-03-01", 5, "new")))
    staged_tokens = _tokens(read_parquet_dataset(destination, PAYMENTS))
    writer.abort()

    assert staged_tokens == [f"old-2024-03-01-{n}" for n in range(3)]
    assert _tokens(pd.read_parquet(root).pipe(pa.Table.from_pandas)) == staged_tokens
    assert _data_files(root) == files_before
    fs, path = fsspec.core.url_to_fs(root)
    assert not fs.exists(f"{path}/_staging") or not fs.ls(f"{path}/_staging")


def test_uncommitted_writer_is_invisible_to_readers(destination):
    _load(destination, _day_rows("2024-03-01", 2, "old"))
    root = dataset_root(destination, PAYMENTS)

    # A writer that is never committed nor aborted, as after a crash. Its
    # queue of flushes is bounded, so most of these row groups are on disk.
    writer = open_parquet_writer(destination, PAYMENTS, row_group_rows=2)
    rows = _day_rows("2024-03-01", 8, "new") + _day_rows("2024-03-07", 8, "new")
    for start in range(0, len(rows), 2):
        writer.write(_batch(rows[start : start + 2]))
    fs, path = fsspec.core.url_to_fs(root)
    staged = [name for name in fs.find(f"{path}/_staging") if name.endswith(".parquet")]

    assert staged, "the writer should have flushed row groups to staging files"
    expected = ["old-2024-03-01-0", "old-2024-03-01-1"]
    assert _tokens(_hive_table(root)) == expected
    assert _tokens(pa.Table.from_pandas(pd.read_parquet(root))) == expected
    assert _tokens(read_parquet_dataset(destination, PAYMENTS)) == expected


class _ManifestMoveFails(MemoryFileSystem):
    """An in-memory filesystem whose move into `_manifests/` fails."""

    def mv(self, path1, path2, *args, **kwargs):
        if "/_manifests/" in str(path2):
            raise OSError(f"simulated failure moving {path2}")
        return super().mv(path1, path2, *args, **kwargs)


def test_failed_commit_restores_previous_files():
    fs = _ManifestMoveFails()
    destination = f"/parquet-tests-{uuid.uuid4().hex}"
    root = dataset_root(destination, PAYMENTS)
    try:
        fs.mkdir(root)
        pq.write_table(
            pa.Table.from_batches([_batch(_day_rows("2024-03-01", 2, "old"))]),
            f"{root}/date=2024-03-01/part-legacy.parquet",
            filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)),
        )
        writer = open_parquet_writer(destination, PAYMENTS, filesystem=fs)
        writer.write(_batch(_day_rows("2024-03-01", 3, "new")))

        with pytest.raises(LoadError, match="left as it was"):
            writer.commit(Window(date(2024, 3, 1), date(2024, 3, 1)), None)
        writer.abort()

        table = read_parquet_dataset(destination, PAYMENTS, filesystem=fs)
        assert _tokens(table) == ["old-2024-03-01-0", "old-2024-03-01-1"]
        assert fs.ls(f"{root}/date=2024-03-01", detail=False) == [
            f"{root}/date=2024-03-01/part-legacy.parquet"
        ]
    finally:
        fs.rm(destination, recursive=True)


def test_failed_upsert_restores_previous_files():
    fs = _ManifestMoveFails()
    destination = f"/parquet-tests-{uuid.uuid4().hex}"
    root = dataset_root(destination, PAYMENTS)
    legacy = f"{root}/date=2024-03-01/part-legacy.parquet"
    try:
        fs.mkdir(root)
        pq.write_table(
            pa.Table.from_batches([_batch(_day_rows("2024-03-01", 2, "old"))]),
            legacy,
            filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)),
        )
        writer = open_parquet_writer(destination, PAYMENTS, filesystem=fs)
        writer.write(_batch([_row("old-2024-03-01-0", "2024-03-01T05:00:00")]))

        with pytest.raises(LoadError, match="left as it was"):
            writer.commit(None, None)
        writer.abort()

        table = read_parquet_dataset(destination, PAYMENTS, filesystem=fs)
        assert _tokens(table) == ["old-2024-03-01-0", "old-2024-03-01-1"]
        assert table["merchant_name"].to_pylist() == ["old", "old"]
        assert fs.ls(f"{root}/date=2024-03-01", detail=False) == [legacy]
    finally:
        fs.rm(destination, recursive=True)


def test_manifest_records_files_and_checksums(destination):
    window = Window(date(2024, 3, 1), date(2024, 3, 2))
    result = _load(destination, EVERY_TYPE_ROWS, window, token="exp-token-SECRET-42")
    root = dataset_root(destination, PAYMENTS)
    fs, _ = fsspec.core.url_to_fs(root)

    text = fs.cat(result.details["manifest"]).decode()
    manifest = json.loads(text)
    assert manifest["dataset"] == "payments/detail"
    assert manifest["window"] == {"start": "2024-03-01", "end": "2024-03-02"}
    assert manifest["rows"] == 5
    assert manifest["export_token"] == "exp-to…"
    assert "SECRET" not in text
    assert manifest["compression"] == "zstd"
    assert datetime.fromisoformat(manifest["written_at"]).tzinfo is not None
    assert sorted(f["path"] for f in manifest["files"]) == _data_files(root)
    assert sum(f["rows"] for f in manifest["files"]) == 5
    assert manifest["bytes"] == sum(f["bytes"] for f in manifest["files"])
    assert manifest["bytes"] == result.details["bytes"]
    for entry in manifest["files"]:
        content = fs.cat(f"{root}/{entry['path']}")
        assert len(content) == entry["bytes"]
        assert hashlib.sha256(content).hexdigest() == entry["sha256"]
    assert result.details["manifest"].startswith(f"{root}/_manifests/")
    assert result.details["manifest"].endswith("-20240301_20240302.json")


def test_zero_row_load_reports_zero_and_keeps_types(tmp_path):
    dataset = Dataset.from_file(CASES_SCHEMA)
    writer = open_parquet_writer(str(tmp_path), dataset)
    writer.write(pa.RecordBatch.from_pylist([], schema=dataset.arrow_schema()))

    result = writer.commit(Window(date(2024, 1, 1), date(2024, 1, 2)), "token-abcdef")

    root = dataset_root(str(tmp_path), dataset)
    assert result.rows_written == 0
    assert result.details["files"] == []
    assert _data_files(root) == []
    manifest = json.loads(Path(result.details["manifest"]).read_text())
    assert manifest["rows"] == 0
    table = read_parquet_dataset(str(tmp_path), dataset)
    assert table.num_rows == 0
    assert table.schema == dataset.arrow_schema()


def test_unpartitioned_zero_row_load_writes_file(destination):
    dataset = Dataset("transactiontoken", "", (), None, PAYMENTS.columns)

    result = _load(destination, [], dataset=dataset)

    root = dataset_root(destination, dataset)
    assert result.rows_written == 0
    assert len(_data_files(root)) == 1
    table = _hive_table(root)
    assert table.num_rows == 0
    assert table.schema.types == PAYMENTS.arrow_schema().types
    assert len(pd.read_parquet(root).columns) == len(PAYMENTS.columns)


def test_unpartitioned_reload_replaces_all_files(destination):
    dataset = Dataset("transactiontoken", "", (), None, PAYMENTS.columns)
    _load(destination, _day_rows("2024-03-01", 3, "old"), dataset=dataset)

    _load(destination, _day_rows("2024-03-02", 2, "new"), dataset=dataset)

    root = dataset_root(destination, dataset)
    assert len(_data_files(root)) == 1
    assert _tokens(read_parquet_dataset(destination, dataset)) == [
        "new-2024-03-02-0",
        "new-2024-03-02-1",
    ]


def test_rejects_file_appears_on_commit(destination):
    rejects = pa.table(
        {
            "file": ["export.csv.gz"] * 2,
            "line": [7, 9],
            "column": ["amount", "created_time"],
            "reason": ["invalid decimal", "invalid timestamp"],
            "record": ["t9,x", "t10,y"],
        }
    )
    writer = open_parquet_writer(destination, PAYMENTS)
    writer.write(_batch(_day_rows("2024-03-01", 1, "ok")))
    writer.write_rejects(rejects)
    root = dataset_root(destination, PAYMENTS)
    fs, path = fsspec.core.url_to_fs(root)
    assert not fs.exists(f"{path}/_rejects")

    result = writer.commit(None, None)

    assert result.rows_rejected == 2
    with fs.open(result.details["rejects_file"], "rb") as handle:
        stored = pq.read_table(handle)
    assert stored.schema == rejects_schema()
    assert stored.column("line").to_pylist() == [7, 9]
    assert _tokens(_hive_table(root)) == ["ok-2024-03-01-0"]
    assert pd.read_parquet(root)["token"].tolist() == ["ok-2024-03-01-0"]


def test_row_groups_are_cut_at_row_group_rows(tmp_path):
    writer = open_parquet_writer(str(tmp_path), PAYMENTS, row_group_rows=1000)
    rows = _day_rows("2024-03-01", 2500, "r")
    for start in range(0, 2500, 700):
        writer.write(_batch(rows[start : start + 700]))
    result = writer.commit(None, None)

    (path,) = result.details["files"]
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [1000, 1000, 500]
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert _tokens(read_parquet_dataset(str(tmp_path), PAYMENTS)) == sorted(
        row["token"] for row in rows
    )


def test_memory_and_open_file_limits_keep_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_staging, "_MAX_BUFFERED_BYTES", 20_000)
    monkeypatch.setattr(parquet_staging, "_MAX_OPEN_FILES", 2)
    days = [f"2024-03-{d:02d}" for d in range(1, 6)]
    rows = [
        row for n in range(4) for day in days for row in _day_rows(day, 50, f"b{n}")
    ]
    writer = open_parquet_writer(str(tmp_path), PAYMENTS)
    for start in range(0, len(rows), 100):
        writer.write(_batch(rows[start : start + 100]))
    result = writer.commit(None, None)

    assert len(result.details["files"]) > len(days)
    table = read_parquet_dataset(str(tmp_path), PAYMENTS)
    assert _tokens(table) == sorted(row["token"] for row in rows)
    days = pc.cast(table["created_time"], pa.date32())
    first_day = table.filter(pc.equal(days, pa.scalar(date(2024, 3, 1))))
    assert first_day.num_rows == 200


def test_batch_with_other_schema_is_rejected(tmp_path):
    writer = open_parquet_writer(str(tmp_path), PAYMENTS)
    batch = _batch(EVERY_TYPE_ROWS).set_column(
        3, "amount", pa.array(["1.00"] * 5, pa.string())
    )

    with pytest.raises(SchemaError, match="amount is string, expected decimal128"):
        writer.write(batch)
    writer.abort()


def test_null_in_not_null_column_raises(tmp_path):
    writer = open_parquet_writer(str(tmp_path), PAYMENTS)
    batch = _batch(EVERY_TYPE_ROWS)
    tokens = pa.array(["t1", None, "t3", "t4", "t5"])
    batch = pa.RecordBatch.from_arrays(
        [tokens, *batch.columns[1:]], schema=PAYMENTS.arrow_schema()
    )

    with pytest.raises(DataError, match="token of payments/detail") as caught:
        writer.write(batch)
    writer.abort()
    assert caught.value.column == "token"


def test_date_column_of_text_type_raises(tmp_path):
    dataset = Dataset.from_dict(
        {
            "view": "notes",
            "aggregation": "detail",
            "key": ["token"],
            "date_column": "created",
            "columns": [
                {"field": "token", "type": "varchar(10)"},
                {"field": "created", "type": "TEXT"},
            ],
        }
    )

    with pytest.raises(SchemaError, match="date column created of type string"):
        open_parquet_writer(str(tmp_path), dataset)


def test_write_after_commit_raises(tmp_path):
    writer = open_parquet_writer(str(tmp_path), PAYMENTS)
    writer.commit(None, None)

    with pytest.raises(LoadError, match="committed"):
        writer.write(_batch(EVERY_TYPE_ROWS))
    writer.abort()
    assert read_parquet_dataset(str(tmp_path), PAYMENTS).num_rows == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression": "zip"}, "compression 'zip'"),
        ({"row_group_rows": 0}, "row group size 0"),
    ],
)
def test_invalid_options_raise_config_error(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        open_parquet_writer(str(tmp_path), PAYMENTS, **options)


def test_unknown_url_scheme_raises_config_error():
    with pytest.raises(ConfigError, match="nosuchscheme://bucket"):
        open_parquet_writer("nosuchscheme://bucket/lake", PAYMENTS)


# Duplicate keys within one load: the latest row of each key wins.

CASE_20 = Path(__file__).parents[1] / "cases" / "20-dup-pk-in-batch.csv"
CASE_20_TOKEN = "2f1fa8e8-deb6-4604-b35b-0b3514d0200e"
CASE_20_WINDOW = Window(date(2024, 3, 5), date(2024, 3, 5))


def _read_case_20(dataset: Dataset) -> pa.Table:
    """Read the CSV fault case typed with `dataset`'s schema, absent columns null."""
    schema = dataset.arrow_schema()
    types = {field.name: field.type for field in schema}
    csv = pacsv.read_csv(
        CASE_20, convert_options=pacsv.ConvertOptions(column_types=types)
    )
    columns = [
        csv.column(field.name).cast(field.type)
        if field.name in csv.column_names
        else pa.nulls(csv.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _write_in_batches(writer, table: pa.Table, batch_rows: int | None) -> None:
    size = batch_rows or table.num_rows
    for start in range(0, table.num_rows, size):
        for batch in table.slice(start, size).to_batches():
            writer.write(batch)


def _staged_rewrites(monkeypatch) -> list[str]:
    """Record the staged files that the duplicate step rewrites."""
    names: list[str] = []
    original = _DeduplicatingWriter._rewrite_without

    def spy(self, staged, rows_dropped):
        names.append(staged.name)
        return original(self, staged, rows_dropped)

    monkeypatch.setattr(_DeduplicatingWriter, "_rewrite_without", spy)
    return names


@pytest.mark.parametrize("batch_rows", [1, 2, None])
@pytest.mark.parametrize("window", [CASE_20_WINDOW, None])
def test_case_20_keeps_last_record_per_key(destination, batch_rows, window):
    dataset = Dataset.from_file(CASES_SCHEMA)
    rows = _read_case_20(dataset)
    assert rows.num_rows == 5
    writer = open_parquet_writer(destination, dataset)
    _write_in_batches(writer, rows, batch_rows)

    result = writer.commit(window, "token-abcdef")

    assert result.rows_written == 3
    assert result.rows_superseded == 2
    table = read_parquet_dataset(destination, dataset)
    assert table.num_rows == 3
    assert len(set(table.column("token").to_pylist())) == 3
    row = next(r for r in table.to_pylist() if r["token"] == CASE_20_TOKEN)
    assert row["state"] == "COMPLETION"
    assert row["amount"] == Decimal("24.50")
    assert row["transaction_timestamp"] == _ts("2024-03-05T10:09:00")
    fs, _ = fsspec.core.url_to_fs(destination)
    manifest = json.loads(fs.cat(result.details["manifest"]))
    assert manifest["rows"] == 3
    assert manifest["rows_superseded"] == 2
    assert sum(f["rows"] for f in manifest["files"]) == 3


def test_case_20_rerun_of_window_keeps_three_rows(destination):
    dataset = Dataset.from_file(CASES_SCHEMA)
    rows = _read_case_20(dataset)
    root = dataset_root(destination, dataset)

    results = []
    for _ in range(2):
        writer = open_parquet_writer(destination, dataset)
        _write_in_batches(writer, rows, 2)
        results.append(writer.commit(CASE_20_WINDOW, "token-abcdef"))

    assert [r.rows_superseded for r in results] == [2, 2]
    assert [r.rows_written for r in results] == [3, 3]
    assert _data_files(root) == sorted(
        f[len(root) + 1 :] for f in results[1].details["files"]
    )
    table = read_parquet_dataset(destination, dataset)
    assert table.num_rows == 3
    row = next(r for r in table.to_pylist() if r["token"] == CASE_20_TOKEN)
    assert row["amount"] == Decimal("24.50")


@pytest.mark.parametrize("window", [Window(date(2024, 3, 1), date(2024, 3, 2)), None])
def test_duplicate_key_on_later_day_wins(destination, window):
    old = _day_rows("2024-03-01", 2, "old")
    _load(destination, old, Window(date(2024, 3, 1), date(2024, 3, 1)))
    root = dataset_root(destination, PAYMENTS)
    # The later day comes first in input order, so the date decides alone.
    rows = [
        _row("moved", "2024-03-02T09:00:00", merchant_name="later day"),
        _row("stays", "2024-03-02T10:00:00"),
        _row("moved", "2024-03-01T23:00:00", merchant_name="earlier day"),
    ]
    if window is not None:
        rows += old

    result = _load(destination, rows, window)

    assert result.rows_superseded == 1
    assert result.rows_written == len(rows) - 1
    table = read_parquet_dataset(destination, PAYMENTS)
    assert _tokens(table) == sorted(["moved", "stays"] + [r["token"] for r in old])
    moved = [r for r in table.to_pylist() if r["token"] == "moved"]
    assert [r["merchant_name"] for r in moved] == ["later day"]
    day_one = [n for n in _data_files(root) if n.startswith("date=2024-03-01/")]
    assert day_one
    day_one_rows = _hive_table(f"{root}/date=2024-03-01")
    assert "moved" not in day_one_rows.column("token").to_pylist()


def test_superseded_day_with_no_rows_left_is_replaced(destination):
    window = Window(date(2024, 3, 1), date(2024, 3, 2))
    _load(destination, _day_rows("2024-03-01", 2, "old"), window)
    root = dataset_root(destination, PAYMENTS)
    rows = [
        _row("moved", "2024-03-01T23:00:00", merchant_name="earlier day"),
        _row("moved", "2024-03-02T09:00:00", merchant_name="later day"),
    ]

    result = _load(destination, rows, window)

    assert result.rows_superseded == 1
    assert result.rows_written == 1
    assert "date=2024-03-01" in result.details["partitions"]
    assert [n for n in _data_files(root) if "2024-03-01" in n] == []
    table = read_parquet_dataset(destination, PAYMENTS)
    assert table.to_pylist() == [
        _row("moved", "2024-03-02T09:00:00", merchant_name="later day")
    ]


def test_equal_dates_keep_later_row_across_files(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_staging, "_MAX_OPEN_FILES", 2)
    same_time = "2024-03-01T10:00:00"
    # Three days on two writer threads: days 1 and 3 share a thread with one
    # open file, so each of their rows lands in a new staging file.
    rows = []
    for label in ("first", "second", "third"):
        rows.append(_row("tied", same_time, merchant_name=label))
        rows.append(_row(f"b-{label}", "2024-03-02T10:00:00"))
        rows.append(_row(f"c-{label}", "2024-03-03T10:00:00"))
    writer = open_parquet_writer(str(tmp_path), PAYMENTS, row_group_rows=1)
    for row in rows:
        writer.write(_batch([row]))

    result = writer.commit(None, None)

    assert result.rows_superseded == 2
    root = dataset_root(str(tmp_path), PAYMENTS)
    assert len([n for n in result.details["files"] if "2024-03-03" in n]) == 3
    table = read_parquet_dataset(str(tmp_path), PAYMENTS)
    tied = [r for r in table.to_pylist() if r["token"] == "tied"]
    assert [r["merchant_name"] for r in tied] == ["third"]
    assert table.num_rows == 7
    assert result.details["staged_files_rewritten"] == 2
    assert len(_data_files(root)) == 5


def test_null_date_never_supersedes_dated_row(destination):
    rows = [
        _row("t", "2024-03-01T10:00:00", merchant_name="dated"),
        _row("t", None, merchant_name="no date"),
    ]

    result = _load(destination, rows)

    assert result.rows_superseded == 1
    table = read_parquet_dataset(destination, PAYMENTS)
    assert table.column("merchant_name").to_pylist() == ["dated"]


def test_composite_key_duplicates_need_every_column(destination):
    rows = [
        _line("a", 1, "1"),
        _line("a", 2, "2"),
        _line("a1", 1, "3"),
        _line("a", 1, "4"),
    ]

    result = _load(destination, rows, Window(date(2024, 3, 1), date(2024, 3, 1)), LINES)

    assert result.rows_superseded == 1
    assert result.rows_written == 3
    table = read_parquet_dataset(destination, LINES)
    lines = {(r["token"], r["line"]): r["amount"] for r in table.to_pylist()}
    assert lines == {
        ("a", 1): Decimal("4.00"),
        ("a", 2): Decimal("2.00"),
        ("a1", 1): Decimal("3.00"),
    }


def test_load_without_duplicates_keeps_staged_files(destination, monkeypatch):
    rewrites = _staged_rewrites(monkeypatch)
    rows = _day_rows("2024-03-01", 3, "a") + _day_rows("2024-03-02", 3, "a")

    result = _load(destination, rows, Window(date(2024, 3, 1), date(2024, 3, 2)))

    assert rewrites == []
    assert result.details["staged_files_rewritten"] == 0
    assert result.rows_superseded == 0
    assert result.rows_written == 6
    assert not any("deduplicated" in name for name in result.details["files"])


def test_duplicates_rewrite_only_affected_files(destination, monkeypatch):
    rewrites = _staged_rewrites(monkeypatch)
    rows = _day_rows("2024-03-01", 3, "a") + _day_rows("2024-03-02", 3, "a")
    rows.append(_row("a-2024-03-02-1", "2024-03-02T11:00:00", merchant_name="new"))

    result = _load(destination, rows, Window(date(2024, 3, 1), date(2024, 3, 2)))

    assert rewrites == ["0000.parquet"]
    assert result.details["staged_files_rewritten"] == 1
    day_two = [n for n in result.details["files"] if "2024-03-02" in n]
    assert len(day_two) == 1
    assert "deduplicated" in day_two[0]
    table = read_parquet_dataset(destination, PAYMENTS)
    names = {r["token"]: r["merchant_name"] for r in table.to_pylist()}
    assert names["a-2024-03-02-1"] == "new"
    assert table.num_rows == 6


def test_keyless_dataset_keeps_duplicate_rows(destination):
    dataset = Dataset("events", "detail", (), "created_time", PAYMENTS.columns)
    rows = [_row("same", "2024-03-01T10:00:00"), _row("same", "2024-03-01T10:00:00")]

    result = _load(destination, rows, dataset=dataset)

    assert result.rows_superseded == 0
    assert result.rows_written == 2
    assert read_parquet_dataset(destination, dataset).num_rows == 2


def test_unpartitioned_upsert_counts_deduplicated_keys(destination):
    dataset = Dataset("cards", "", ("token",), None, PAYMENTS.columns)
    _load(destination, _day_rows("2024-03-01", 2, "old"), dataset=dataset)
    rows = [
        _row("old-2024-03-01-1", None, merchant_name="first copy"),
        _row("new", None),
        _row("old-2024-03-01-1", None, merchant_name="second copy"),
    ]

    result = _load(destination, rows, dataset=dataset)

    assert result.rows_superseded == 1
    assert result.rows_written == 2
    assert result.rows_inserted == 1
    assert result.rows_updated == 1
    table = read_parquet_dataset(destination, dataset)
    names = {r["token"]: r["merchant_name"] for r in table.to_pylist()}
    assert names == {
        "old-2024-03-01-0": "old",
        "old-2024-03-01-1": "second copy",
        "new": None,
    }
    assert table.num_rows == 3


def test_foreign_file_in_partition_named(tmp_path):
    destination = str(tmp_path / "lake")
    _load(destination, _day_rows("2024-03-01", 2, "old"))
    folder = Path(dataset_root(destination, PAYMENTS)) / "date=2024-03-01"
    notes = folder / "notes.txt"
    notes.write_text("hi")

    with pytest.raises(LoadError, match="Cannot read .*notes.txt as Parquet") as caught:
        _load(destination, _day_rows("2024-03-01", 1, "new"))

    assert "move other files out" in str(caught.value)
    notes.unlink()
    assert _tokens(read_parquet_dataset(destination, PAYMENTS)) == [
        "old-2024-03-01-0",
        "old-2024-03-01-1",
    ]


def test_within_span_handles_nulls_and_slices():
    from connector.load.parquet_upsert import _within

    stamps = pa.chunked_array(
        [
            [_ts("2024-03-01T23:59:59"), None],
            [_ts("2024-03-02T00:00:00"), _ts("2024-03-02T23:59:59.999999")],
            [_ts("2024-03-03T00:00:00")],
        ]
    )
    day = (datetime(2024, 3, 2), datetime(2024, 3, 3))

    assert _within(stamps, *day).to_pylist() == [False, False, True, True, False]
    assert _within(stamps.slice(2, 2), *day).to_pylist() == [True, True]
    assert _within(stamps.slice(0, 0), *day).to_pylist() == []
