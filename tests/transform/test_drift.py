"""Schema drift: new, missing, reordered and duplicated header columns."""

from __future__ import annotations

import logging
from decimal import Decimal

import pyarrow as pa
import pytest

from connector.errors import SchemaError
from connector.transform import DriftItem, TransformOptions, read_export

from .conftest import CASE_HEADER, case_row, read_rows, write_csv


def test_new_column_typed_from_lookup(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER},fee\n{case_row('a')},1.25\n")
    lookups = []

    def lookup(name):
        lookups.append(name)
        return {"field": name, "type": "numeric(10,3)", "units": "USD"}

    with read_export(
        path, cases_dataset, TransformOptions(), column_lookup=lookup
    ) as reader:
        rows = [row for batch in reader for row in batch.to_pylist()]

    assert lookups == ["fee"]
    assert reader.schema.field("fee").type == pa.decimal128(10, 3)
    assert reader.schema == reader.dataset.arrow_schema()
    assert reader.schema.names[-1] == "fee"
    assert rows[0]["fee"] == Decimal("1.250")
    assert DriftItem("added", "fee", "not in the schema; typed as numeric(10,3)") in (
        reader.report.drift
    )


def test_new_column_without_lookup_is_string(tmp_path, cases_dataset, caplog):
    path = write_csv(tmp_path, f"{CASE_HEADER},fee\n{case_row('a')},1.25\n")
    caplog.set_level(logging.WARNING, logger="connector.transform")

    rows, reader = read_rows(path, cases_dataset)

    assert reader.schema.field("fee").type == pa.string()
    assert rows[0]["fee"] == "1.25"
    assert [item.column for item in reader.report.drift if item.kind == "added"] == [
        "fee"
    ]
    assert "added column fee" in caplog.text


def test_lookup_returning_none_gives_string(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER},fee\n{case_row('a')},x\n")

    with read_export(
        path, cases_dataset, TransformOptions(), column_lookup=lambda name: None
    ) as reader:
        rows = [row for batch in reader for row in batch.to_pylist()]

    assert rows[0]["fee"] == "x"


def test_missing_nullable_column_filled_with_nulls(tmp_path, cases_dataset):
    header = CASE_HEADER.replace(",mcc", "")
    row = case_row("a").replace(",5942", "")
    path = write_csv(tmp_path, f"{header}\n{row}\n")

    rows, reader = read_rows(path, cases_dataset)

    assert rows[0]["mcc"] is None
    assert rows[0]["network"] == "VISA"
    assert DriftItem("missing", "mcc", "filled with nulls") in reader.report.drift


def test_missing_required_column_raises(tmp_path, cases_dataset):
    header = CASE_HEADER.replace(",amount", "")
    path = write_csv(tmp_path, f"{header}\n")

    with pytest.raises(SchemaError, match="lacks column amount") as info:
        read_export(path, cases_dataset, TransformOptions())

    assert info.value.column == "amount"


def test_reordered_columns_yield_schema_order(tmp_path, cases_dataset):
    names = CASE_HEADER.split(",")
    values = case_row("a").split(",")
    order = list(reversed(range(len(names))))
    header = ",".join(names[i] for i in order)
    row = ",".join(values[i] for i in order)
    path = write_csv(tmp_path, f"{header}\n{row}\n")

    rows, reader = read_rows(path, cases_dataset)

    assert reader.schema.names == cases_dataset.column_names
    assert rows[0]["token"] == "a"
    assert rows[0]["amount"] == Decimal("12.00")
    assert [item.kind for item in reader.report.drift].count("reordered") == 1


def test_header_in_schema_order_reports_no_reorder(tmp_path, cases_dataset):
    header = ",".join(cases_dataset.column_names)
    row = "a,u,c,2024-03-05 14:22:31,1.00,,USD,S,VISA,M,5942,00,,,,"
    path = write_csv(tmp_path, f"{header}\n{row}\n")

    rows, reader = read_rows(path, cases_dataset)

    assert reader.report.drift == []
    assert rows[0]["merchant_name"] == "M"


def test_duplicate_header_name_raises(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER},mcc\n")

    with pytest.raises(SchemaError, match="mcc more than once") as info:
        read_export(path, cases_dataset, TransformOptions())

    assert info.value.line == 1


def test_header_sharing_no_column_raises(tmp_path, cases_dataset):
    path = write_csv(tmp_path, "Some,Other,Report\n1,2,3\n")

    with pytest.raises(SchemaError, match="shares no column"):
        read_export(path, cases_dataset, TransformOptions())


