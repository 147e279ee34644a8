"""Tests of refreshing schema files from DiVA's schema endpoint responses."""

from __future__ import annotations

import copy
import json
import shutil
import stat

import pytest

from connector.datasets import Dataset, schemas_root
from connector.errors import ConfigError, SchemaError
from connector.schema_refresh import (
    SchemaChange,
    describe_change,
    diff_schema,
    refresh_dataset,
    refresh_schema_file,
)

OUR_KEYS = ("confirmed", "nullable")


def api_answer(content: dict) -> list[dict]:
    """Return what the schema endpoint would send for a file's columns."""
    return [
        {k: v for k, v in column.items() if k not in OUR_KEYS}
        for column in content["columns"]
    ]


def column_named(columns: list[dict], name: str) -> dict:
    return next(column for column in columns if column["field"] == name)


@pytest.fixture
def schema_path(tmp_path):
    """A writable copy of the shipped loads/day schema file."""
    path = tmp_path / "day.json"
    shutil.copyfile(schemas_root() / "loads" / "day.json", path)
    return path


@pytest.fixture
def content(schema_path):
    return json.loads(schema_path.read_text("utf-8"))


def leftover_files(path):
    return sorted(p.name for p in path.parent.iterdir() if p != path)


# --- diff_schema ---------------------------------------------------------------


def test_diff_same_columns_empty(content):
    change = diff_schema(content, api_answer(content))

    assert change.is_empty
    assert change == SchemaChange()


def test_diff_reports_added_in_api_order(content):
    answer = api_answer(content)
    answer.insert(2, {"field": "network", "type": "character varying(20)"})
    answer.append({"field": "memo", "type": "TEXT"})

    change = diff_schema(content, answer)

    assert change.added == ["network", "memo"]
    assert change.removed == []
    assert change.retyped == []


def test_diff_reports_removed_in_file_order(content):
    answer = [
        c for c in api_answer(content) if c["field"] not in ("fee_amount", "load_count")
    ]

    change = diff_schema(content, answer)

    assert change.removed == ["load_count", "fee_amount"]
    assert change.added == []


def test_diff_reports_retyped_types(content):
    answer = api_answer(content)
    column_named(answer, "transaction_amount")["type"] = "numeric(18,4)"

    change = diff_schema(content, answer)

    assert change.retyped == [("transaction_amount", "numeric(38,2)", "numeric(18,4)")]


def test_diff_ignores_type_spelling(content):
    answer = api_answer(content)
    column_named(answer, "transaction_amount")["type"] = "NUMERIC( 38, 2 )"
    column_named(answer, "load_count")["type"] = "BIGINT"

    assert diff_schema(content, answer).is_empty


def test_diff_reports_number_scale_change(content):
    column_named(content["columns"], "fee_amount").update(type="NUMBER", scale=2)
    answer = api_answer(content)
    column_named(answer, "fee_amount")["scale"] = 4

    change = diff_schema(content, answer)

    assert change.retyped == [("fee_amount", "NUMBER (scale=2)", "NUMBER (scale=4)")]


# --- refresh_schema_file -------------------------------------------------------


def test_refresh_marks_columns_confirmed(schema_path, content):
    refresh_schema_file(schema_path, api_answer(content))

    refreshed = json.loads(schema_path.read_text("utf-8"))
    assert all(column["confirmed"] for column in refreshed["columns"])


def test_refresh_keeps_nullable_flags(schema_path, content):
    answer = api_answer(content)
    answer.append({"field": "network", "type": "character varying(20)"})

    refresh_schema_file(schema_path, answer)

    columns = json.loads(schema_path.read_text("utf-8"))["columns"]
    assert column_named(columns, "post_date")["nullable"] is False
    assert column_named(columns, "program")["nullable"] is False
    assert column_named(columns, "fee_amount")["nullable"] is True
    assert column_named(columns, "network")["nullable"] is True


def test_refresh_applies_every_change(schema_path, content):
    answer = [c for c in api_answer(content) if c["field"] != "fee_amount"]
    column_named(answer, "load_count")["type"] = "integer"
    answer.append({"field": "network", "type": "character varying(20)"})

    change = refresh_schema_file(schema_path, answer)

    assert change.added == ["network"]
    assert change.removed == ["fee_amount"]
    assert change.retyped == [("load_count", "bigint", "integer")]
    dataset = Dataset.from_file(schema_path)
    assert "fee_amount" not in dataset.column_names
    assert dataset.column("network").type.kind == "string"
    assert dataset.column("load_count").type.kind == "int32"


def test_refresh_takes_api_column_order(schema_path, content):
    answer = list(reversed(api_answer(content)))

    refresh_schema_file(schema_path, answer)

    columns = json.loads(schema_path.read_text("utf-8"))["columns"]
    assert [c["field"] for c in columns] == [c["field"] for c in answer]


def test_refresh_keeps_file_level_fields(tmp_path):
    path = tmp_path / "week.json"
    shutil.copyfile(schemas_root() / "cardcounts" / "week.json", path)
    before = json.loads(path.read_text("utf-8"))

    refresh_schema_file(path, api_answer(before))

    after = json.loads(path.read_text("utf-8"))
    for name in ("view", "aggregation", "key", "date_column", "unconfirmed_note"):
        assert after[name] == before[name], name


