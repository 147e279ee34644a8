"""Columns that pyarrow's CSV parser types itself, and their way back to text.

Integers, decimals, dates, booleans and zone-less timestamps are converted
while the CSV is parsed. A value the parser rejects, or a parsed value that
fails a check, sends its column back to the text path from that row on, so
the results and the error messages are those of the text path.
"""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from connector.datasets import Dataset
from connector.errors import DataError

from .conftest import CASE_HEADER, case_row, read_rows, write_csv

HEADER = CASE_HEADER + ",settlement_date,installment_count"
ROWS = 4000
SMALL_CHUNKS = 16 * 1024


def _row(n: int, **values: str) -> str:
    settlement = values.pop("settlement_date", "2024-03-06")
    count = values.pop("installment_count", str(n % 7))
    values.setdefault("transaction_timestamp", "2024-03-05 14:22:31")
    values.setdefault("amount", f"{n}.25")
    return f"{case_row(f'tok-{n:05d}', **values)},{settlement},{count}"


def _export(tmp_path, changes: dict[int, dict[str, str]]):
    lines = [_row(n, **changes.get(n, {})) for n in range(ROWS)]
    text = "\n".join([HEADER, *lines]) + "\n"
    return write_csv(tmp_path, text, "export.csv.gz")


def test_clean_file_typed(tmp_path, cases_dataset):
    path = _export(tmp_path, {})

    rows, reader = read_rows(path, cases_dataset, chunk_bytes=SMALL_CHUNKS)

    assert len(rows) == ROWS
    assert reader.report.batches > 10
    assert rows[3999]["amount"] == Decimal("3999.25")
    assert rows[10]["installment_count"] == 3
    assert rows[10]["settlement_date"] == date(2024, 3, 6)
    assert rows[10]["transaction_timestamp"] == datetime(
        2024, 3, 5, 14, 22, 31, tzinfo=UTC
    )
    assert rows[10]["mcc"] == "5942"


def test_zoneless_timestamps_source_timezone(tmp_path, cases_dataset):
    path = _export(tmp_path, {})

    rows, _ = read_rows(
        path,
        cases_dataset,
        chunk_bytes=SMALL_CHUNKS,
        source_timezone="America/New_York",
    )

    assert rows[0]["transaction_timestamp"] == datetime(
        2024, 3, 5, 19, 22, 31, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("amount", "12.345", "digits after the decimal point"),
        ("amount", "12345678901234567.0", "digits before the decimal point"),
        ("installment_count", "3.0", "not a whole number"),
        ("installment_count", "99999999999", "not a whole number"),
        ("settlement_date", "2024-02-30", "not a calendar date"),
        ("transaction_timestamp", "2024-03-05 25:00:00", "not a timestamp"),
    ],
)
def test_bad_value_deep_in_file(tmp_path, cases_dataset, column, value, reason):
    path = _export(tmp_path, {3500: {column: value}})

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset, chunk_bytes=SMALL_CHUNKS)

    error = info.value
    assert error.line == 3502
    assert error.column == column
    assert error.value == value
    assert reason in str(error)


def test_quarantine_after_fallback(tmp_path, cases_dataset):
    bad = {100: {"amount": "1.001"}, 2000: {"amount": "x"}, 3900: {"amount": "-"}}
    path = _export(tmp_path, bad)

    rows, reader = read_rows(
        path, cases_dataset, on_bad_rows="quarantine", chunk_bytes=SMALL_CHUNKS
    )

    tokens = [row["token"] for row in rows]
    assert len(tokens) == ROWS - 3
    assert tokens == sorted(set(tokens))
    assert "tok-00100" not in tokens
    assert "tok-00101" in tokens
    assert rows[-1]["amount"] == Decimal("3999.25")
    assert [r["line"] for r in reader.rejects().to_pylist()] == [102, 2002, 3902]
    assert reader.report.rows_read == ROWS
    assert reader.report.rows_rejected == 3


def test_spaces_around_numbers(tmp_path, cases_dataset):
    # Row 50 sends amount back to the text path; rows 10 and 3000 are read
    # before and after that, and must agree.
    changes = {
        10: {"amount": " 10.50 ", "settlement_date": " 2024-03-07"},
        50: {"amount": "bad"},
        3000: {"amount": "\t3000.50 ", "installment_count": " 4 "},
    }
    path = _export(tmp_path, changes)

    rows, _ = read_rows(
        path, cases_dataset, on_bad_rows="quarantine", chunk_bytes=SMALL_CHUNKS
    )
    by_token = {row["token"]: row for row in rows}

    assert by_token["tok-00010"]["amount"] == Decimal("10.50")
    assert by_token["tok-00010"]["settlement_date"] == date(2024, 3, 7)
    assert by_token["tok-03000"]["amount"] == Decimal("3000.50")
    assert by_token["tok-03000"]["installment_count"] == 4
    assert "tok-00050" not in by_token


