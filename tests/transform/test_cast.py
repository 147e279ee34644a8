"""Casting CSV text to each column kind: accepted forms and exact errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from connector.datasets import Column
from connector.transform import TransformOptions
from connector.transform.cast import ValueProblem, cast_column, find_bad_rows

OPTIONS = TransformOptions()


def column(diva_type: str, nullable: bool = True) -> Column:
    return Column.from_schema_object(
        {"field": "c", "type": diva_type, "nullable": nullable}
    )


def cast(diva_type: str, values: list, **options) -> list:
    array = pa.array(values, pa.string())
    result = cast_column(array, column(diva_type), TransformOptions(**options))
    assert result.type == column(diva_type).type.arrow_type()
    return result.to_pylist()


@pytest.mark.parametrize(
    ("diva_type", "text", "expected"),
    [
        ("numeric(18,2)", "12.00", Decimal("12.00")),
        ("numeric(18,2)", "-7.25", Decimal("-7.25")),
        ("numeric(18,2)", "-0.5", Decimal("-0.50")),
        ("numeric(18,2)", "103.1", Decimal("103.10")),
        ("numeric(18,2)", "9999999999999999.99", Decimal("9999999999999999.99")),
        (
            "numeric(38,9)",
            "-12345678901234567890.123456789",
            Decimal("-12345678901234567890.123456789"),
        ),
        ("bigint", "9223372036854775807", 9223372036854775807),
        ("integer", "-2147483648", -2147483648),
        ("smallint", "32767", 32767),
        ("boolean", "true", True),
        ("boolean", "FALSE", False),
        ("boolean", "T", True),
        ("boolean", "f", False),
        ("boolean", "1", True),
        ("boolean", "0", False),
        ("boolean", "True", True),
        ("date", "2024-03-07", date(2024, 3, 7)),
        ("date", "2024-03-07 00:00:00", date(2024, 3, 7)),
        ("date", "2024-03-07T00:00:00.000Z", date(2024, 3, 7)),
        ("date", "2024-03-07T00:00:00Z", date(2024, 3, 7)),
        ("timestamp", "2024-03-05", datetime(2024, 3, 5, tzinfo=UTC)),
        (
            "timestamp",
            "2024-03-05 14:22:31",
            datetime(2024, 3, 5, 14, 22, 31, tzinfo=UTC),
        ),
        (
            "timestamp",
            "2024-03-05 14:22:31.123456",
            datetime(2024, 3, 5, 14, 22, 31, 123456, tzinfo=UTC),
        ),
        (
            "timestamp",
            "2024-03-05T14:22:31",
            datetime(2024, 3, 5, 14, 22, 31, tzinfo=UTC),
        ),
        (
            "timestamp",
            "2024-03-05T14:22:31.5Z",
            datetime(2024, 3, 5, 14, 22, 31, 500000, tzinfo=UTC),
        ),
        (
            "timestamp",
            "2024-03-05T14:22:31.000Z",
            datetime(2024, 3, 5, 14, 22, 31, tzinfo=UTC),
        ),
        (
            "timestamp",
            "2024-03-05T14:22:31+02:00",
            datetime(2024, 3, 5, 12, 22, 31, tzinfo=UTC),
        ),
        (
            "timestamp",
            "2024-03-05T14:22:31-05:30",
            datetime(2024, 3, 5, 19, 52, 31, tzinfo=UTC),
        ),
        ("character varying(3)", "ÜÜÜ", "ÜÜÜ"),
        ("character varying(4)", "0742", "0742"),
        ("TEXT", "NULL", "NULL"),
    ],
)
def test_cast_accepts_value(diva_type, text, expected):
    assert cast(diva_type, [text]) == [expected]


@pytest.mark.parametrize(
    "diva_type",
    [
        "numeric(18,2)",
        "bigint",
        "integer",
        "smallint",
        "boolean",
        "date",
        "timestamp",
        "varchar(3)",
    ],
)
def test_cast_keeps_nulls(diva_type):
    assert cast(diva_type, [None, None]) == [None, None]


@pytest.mark.parametrize(
    ("diva_type", "text", "reason"),
    [
        ("numeric(18,2)", "1.234", "more than 2 digits after the decimal point"),
        ("numeric(18,2)", "-0.001", "more than 2 digits after the decimal point"),
        (
            "numeric(18,2)",
            "12345678901234567.00",
            "more than 16 digits before the decimal point",
        ),
        ("numeric(18,2)", "abc", "not a decimal number"),
        ("numeric(18,2)", "1,5", "not a decimal number"),
        ("integer", "2147483648", "not a whole number in the range of int32"),
        ("integer", "1.0", "not a whole number"),
        ("smallint", "40000", "not a whole number in the range of int16"),
        ("bigint", "x", "not a whole number"),
        ("boolean", "yes", "not a boolean"),
        ("boolean", "2", "not a boolean"),
        ("date", "2024-02-30", "not a"),
        ("date", "2024-03-07T05:00:00Z", "not a date"),
        ("date", "07/03/2024", "not a date"),
        ("timestamp", "2024-03-05 14:22:31.1234567", "not a timestamp"),
        ("timestamp", "05/03/2024 14:22", "not a timestamp"),
        ("timestamp", "2024-13-05 14:22:31", "not a timestamp"),
        ("character varying(3)", "EURO", "too long: 4 > 3"),
        ("character varying(255)", "x" * 256, "256 > 255"),
    ],
)
def test_cast_rejects_value(diva_type, text, reason):
    with pytest.raises(ValueProblem, match=reason):
        cast(diva_type, ["1" if diva_type == "boolean" else None, text])


@pytest.mark.parametrize(
    ("char", "count", "valid"),
    [
        ("M", 255, True),
        ("Ü", 255, True),
        ("💳", 255, True),
        ("💳", 256, False),
        ("N", 256, False),
    ],
)
def test_length_counts_characters_not_bytes(char, count, valid):
    values = [char * count]

    if valid:
        assert cast("character varying(255)", values) == values
    else:
        with pytest.raises(ValueProblem, match=f"{count} > 255"):
            cast("character varying(255)", values)


def test_not_nullable_column_rejects_null():
    array = pa.array(["a", None], pa.string())

    with pytest.raises(ValueProblem, match="does not allow nulls"):
        cast_column(array, column("varchar(5)", nullable=False), OPTIONS)


def test_mixed_zoned_and_naive_timestamps_in_one_column():
    result = cast(
        "timestamp",
        [
            "2024-06-01 12:00:00",
            "2024-06-01T12:00:00Z",
            None,
            "2024-06-01T14:00:00+02:00",
        ],
        source_timezone="America/New_York",
    )

    assert result == [
        datetime(2024, 6, 1, 16, tzinfo=UTC),
        datetime(2024, 6, 1, 12, tzinfo=UTC),
        None,
        datetime(2024, 6, 1, 12, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("2024-11-03 01:30:00", "ambiguous"), ("2024-03-10 02:30:00", "does not exist")],
)
def test_dst_local_time_raises_named_problem(text, reason):
    with pytest.raises(ValueProblem, match=reason):
        cast("timestamp", [text], source_timezone="America/New_York")


def test_find_bad_rows_returns_every_bad_index_in_order():
    values = ["1.00", "x", "2.00", "1.001", None, "3.00", "y"] * 3
    array = pa.array(values, pa.string())

    bad = list(find_bad_rows(array, column("numeric(18,2)"), OPTIONS))

    assert [index for index, _ in bad] == [1, 3, 6, 8, 10, 13, 15, 17, 20]
    assert "digits after the decimal point" in bad[1][1]


def test_find_bad_rows_empty_when_column_is_valid():
    array = pa.array(["1", "2", None], pa.string())

    assert list(find_bad_rows(array, column("integer"), OPTIONS)) == []


@pytest.mark.parametrize(
    ("diva_type", "text"),
    [
        ("varchar(10)", "ab\x00cd"),
        ("varchar(10)", "\x00"),
        ("text", "trailing\x00"),
    ],
)
def test_string_with_nul_rejected(diva_type, text):
    with pytest.raises(ValueProblem, match="NUL character U\\+0000"):
        cast(diva_type, ["fine", text])


@pytest.mark.parametrize(
    ("diva_type", "text", "reason"),
    [
        ("date", "0000-01-01", "outside the supported dates"),
        ("date", "0000-12-31T00:00:00Z", "outside the supported dates"),
        ("timestamp", "0000-06-01 12:00:00", "outside the supported range"),
        ("timestamp", "0000-12-31T23:59:59Z", "outside the supported range"),
        (
            "timestamp",
            "9999-12-31T23:59:59.999999-05:00",
            "outside the supported range",
        ),
        ("timestamp", "0001-01-01T00:30:00+01:00", "outside the supported range"),
    ],
)
def test_date_outside_years_1_to_9999_rejected(diva_type, text, reason):
    with pytest.raises(ValueProblem, match=reason):
        cast(diva_type, ["2024-03-05", text])


def test_local_time_past_year_9999_in_utc_rejected():
    with pytest.raises(ValueProblem, match="outside the supported range"):
        cast("timestamp", ["9999-12-31 23:30:00"], source_timezone="America/New_York")


@pytest.mark.parametrize(
    ("diva_type", "texts", "expected"),
    [
        ("date", ["0001-01-01", "9999-12-31"], [date(1, 1, 1), date(9999, 12, 31)]),
        (
            "timestamp",
            ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"],
            [
                datetime(1, 1, 1, tzinfo=UTC),
                datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            ],
        ),
    ],
)
def test_date_range_edges_accepted(diva_type, texts, expected):
    assert cast(diva_type, texts) == expected


def test_find_bad_rows_names_out_of_range_dates():
    values = pa.array(["2024-01-01", "0000-01-01", None, "2024-02-02"], pa.string())

    bad = list(find_bad_rows(values, column("date"), OPTIONS))

    assert bad == [(1, "outside the supported dates 0001-01-01 to 9999-12-31")]