def test_refresh_keeps_missing_descriptions(schema_path, content):
    answer = api_answer(content)
    column_named(answer, "fee_amount")["description"] = None
    column_named(answer, "load_count")["description"] = "Loads in the period."

    refresh_schema_file(schema_path, answer)

    columns = json.loads(schema_path.read_text("utf-8"))["columns"]
    ours = column_named(content["columns"], "fee_amount")["description"]
    assert column_named(columns, "fee_amount")["description"] == ours
    assert column_named(columns, "load_count")["description"] == "Loads in the period."


def test_refresh_stores_snake_case_keys(schema_path, content):
    answer = api_answer(content)
    column = column_named(answer, "load_count")
    column["hasTotal"] = column.pop("has_total")

    refresh_schema_file(schema_path, answer)

    columns = json.loads(schema_path.read_text("utf-8"))["columns"]
    assert column_named(columns, "load_count")["has_total"] is True
    assert "hasTotal" not in column_named(columns, "load_count")


def test_refresh_replaces_file_by_rename(schema_path, content):
    inode_before = schema_path.stat().st_ino
    answer = api_answer(content)
    answer.append({"field": "network", "type": "character varying(20)"})

    refresh_schema_file(schema_path, answer)

    assert schema_path.stat().st_ino != inode_before
    assert leftover_files(schema_path) == []


def test_refresh_keeps_file_mode(schema_path, content):
    # mkstemp creates the temporary file as 0600; the rename must not carry
    # that mode over.
    schema_path.chmod(0o640)
    answer = api_answer(content)
    answer.append({"field": "network", "type": "character varying(20)"})

    refresh_schema_file(schema_path, answer)

    assert stat.S_IMODE(schema_path.stat().st_mode) == 0o640


def test_refresh_unchanged_skips_write(schema_path, content):
    refresh_schema_file(schema_path, api_answer(content))
    inode = schema_path.stat().st_ino
    text = schema_path.read_text("utf-8")

    change = refresh_schema_file(schema_path, api_answer(content))

    assert change.is_empty
    assert schema_path.stat().st_ino == inode
    assert schema_path.read_text("utf-8") == text


def _without(answer, name):
    return [c for c in answer if c["field"] != name]


INVALID_RESPONSES = {
    "envelope instead of list": lambda a: {"schema": a},
    "null": lambda a: None,
    "item not an object": lambda a: [*a, "network"],
    "item without field": lambda a: [*a, {"type": "integer"}],
    "item without type": lambda a: [*a, {"field": "network"}],
    "empty field name": lambda a: [*a, {"field": " ", "type": "integer"}],
    "type not a string": lambda a: [*a, {"field": "network", "type": 7}],
    "duplicate column": lambda a: [*a, copy.deepcopy(a[0])],
    "key column missing": lambda a: _without(a, "transaction_type"),
    "date column missing": lambda a: _without(a, "post_date"),
    "invalid decimal type": lambda a: [*a, {"field": "x", "type": "numeric(50,2)"}],
}


@pytest.mark.parametrize("case", list(INVALID_RESPONSES))
def test_invalid_response_leaves_file(schema_path, content, case):
    original = schema_path.read_bytes()
    answer = INVALID_RESPONSES[case](api_answer(content))

    with pytest.raises(SchemaError):
        refresh_schema_file(schema_path, answer)

    assert schema_path.read_bytes() == original
    assert leftover_files(schema_path) == []


def test_missing_key_column_named(content):
    answer = _without(api_answer(content), "transaction_type")

    with pytest.raises(SchemaError, match="transaction_type"):
        diff_schema(content, answer)


def test_non_json_value_leaves_file(schema_path, content):
    original = schema_path.read_bytes()
    answer = api_answer(content)
    answer.append({"field": "network", "type": "integer", "enum_values": {1, 2}})

    with pytest.raises(SchemaError, match="not JSON"):
        refresh_schema_file(schema_path, answer)

    assert schema_path.read_bytes() == original
    assert leftover_files(schema_path) == []


def test_unreadable_schema_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")

    with pytest.raises(SchemaError, match="broken.json"):
        refresh_schema_file(path, [{"field": "a", "type": "integer"}])


def test_refresh_dataset_unknown_name():
    with pytest.raises(ConfigError):
        refresh_dataset("nosuchview/detail", [])


# --- describe_change -----------------------------------------------------------


def test_describe_empty_change():
    assert (
        describe_change("loads/day", SchemaChange()) == "loads/day: no column changes."
    )


def test_describe_change_lists_columns():
    change = SchemaChange(
        added=["network"],
        removed=["fee_amount"],
        retyped=[("load_count", "bigint", "integer")],
    )

    lines = describe_change("loads/day", change).splitlines()

    assert lines[0] == "loads/day: 1 added, 1 removed, 1 retyped"
    assert "  added    network" in lines
    assert "  removed  fee_amount" in lines
    assert "  retyped  load_count: bigint -> integer" in lines
    assert len(lines) == 4