def test_zoned_and_zoneless_timestamps_mixed(tmp_path, cases_dataset):
    changes = {2500: {"transaction_timestamp": "2024-03-05T14:22:31.5+02:00"}}
    path = _export(tmp_path, changes)

    rows, _ = read_rows(path, cases_dataset, chunk_bytes=SMALL_CHUNKS)

    assert rows[2499]["transaction_timestamp"] == datetime(
        2024, 3, 5, 14, 22, 31, tzinfo=UTC
    )
    assert rows[2500]["transaction_timestamp"] == datetime(
        2024, 3, 5, 12, 22, 31, 500000, tzinfo=UTC
    )


def test_empty_required_number(tmp_path, cases_dataset):
    path = _export(tmp_path, {1234: {"amount": ""}})

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset, chunk_bytes=SMALL_CHUNKS)

    assert info.value.line == 1236
    assert info.value.column == "amount"
    assert "does not allow nulls" in str(info.value)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_nul_in_first_row_compressed(tmp_path, cases_dataset, layers):
    text = "\n".join([HEADER, _row(0, merchant_name="a\x00b"), _row(1)]) + "\n"
    data = text.encode()
    for _ in range(layers):
        data = gzip.compress(data)
    path = tmp_path / "export.csv"
    path.write_bytes(data)

    with pytest.raises(DataError) as info:
        read_rows(path, cases_dataset)

    assert info.value.line == 2
    assert info.value.column == "merchant_name"


WIDE = Dataset.from_dict(
    {
        "view": "wide",
        "aggregation": "detail",
        "key": ["token"],
        "date_column": None,
        "columns": [
            {"field": "token", "type": "varchar(10)", "nullable": False},
            {"field": "amount", "type": "numeric(38,2)"},
            {"field": "flag", "type": "boolean"},
        ],
    }
)


@pytest.mark.parametrize("sign", ["", "-"])
def test_decimal_38_above_precision(tmp_path, sign):
    value = sign + "1" + "0" * 36
    path = write_csv(tmp_path, f"token,amount,flag\na,1.50,true\nb,{value},false\n")

    with pytest.raises(DataError) as info:
        read_rows(path, WIDE)

    assert info.value.line == 3
    assert info.value.value == value
    assert "more than 36 digits before the decimal point" in str(info.value)


def test_quarantine_whole_batch(tmp_path):
    path = write_csv(tmp_path, "token,amount,flag\na,abc,true\n")

    rows, reader = read_rows(path, WIDE, on_bad_rows="quarantine")

    assert rows == []
    assert reader.rejects().column("line").to_pylist() == [2]


def test_quarantine_several_parsed_columns(tmp_path, cases_dataset):
    bad = {
        3990: {"amount": "x"},
        3994: {"installment_count": "y"},
        3997: {"settlement_date": "z"},
    }
    path = _export(tmp_path, bad)

    rows, reader = read_rows(
        path, cases_dataset, on_bad_rows="quarantine", chunk_bytes=SMALL_CHUNKS
    )

    assert len(rows) == ROWS - 3
    rejects = reader.rejects().to_pylist()
    assert [(r["line"], r["column"]) for r in rejects] == [
        (3992, "amount"),
        (3996, "installment_count"),
        (3999, "settlement_date"),
    ]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("true", True), ("FALSE", False), ("tRuE", True), ("F", False), ("0", False)],
)
def test_booleans_any_case(tmp_path, flag, expected):
    lines = [f"r{n:05d},1.00,true" for n in range(3000)] + [f"last,2.00,{flag}"]
    path = write_csv(tmp_path, "\n".join(["token,amount,flag", *lines]) + "\n")

    rows, _ = read_rows(path, WIDE, chunk_bytes=SMALL_CHUNKS)

    assert len(rows) == 3001
    assert rows[-1]["flag"] is expected


def test_boolean_with_spaces(tmp_path):
    lines = [f"r{n:05d},1.00,false" for n in range(3000)] + ["last,2.00, true"]
    path = write_csv(tmp_path, "\n".join(["token,amount,flag", *lines]) + "\n")

    with pytest.raises(DataError) as info:
        read_rows(path, WIDE, chunk_bytes=SMALL_CHUNKS)

    assert info.value.line == 3002
    assert info.value.column == "flag"


@pytest.mark.parametrize(("name", "fits"), [("ééé", True), ("éééé", False)])
def test_length_counts_characters(tmp_path, name, fits):
    narrow = Dataset.from_dict(
        {
            "view": "narrow",
            "aggregation": "detail",
            "key": ["token"],
            "date_column": None,
            "columns": [
                {"field": "token", "type": "varchar(10)", "nullable": False},
                {"field": "code", "type": "varchar(3)"},
            ],
        }
    )
    lines = [f"r{n:05d},abc" for n in range(3000)] + [f"last,{name}"]
    path = write_csv(tmp_path, "\n".join(["token,code", *lines]) + "\n")

    if fits:
        rows, _ = read_rows(path, narrow, chunk_bytes=SMALL_CHUNKS)
        assert rows[-1]["code"] == name
    else:
        with pytest.raises(DataError) as info:
            read_rows(path, narrow, chunk_bytes=SMALL_CHUNKS)
        assert info.value.line == 3002
