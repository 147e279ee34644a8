"""Reading exports: error context, quarantine, encoding, record structure."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal

import pyarrow as pa
import pytest

from connector.datasets import rejects_schema
from connector.errors import DataError
from connector.settings import Settings
from connector.transform import TransformOptions, count_records, read_export
from connector.transform import csv as csv_module

from .conftest import CASE_HEADER, CASES, case_row, read_rows, write_csv

BAD_AMOUNTS = (
    "\r\n".join(
        [
            CASE_HEADER,
            case_row("a", amount="1.00"),
            case_row("b", amount="1.001"),
            case_row("c", merchant_name='"Two\r\nLines"'),
            case_row("d", amount="x", currency_code="EURO"),
            case_row("e", amount="5.00"),
        ]
    )
    + "\r\n"
)


@pytest.mark.parametrize("chunk_bytes", [64, 300, 1 << 20])
def test_value_error_names_line_column_value(tmp_path, cases_dataset, chunk_bytes):
    path = write_csv(tmp_path, BAD_AMOUNTS)

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset, chunk_bytes=chunk_bytes)

    error = info.value
    assert error.path == str(path)
    assert error.line == 3
    assert error.column == "amount"
    assert error.value == "1.001"
    assert "numeric(18,2)" in str(error)
    assert "decimal point" in str(error)


def test_line_counts_multiline_record_by_first_line(tmp_path, cases_dataset):
    text = BAD_AMOUNTS.replace(case_row("b", amount="1.001"), case_row("b"))
    path = write_csv(tmp_path, text, "export.csv.gz")

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset)

    assert info.value.line == 6
    assert info.value.column == "amount"
    assert info.value.value == "x"


def test_quarantine_keeps_bad_rows_whole(tmp_path, cases_dataset):
    path = write_csv(tmp_path, BAD_AMOUNTS)

    rows, reader = read_rows(
        path, cases_dataset, on_bad_rows="quarantine", chunk_bytes=64
    )
    rejects = reader.rejects()

    assert [row["token"] for row in rows] == ["a", "c", "e"]
    assert rows[1]["merchant_name"] == "Two\r\nLines"
    assert rejects.schema == rejects_schema()
    assert rejects.to_pylist() == [
        {
            "file": str(path),
            "line": 3,
            "column": "amount",
            "reason": (
                "more than 2 digits after the decimal point; values are never rounded"
            ),
            "record": case_row("b", amount="1.001"),
        },
        {
            "file": str(path),
            "line": 6,
            "column": "amount",
            "reason": "not a decimal number",
            "record": case_row("d", amount="x", currency_code="EURO"),
        },
    ]
    assert reader.report.rows_read == 5
    assert reader.report.rows_rejected == 2
    assert reader.report.rows_loaded == 3


def test_quarantine_without_bad_rows_has_empty_rejects(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER}\n{case_row('a')}\n")

    rows, reader = read_rows(path, cases_dataset, on_bad_rows="quarantine")

    assert len(rows) == 1
    assert reader.rejects().num_rows == 0
    assert reader.rejects().schema == rejects_schema()


def test_wrong_field_count_raises_with_line(tmp_path, cases_dataset):
    text = f"{CASE_HEADER}\n{case_row('a')}\n{case_row('b')},extra\n{case_row('c')}\n"
    path = write_csv(tmp_path, text)

    with pytest.raises(DataError, match="different number of fields") as info:
        read_rows(path, cases_dataset)

    assert info.value.line == 3


def test_wrong_field_count_quarantined(tmp_path, cases_dataset):
    text = (
        f"{CASE_HEADER}\n{case_row('a')}\n{case_row('b')},extra\n"
        f"{case_row('c', amount='z')}\nshort,row\n{case_row('d')}\n"
    )
    path = write_csv(tmp_path, text)

    rows, reader = read_rows(path, cases_dataset, on_bad_rows="quarantine")
    rejects = reader.rejects().to_pylist()

    assert [row["token"] for row in rows] == ["a", "d"]
    assert [(r["line"], r["column"]) for r in rejects] == [
        (3, None),
        (4, "amount"),
        (5, None),
    ]
    assert rejects[0]["reason"] == "12 fields, the header has 11"
    assert rejects[2]["record"] == "short,row"
    assert reader.report.rows_read == 5
    assert reader.report.rows_rejected == 3


def test_invalid_utf8_raises_with_line(tmp_path, cases_dataset):
    data = (
        f"{CASE_HEADER}\n{case_row('a')}\n".encode()
        + case_row("b", merchant_name="Caf\udce9").encode("utf-8", "surrogateescape")
        + b"\n"
    )
    path = write_csv(tmp_path, data)

    with pytest.raises(DataError, match="not valid UTF-8") as info:
        read_rows(path, cases_dataset)

    assert info.value.line == 3


def test_invalid_utf8_in_header_raises(tmp_path, cases_dataset):
    path = write_csv(tmp_path, b"tok\xffen,amount\n1,2\n")

    with pytest.raises(DataError, match="not valid UTF-8") as info:
        read_export(path, cases_dataset, TransformOptions())

    assert info.value.line == 1


def test_utf8_text_kept_exactly(tmp_path, cases_dataset):
    names = ["Café Zürich", "Łódź Kebab", "東京ラーメン"]
    rows_text = [case_row(str(i), merchant_name=name) for i, name in enumerate(names)]
    path = write_csv(tmp_path, "\n".join([CASE_HEADER, *rows_text]) + "\n")

    rows, _ = read_rows(path, cases_dataset)

    assert [row["merchant_name"] for row in rows] == names


def test_empty_cell_and_quoted_empty_are_null(tmp_path, cases_dataset):
    text = f"{CASE_HEADER}\n{case_row('a', mcc='', merchant_name=chr(34) * 2)}\n"
    path = write_csv(tmp_path, text)

    rows, _ = read_rows(path, cases_dataset)

    assert rows[0]["mcc"] is None
    assert rows[0]["merchant_name"] is None


def test_null_in_required_column_raises(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER}\n{case_row('a', amount='')}\n")

    with pytest.raises(DataError, match="does not allow nulls") as info:
        read_rows(path, cases_dataset)

    assert info.value.line == 2
    assert info.value.column == "amount"


def test_very_long_field_read_whole(tmp_path, cases_dataset):
    memo = "m" * 300_000
    header = CASE_HEADER + ",memo"
    path = write_csv(tmp_path, f"{header}\n{case_row('a')},{memo}\n{case_row('b')},\n")

    rows, reader = read_rows(path, cases_dataset, chunk_bytes=64 * 1024)

    assert [len(row["memo"] or "") for row in rows] == [300_000, 0]
    assert reader.report.rows_read == 2


def test_count_records_counts_records_not_lines(tmp_path):
    multiline = case_row("a", merchant_name='"x\ny"')
    text = f"{CASE_HEADER}\r\n{multiline}\r\n\r\n{case_row('b')}\r\n"
    path = write_csv(tmp_path, text, "e.csv.gz")

    assert count_records(path, TransformOptions(chunk_bytes=50)) == 2


def test_count_records_header_only(tmp_path):
    path = write_csv(tmp_path, CASE_HEADER + "\n", "e.csv.gz")

    assert count_records(path, TransformOptions()) == 0


def test_batches_share_one_schema_across_chunks(tmp_path, cases_dataset):
    lines = [case_row(str(i), amount=f"{i}.50") for i in range(2000)]
    path = write_csv(tmp_path, "\n".join([CASE_HEADER, *lines]) + "\n")

    with read_export(path, cases_dataset, TransformOptions(chunk_bytes=4096)) as reader:
        batches = list(reader)

    assert len(batches) > 10
    assert {batch.schema for batch in batches} == {cases_dataset.arrow_schema()}
    table = pa.Table.from_batches(batches)
    assert table.column("amount").to_pylist()[-1] == Decimal("1999.50")
    assert reader.report.batches == len(batches)


def test_reader_iterates_only_once(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER}\n{case_row('a')}\n")
    reader = read_export(path, cases_dataset, TransformOptions())
    list(reader)

    with pytest.raises(RuntimeError, match="only once"):
        iter(reader)


def test_close_ends_unfinished_iteration(tmp_path, cases_dataset):
    lines = [case_row(str(i)) for i in range(500)]
    path = write_csv(tmp_path, "\n".join([CASE_HEADER, *lines]) + "\n")
    reader = read_export(path, cases_dataset, TransformOptions(chunk_bytes=2048))
    iterator = iter(reader)
    next(iterator)

    reader.close()

    assert list(iterator) == []


def test_options_from_settings_copies_transform_fields():
    settings = Settings(
        source_timezone="America/New_York",
        on_bad_rows="quarantine",
        chunk_bytes=128 * 1024,
        max_uncompressed_bytes=10,
        max_expansion_ratio=5.0,
    )

    options = TransformOptions.from_settings(settings)

    assert options == TransformOptions(
        source_timezone="America/New_York",
        on_bad_rows="quarantine",
        chunk_bytes=128 * 1024,
        max_uncompressed_bytes=10,
        max_expansion_ratio=5.0,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("on_bad_rows", "skip"),
        ("ambiguous_times", "shift"),
        ("chunk_bytes", 0),
        ("source_timezone", "Mars/Olympus"),
    ],
)
def test_options_reject_invalid_values(field, value):
    with pytest.raises(ValueError, match=field):
        TransformOptions(**{field: value})


def test_peak_memory_follows_chunk_size(tmp_path, cases_dataset):
    lines = [case_row(f"{i:08d}", amount=f"{i % 1000}.25") for i in range(40_000)]
    path = write_csv(tmp_path, "\n".join([CASE_HEADER, *lines]) + "\n", "e.csv.gz")
    options = TransformOptions(chunk_bytes=64 * 1024)
    # Arrow's allocation counter is process-wide: measure growth over what
    # earlier tests in this worker left allocated.
    baseline = pa.total_allocated_bytes()
    peak = 0
    rows = 0

    with read_export(path, cases_dataset, options) as reader:
        for batch in reader:
            peak = max(peak, pa.total_allocated_bytes())
            rows += batch.num_rows
            del batch

    assert rows == 40_000
    assert reader.report.uncompressed_bytes > 3_500_000
    assert peak - baseline < 2_000_000


def test_unclosed_quote_raises_with_line(tmp_path, cases_dataset):
    lines = [case_row(str(i)) for i in range(200)]
    lines[5] = case_row("5", merchant_name='"Unclosed quote')
    path = write_csv(tmp_path, "\n".join([CASE_HEADER, *lines]) + "\n")

    with pytest.raises(DataError, match="different number of fields") as info:
        read_rows(path, cases_dataset, chunk_bytes=1024)

    assert info.value.line == 7


def _rows_with_nul(count: int, nul_at: int) -> str:
    rows = [
        case_row(f"t{index}", merchant_name="ab\x00cd" if index == nul_at else "Shop")
        for index in range(count)
    ]
    return CASE_HEADER + "\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize("nul_at", [0, 2903])
def test_nul_in_string_value_raises_with_line(tmp_path, cases_dataset, nul_at):
    # Row 2903 lies far past the 64 KiB that the file-type check reads.
    path = write_csv(tmp_path, _rows_with_nul(3000, nul_at), "export.csv.gz")

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset, chunk_bytes=16 * 1024)

    error = info.value
    assert error.line == nul_at + 2
    assert error.column == "merchant_name"
    assert error.value == "ab\x00cd"
    assert "'ab\\x00cd'" in str(error)
    assert "NUL character U+0000" in str(error)


def test_nul_in_string_value_quarantined(tmp_path, cases_dataset):
    path = write_csv(tmp_path, _rows_with_nul(3000, 2903))

    rows, reader = read_rows(path, cases_dataset, on_bad_rows="quarantine")
    rejects = reader.rejects().to_pylist()

    assert len(rows) == 2999
    assert "t2903" not in {row["token"] for row in rows}
    assert len(rejects) == 1
    assert rejects[0]["line"] == 2905
    assert rejects[0]["column"] == "merchant_name"
    assert "NUL character" in rejects[0]["reason"]
    assert rejects[0]["record"] == case_row("t2903", merchant_name="ab\\x00cd")


@pytest.mark.parametrize(
    ("column", "text", "expected_value"),
    [
        ("transaction_timestamp", "0000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"),
        (
            "transaction_timestamp",
            "9999-12-31T23:59:59.999999-05:00",
            "9999-12-31T23:59:59.999999-05:00",
        ),
    ],
)
def test_timestamp_out_of_range_raises_with_line(
    tmp_path, cases_dataset, column, text, expected_value
):
    rows = [case_row("a"), case_row("b", **{column: text})]
    path = write_csv(tmp_path, CASE_HEADER + "\n" + "\n".join(rows) + "\n")

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset)

    assert info.value.line == 3
    assert info.value.column == column
    assert info.value.value == expected_value
    assert "outside the supported range" in str(info.value)


def test_timestamp_out_of_range_quarantined(tmp_path, cases_dataset):
    rows = [
        case_row("a"),
        case_row("b", transaction_timestamp="0000-01-01 10:00:00"),
        case_row("c"),
    ]
    path = write_csv(tmp_path, CASE_HEADER + "\n" + "\n".join(rows) + "\n")

    kept, reader = read_rows(path, cases_dataset, on_bad_rows="quarantine")

    assert [row["token"] for row in kept] == ["a", "c"]
    assert reader.rejects().column("line").to_pylist() == [3]


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"]
)
def test_utf16_export_named_in_error(tmp_path, cases_dataset, encoding):
    text = f"{CASE_HEADER}\n{case_row('a')}\n"
    path = write_csv(tmp_path, text.encode(encoding))
    expected = "UTF-32" if encoding == "utf-32" else "UTF-16"

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset)

    assert f"encoded as {expected}" in str(info.value)
    assert "Re-save the file as UTF-8" in str(info.value)
    assert "binary data" not in str(info.value)


def test_nul_in_header_is_binary_data(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"tok\x00en,amount\n{case_row('a')}\n")

    with pytest.raises(DataError, match="binary data"):
        read_rows(path, cases_dataset)


def _many_blocks(tmp_path, rows: int = 4000):
    lines = [CASE_HEADER] + [case_row(f"t{index:06d}") for index in range(rows)]
    return write_csv(tmp_path, "\r\n".join(lines) + "\r\n", "export.csv.gz")


def _paced_streams(monkeypatch) -> list:
    created = []

    class Recorded(csv_module._PacedStream):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            created.append(self)

    monkeypatch.setattr(csv_module, "_PacedStream", Recorded)
    return created


def test_read_ahead_waits_for_consumer(tmp_path, cases_dataset, monkeypatch):
    path = _many_blocks(tmp_path)
    streams = _paced_streams(monkeypatch)
    # A read gives up waiting after this long, so make it longer than the test.
    monkeypatch.setattr(csv_module, "_READ_AHEAD_WAIT", 5.0)
    options = TransformOptions(chunk_bytes=4096)

    with read_export(path, cases_dataset, options) as reader:
        batches = iter(reader)
        rows = next(batches).num_rows
        # pyarrow's own read-ahead would read dozens of blocks by now.
        time.sleep(0.3)
        stream = streams[-1]
        ahead = stream._reads - stream._batches_taken
        rows += sum(batch.num_rows for batch in batches)

    assert ahead <= csv_module.READ_AHEAD_BLOCKS
    assert stream._reads > 20
    assert rows == 4000


def test_read_ahead_reads_every_row(tmp_path, cases_dataset):
    path = _many_blocks(tmp_path)

    rows, _ = read_rows(path, cases_dataset, chunk_bytes=4096)

    assert [row["token"] for row in rows] == [f"t{i:06d}" for i in range(4000)]


def test_stopping_early_releases_reader(tmp_path, cases_dataset):
    path = _many_blocks(tmp_path)
    started = time.perf_counter()

    with read_export(path, cases_dataset, TransformOptions(chunk_bytes=4096)) as reader:
        for _ in zip(range(2), reader, strict=False):
            pass

    # A read left waiting for the consumer would hold the close for a second.
    assert time.perf_counter() - started < 0.9


_READ_THEN_EXIT = """
import sys
from pathlib import Path
from connector.datasets import Dataset
from connector.transform import TransformOptions, read_export

