"""Tests of the shipped schema files and of the DiVA type mapping."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pytest

from connector.datasets import (
    Column,
    list_datasets,
    load_dataset,
    parse_diva_type,
    schemas_root,
)
from connector.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parents[1]

#: Every view and aggregation level of DiVA's view catalog, as URL paths below
#: `views/`. `transactiontoken` has no aggregation level.
EXPECTED_DATASETS = [
    "activitybalances/day",
    "activitybalances/day/networkdetail",
    "activitybalances/fundingday",
    "authorizations/day",
    "authorizations/detail",
    "authorizations/month",
    "authorizations/week",
    "cardcounts/day",
    "cardcounts/month",
    "cardcounts/week",
    "cards/detail",
    "chargebacks/detail",
    "chargebacks/status",
    "clearing/detail",
    "declines/day",
    "declines/detail",
    "declines/month",
    "declines/week",
    "loads/day",
    "loads/detail",
    "loads/month",
    "loads/week",
    "programbalances/day",
    "programbalances/month",
    "programbalancessettlement/day",
    "programbalancessettlement/month",
    "settlements/day",
    "settlements/detail",
    "settlements/month",
    "settlements/week",
    "transactiontoken",
    "usercounts/day",
    "usercounts/month",
    "usercounts/week",
    "users/detail",
]

#: The keys of every column object in our files: DiVA's plus our own two.
COLUMN_KEYS = {
    "field",
    "type",
    "display",
    "description",
    "units",
    "has_total",
    "date_format",
    "is_filter_only",
    "enum_values",
    "confirmed",
    "nullable",
}

#: Column names that contain money amounts, whatever the view.
MONEY_NAME = re.compile(
    r"(amount|balance|fee|fees|_net|deposit|credits|debits)$|amount_to_send"
)


def read_schema_file(name: str) -> dict:
    return json.loads((schemas_root() / f"{name}.json").read_text(encoding="utf-8"))


def test_list_datasets_names_every_level():
    assert sorted(list_datasets()) == sorted(EXPECTED_DATASETS)


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_schema_file_loads(name):
    dataset = load_dataset(name)

    assert dataset.name == name
    assert dataset.path == f"views/{name}"
    assert isinstance(dataset.arrow_schema(), pa.Schema)


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_view_fields_match_file_path(name):
    content = read_schema_file(name)
    view, _, aggregation = name.partition("/")

    assert content["view"] == view
    assert (content["aggregation"] or "") == aggregation


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_key_and_date_columns_not_nullable(name):
    dataset = load_dataset(name)

    assert dataset.key, f"{name} has no key"
    for column_name in (*dataset.key, dataset.date_column):
        if column_name is None:
            continue
        assert not dataset.column(column_name).nullable, column_name


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_money_columns_are_decimals(name):
    dataset = load_dataset(name)

    for column in dataset.columns:
        if column.units is not None or MONEY_NAME.search(column.name):
            assert column.type.kind == "decimal", column.name
            assert column.diva_type.startswith("numeric("), column.name


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_no_float_types(name):
    for column in read_schema_file(name)["columns"]:
        assert not re.search(r"float|double|real", column["type"]), column["field"]


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_every_type_is_known(name):
    for column in load_dataset(name).columns:
        assert column.type.known, column.name


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_columns_have_every_schema_key(name):
    for column in read_schema_file(name)["columns"]:
        assert set(column) == COLUMN_KEYS, column["field"]
        assert isinstance(column["confirmed"], bool), column["field"]
        assert isinstance(column["nullable"], bool), column["field"]


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_date_format_on_date_columns(name):
    for column in load_dataset(name).columns:
        content = next(
            c for c in read_schema_file(name)["columns"] if c["field"] == column.name
        )
        is_temporal = column.type.kind in {"date", "timestamp"}
        assert (content["date_format"] is not None) == is_temporal, column.name


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_rows_carry_program(name):
    assert "program" in load_dataset(name).column_names


@pytest.mark.parametrize("name", EXPECTED_DATASETS)
def test_diva_transaction_tokens_bigint(name):
    for column in load_dataset(name).columns:
        is_diva_token = column.name.endswith("transaction_token") or (
            column.name == "transentry_token"
        )
        if is_diva_token and column.name != "core_api_transaction_token":
            assert column.diva_type == "bigint", column.name


@pytest.mark.parametrize("name", [n for n in EXPECTED_DATASETS if "/detail" in n])
def test_detail_views_realistic_width(name):
    assert 10 <= len(load_dataset(name).columns) <= 40


@pytest.mark.parametrize(
    "name", [n for n in EXPECTED_DATASETS if n.endswith(("/day", "/week", "/month"))]
)
def test_aggregated_levels_keyed_by_period(name):
    dataset = load_dataset(name)

    assert dataset.key[0] == dataset.date_column
    assert dataset.column(dataset.date_column).type.kind == "date"
    assert "program" in dataset.key


def test_documented_columns_are_confirmed():
    documented = {
        "authorizations/detail": ["transaction_timestamp", "acting_user_token"],
        "clearing/detail": ["transentry_token", "account_group"],
        "chargebacks/status": ["original_transaction_token", "chargeback_state"],
        "transactiontoken": ["program", "bank", "core_api_transaction_token"],
    }
    for name, columns in documented.items():
        for column_name in columns:
            assert load_dataset(name).column(column_name).confirmed, column_name


def test_transactiontoken_has_no_date_column():
    dataset = load_dataset("transactiontoken")

    assert dataset.date_column is None
    assert dataset.aggregation == ""
    assert dataset.key == ("core_api_transaction_token",)


def test_nested_aggregation_maps_to_url_path():
    dataset = load_dataset("activitybalances/day/networkdetail")

    assert dataset.view == "activitybalances"
    assert dataset.aggregation == "day/networkdetail"
    assert dataset.path == "views/activitybalances/day/networkdetail"


def _package_data_globs() -> list[str]:
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text("utf-8"))
    return pyproject["tool"]["setuptools"]["package-data"]["connector.schemas"]


def _glob_matches(relative: str, pattern: str) -> bool:
    # setuptools globs do not let `*` cross a `/`, unlike fnmatch on a path.
    parts = PurePosixPath(relative).parts
    pattern_parts = PurePosixPath(pattern).parts
    return len(parts) == len(pattern_parts) and all(
        fnmatch(part, glob) for part, glob in zip(parts, pattern_parts)
    )


def test_package_data_ships_every_schema_file():
    globs = _package_data_globs()

    for name in EXPECTED_DATASETS:
        relative = f"{name}.json"
        assert any(_glob_matches(relative, glob) for glob in globs), relative


# --- DiVA type names -> column types ----------------------------------------

UTC_TIME = pa.timestamp("us", tz="UTC")
DECIMAL_18_4 = pa.decimal128(18, 4)

TYPE_CASES = [
    # (type name, extra schema keys, kind, precision, scale, max_length, Arrow)
    ("character varying(50)", {}, "string", None, None, 50, pa.string()),
    ("character varying(128)", {}, "string", None, None, 128, pa.string()),
    ("CHARACTER VARYING ( 36 )", {}, "string", None, None, 36, pa.string()),
    ("varchar(20)", {}, "string", None, None, 20, pa.string()),
    ("TEXT", {"character_maximum_length": 255}, "string", None, None, 255, pa.string()),
    ("text", {}, "string", None, None, None, pa.string()),
    ("numeric(14,2)", {}, "decimal", 14, 2, None, pa.decimal128(14, 2)),
    ("numeric(38,2)", {}, "decimal", 38, 2, None, pa.decimal128(38, 2)),
    ("NUMERIC(18, 9)", {}, "decimal", 18, 9, None, pa.decimal128(18, 9)),
    ("numeric(10)", {}, "decimal", 10, 0, None, pa.decimal128(10, 0)),
    ("numeric", {}, "decimal", 38, 9, None, pa.decimal128(38, 9)),
    ("NUMBER", {"scale": 2}, "decimal", 38, 2, None, pa.decimal128(38, 2)),
    ("NUMBER", {"scale": 4, "precision": 18}, "decimal", 18, 4, None, DECIMAL_18_4),
    ("bigint", {}, "int64", None, None, None, pa.int64()),
    ("integer", {}, "int32", None, None, None, pa.int32()),
    ("smallint", {}, "int16", None, None, None, pa.int16()),
    ("date", {}, "date", None, None, None, pa.date32()),
    ("timestamp without time zone", {}, "timestamp", None, None, None, UTC_TIME),
    ("timestamp", {}, "timestamp", None, None, None, UTC_TIME),
    ("boolean", {}, "bool", None, None, None, pa.bool_()),
]


@pytest.mark.parametrize(
    ("type_name", "extra", "kind", "precision", "scale", "max_length", "arrow"),
    TYPE_CASES,
)
def test_parse_diva_type(type_name, extra, kind, precision, scale, max_length, arrow):
    column_type = parse_diva_type(type_name, **extra)

    assert column_type.kind == kind
    assert column_type.precision == precision
    assert column_type.scale == scale
    assert column_type.max_length == max_length
    assert column_type.known
    assert column_type.arrow_type() == arrow


@pytest.mark.parametrize("type_name", ["geography", "money", "float8", "jsonb", ""])
def test_unknown_type_falls_back_to_string(type_name):
    column_type = parse_diva_type(type_name)

    assert column_type.kind == "string"
    assert not column_type.known
    assert column_type.arrow_type() == pa.string()


def test_unknown_type_warns_once(caplog):
    with caplog.at_level(logging.WARNING, logger="connector.datasets"):
        column = Column.from_schema_object({"field": "shape", "type": "geography"})

    assert column.type.kind == "string"
    assert len(caplog.records) == 1
    assert "geography" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Authorizations/Detail", "lower case; use authorizations/detail"),
        ("authorizations detail", "expected view/aggregation"),
        ("authorizations", "Did you mean authorizations/day or authorizations/detail"),
        ("authorisations/detail", "Did you mean authorizations/detail"),
    ],
)
def test_dataset_name_errors_suggest_fix(name, expected):
    with pytest.raises(ConfigError) as caught:
        load_dataset(name)

    assert expected in str(caught.value)
