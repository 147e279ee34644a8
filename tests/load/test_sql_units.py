"""Parts of the warehouse loader that need no database server."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from connector.datasets import ColumnType, Dataset
from connector.errors import ConfigError, LoadError
from connector.load.sql import mask_url, normalize_url, open_warehouse_writer
from connector.load.sql_dialects import canonical_decimal_text
from connector.load.sql_schema import is_widening, split_table_name
from connector.load.sql_writer import check_lengths, mask_export_token

DATASET = Dataset.from_dict(
    {
        "view": "tests",
        "aggregation": "units",
        "key": ["token"],
        "date_column": None,
        "columns": [
            {"field": "token", "type": "varchar(8)"},
            {"field": "name", "type": "varchar(3)"},
            {"field": "memo", "type": "text"},
        ],
    }
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("mysql://root@h/db", "mysql+pymysql://root@h/db"),
        ("mariadb://root@h/db", "mariadb+pymysql://root@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("mysql+mysqldb://u@h/db", "mysql+mysqldb://u@h/db"),
        ("sqlite:///w.db", "sqlite:///w.db"),
        ("sqlite:////abs/w.db", "sqlite:////abs/w.db"),
        ("w.db", "sqlite:///w.db"),
        ("/data/w.sqlite", "sqlite:////data/w.sqlite"),
        (
            "mysql://root@h/db?local_infile=1",
            "mysql+pymysql://root@h/db?local_infile=1",
        ),
    ],
)
def test_normalize_url_names_installed_driver(url, expected):
    assert normalize_url(url) == expected


def test_normalize_url_keeps_password():
    assert (
        normalize_url("postgresql://u:p%40ss@h/db")
        == "postgresql+psycopg://u:p%40ss@h/db"
    )


def test_invalid_url_error_hides_password():
    with pytest.raises(ConfigError) as caught:
        normalize_url("postgresql://u:hunter2@h:port/db")

    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


def test_mask_url_hides_password():
    assert (
        mask_url("mysql+pymysql://root:hunter2@h/db") == "mysql+pymysql://root:***@h/db"
    )


@pytest.mark.parametrize(
    "name", ["password", "PASSWORD", "sslpassword", "passwd", "pwd", "secret", "token"]
)
def test_mask_url_hides_query_credentials(name):
    masked = mask_url(f"postgresql://u@h/db?sslmode=require&{name}=QZ42&port=5")

    assert "QZ42" not in masked
    assert f"{name}=***" in masked
    assert "sslmode=require" in masked


def test_unknown_mode_is_config_error():
    with pytest.raises(ConfigError, match="'merge'"):
        open_warehouse_writer("sqlite://", "t", DATASET, mode="merge")


def test_upsert_without_key_is_config_error():
    keyless = DATASET.__class__("tests", "units", (), None, DATASET.columns)

    with pytest.raises(ConfigError, match="no key"):
        open_warehouse_writer("sqlite://", "t", keyless)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("t", (None, "t")), ("dw.t", ("dw", "t")), ("main.Order", ("main", "Order"))],
)
def test_split_table_name(name, expected):
    assert split_table_name(name) == expected


def decimal(precision, scale):
    return ColumnType("decimal", precision=precision, scale=scale)


def string(length=None):
    return ColumnType("string", max_length=length)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (string(20), string(20), None),
        (string(20), string(50), True),
        (string(20), string(), True),
        (string(50), string(20), False),
        (string(), string(20), False),
        (decimal(10, 2), decimal(12, 2), True),
        (decimal(10, 2), decimal(12, 4), True),
        (decimal(12, 2), decimal(10, 2), False),
        (decimal(12, 2), decimal(12, 4), False),
        (decimal(12, 4), decimal(12, 2), False),
        (ColumnType("int32"), ColumnType("int64"), True),
        (ColumnType("int16"), ColumnType("int32"), True),
        (ColumnType("int64"), ColumnType("int32"), False),
        (ColumnType("int64"), string(20), False),
        (ColumnType("date"), ColumnType("timestamp"), False),
        (
            ColumnType("timestamp", precision=0),
            ColumnType("timestamp", precision=6),
            True,
        ),
    ],
)
def test_is_widening(old, new, expected):
    assert is_widening(old, new) is expected


def test_canonical_decimal_text_is_fixed_point():
    values = [Decimal("0E-9"), Decimal("-0.000000001"), Decimal("123.450000000"), None]
    array = pa.array(values, pa.decimal128(38, 9))

    text = canonical_decimal_text(array).to_pylist()

    assert text == ["0.000000000", "-0.000000001", "123.450000000", None]


def test_canonical_decimal_text_keeps_scale():
    array = pa.array([Decimal("25.00"), Decimal("-8.40")], pa.decimal128(18, 2))

    assert canonical_decimal_text(array).to_pylist() == ["25.00", "-8.40"]


def test_check_lengths_counts_characters():
    batch = pa.RecordBatch.from_pylist(
        [{"token": "a", "name": "💳💳💳", "memo": "x" * 10_000}],
        schema=DATASET.arrow_schema(),
    )

    check_lengths(batch, DATASET)


def test_check_lengths_names_column_key_and_lengths():
    batch = pa.RecordBatch.from_pylist(
        [{"token": "ok", "name": "abc"}, {"token": "long", "name": "abcd"}],
        schema=DATASET.arrow_schema(),
    )

    with pytest.raises(LoadError) as caught:
        check_lengths(batch, DATASET)

    message = str(caught.value)
    assert "'name'" in message
    assert "token='long'" in message
    assert "4 > 3" in message
    assert caught.value.column == "name"
    assert caught.value.key == ("long",)


@pytest.mark.parametrize(
    ("token", "expected"),
    [("9f8e7d6c-5b4a", "9f8e7d…"), ("abc", "abc…"), (None, None), ("", None)],
)
def test_mask_export_token(token, expected):
    assert mask_export_token(token) == expected