path, schema, mode = sys.argv[1:]
dataset = Dataset.from_file(Path(schema))
reader = read_export(Path(path), dataset, TransformOptions(chunk_bytes=4096))
batches = iter(reader)
rows = sum(batch.num_rows for _, batch in zip(range(2), batches))
if mode == "all":
    rows += sum(batch.num_rows for batch in batches)
if mode != "abandon":
    reader.close()
print(rows)
"""


@pytest.mark.parametrize("mode", ["all", "close", "abandon"])
def test_reader_lets_interpreter_exit(tmp_path, mode):
    # pyarrow reads ahead on its own threads, and one that calls back into
    # Python while the interpreter shuts down aborts the process. The
    # zoned timestamps also fail pyarrow's conversion in the first block,
    # so the first pass is dropped while it reads ahead.
    path = _many_blocks(tmp_path)

    done = subprocess.run(
        [sys.executable, "-c", _READ_THEN_EXIT, str(path), str(CASES / "schema.json"), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    rows = int(done.stdout.split()[-1])
    assert rows == 4000 if mode == "all" else 0 < rows < 4000


def test_waiting_reads_leave_io_threads_free(tmp_path, cases_dataset):
    path = _many_blocks(tmp_path)
    options = TransformOptions(chunk_bytes=4096)
    paused = [read_export(path, cases_dataset, options) for _ in range(10)]
    try:
        for reader in paused:
            next(iter(reader))
        time.sleep(0.3)
        waiting = csv_module._ACTIVITY.parked
        started = time.perf_counter()
        rows, _ = read_rows(path, cases_dataset, chunk_bytes=4096)
        elapsed = time.perf_counter() - started
    finally:
        for reader in paused:
            reader.close()

    assert waiting <= max(1, pa.io_thread_count() // 2)
    assert len(rows) == 4000
    # With every I/O thread held by a waiting read, this took over 10 s.
    assert elapsed < 5