def test_unknown_lookup_type_kept_as_string(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER},geo\n{case_row('a')},POINT(1 2)\n")

    with read_export(
        path,
        cases_dataset,
        TransformOptions(),
        column_lookup=lambda name: {"type": "geography"},
    ) as reader:
        rows = [row for batch in reader for row in batch.to_pylist()]

    assert reader.schema.field("geo").type == pa.string()
    assert rows[0]["geo"] == "POINT(1 2)"


@pytest.mark.parametrize(
    ("header", "position"),
    [
        (CASE_HEADER.replace(",amount,", ",,"), 5),
        (CASE_HEADER.replace(",amount,", ",  ,"), 5),
        ("," + CASE_HEADER.split(",", 1)[1], 1),
    ],
)
def test_empty_header_name_raises_with_position(
    tmp_path, cases_dataset, header, position
):
    path = write_csv(tmp_path, f"{header}\n{case_row('a')}\n")

    with pytest.raises(SchemaError) as info:
        read_rows(path, cases_dataset)

    assert f"empty column name at position {position}" in str(info.value)
    assert info.value.line == 1


def test_header_names_with_whitespace_stripped(tmp_path, cases_dataset):
    header = CASE_HEADER.replace(",amount,", ", amount ,").replace(
        "token,user_token", "token,\tuser_token"
    )
    path = write_csv(tmp_path, f"{header},fee \n{case_row('a')},1.25\n")

    rows, reader = read_rows(path, cases_dataset)

    assert rows[0]["amount"] == Decimal("12.00")
    assert rows[0]["user_token"] == "user-1"
    assert rows[0]["fee"] == "1.25"
    assert reader.schema.field("amount").type == pa.decimal128(18, 2)
    renamed = [item for item in reader.report.drift if item.kind == "renamed"]
    assert [item.column for item in renamed] == ["user_token", "amount", "fee"]
    assert "' amount '" in renamed[1].detail
    missing = {item.column for item in reader.report.drift if item.kind == "missing"}
    assert "amount" not in missing
    assert "user_token" not in missing


def test_header_name_in_other_case_raises(tmp_path, cases_dataset):
    header = CASE_HEADER.replace(",amount,", ",Amount,")
    path = write_csv(tmp_path, f"{header}\n{case_row('a')}\n")

    with pytest.raises(SchemaError) as info:
        read_rows(path, cases_dataset)

    assert "Amount" in str(info.value)
    assert "spells it amount" in str(info.value)
    assert info.value.column == "Amount"


def test_header_names_equal_ignoring_case_raise(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER},Fee,fee\n{case_row('a')},1,2\n")

    with pytest.raises(SchemaError) as info:
        read_rows(path, cases_dataset)

    assert "columns Fee and fee" in str(info.value)
    assert "differ only in case" in str(info.value)


def test_header_names_equal_after_strip_raise(tmp_path, cases_dataset):
    path = write_csv(tmp_path, f"{CASE_HEADER}, amount\n{case_row('a')},1\n")

    with pytest.raises(SchemaError, match="amount more than once"):
        read_rows(path, cases_dataset)


def _header_of(name):
    from connector.datasets import load_dataset

    return load_dataset(name).column_names


def test_export_of_other_dataset_raises():
    from connector.datasets import load_dataset
    from connector.transform.drift import reconcile_header

    header = _header_of("settlements/detail")

    with pytest.raises(SchemaError) as caught:
        reconcile_header(header, load_dataset("activitybalances/day"), path="x.csv")

    message = str(caught.value)
    assert "has the columns of settlements/detail" in message
    assert "Load the file as settlements/detail" in message


def test_missing_required_column_names_better_dataset():
    from connector.datasets import load_dataset
    from connector.transform.drift import reconcile_header

    # Half of the columns of cards/detail plus one of authorizations/detail:
    # too little to be sure, but enough for a hint.
    header = _header_of("cards/detail")
    header = [*header[: len(header) // 2 + 2], "merchant_name"]

    with pytest.raises(SchemaError, match="lacks column transaction_token") as caught:
        reconcile_header(header, load_dataset("authorizations/detail"), path="x.csv")

    assert "match cards/detail better" in str(caught.value)


def test_own_columns_plus_new_ones_load(caplog):
    from connector.datasets import load_dataset
    from connector.transform.drift import reconcile_header

    # DiVA adding columns to a view must not look like another dataset.
    header = [*_header_of("authorizations/detail"), "fee", "fee_currency"]

    with caplog.at_level(logging.WARNING):
        effective, drift = reconcile_header(
            header, load_dataset("authorizations/detail"), path="x.csv"
        )

    assert effective.column_names == header
    assert [item.kind for item in drift] == ["added", "added"]
