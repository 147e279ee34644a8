"""Every shipped schema file yields exported rows that fit its declared types."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from importlib import resources

import pytest

from connector.sandbox import Sandbox

from .conftest import ACCESS_TOKEN, APP_TOKEN, PROGRAM, TODAY, Client, read_rows


def shipped_schemas() -> list[tuple[str, dict]]:
    found = []

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.name.startswith(("_", ".")):
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".json"):
                name = prefix + entry.name.removesuffix(".json")
                found.append((name, json.loads(entry.read_text("utf-8"))))

    walk(resources.files("connector.schemas"), "")
    return sorted(found, key=lambda item: item[0])


SCHEMAS = shipped_schemas()
INT_RANGES = {
    "smallint": 2**15,
    "integer": 2**31,
    "int": 2**31,
    "bigint": 2**63,
}


def check_value(column: dict, text: str) -> str | None:
    """Return why `text` does not fit the column's DiVA type, or None."""
    type_name = " ".join(column["type"].lower().split())
    if match := re.fullmatch(r"(?:character varying|varchar)\((\d+)\)", type_name):
        return None if len(text) <= int(match.group(1)) else "longer than declared"
    if match := re.fullmatch(r"(?:numeric|decimal)\((\d+),\s*(\d+)\)", type_name):
        precision, scale = int(match.group(1)), int(match.group(2))
        return check_decimal(text, precision, scale)
    if type_name == "number":
        return check_decimal(
            text, column.get("precision") or 38, column.get("scale") or 0
        )
    if type_name in INT_RANGES:
        limit = INT_RANGES[type_name]
        ok = re.fullmatch(r"-?\d+", text) and -limit <= int(text) < limit
        return None if ok else "not an integer in range"
    if type_name == "date":
        date.fromisoformat(text)
        return None if len(text) == 10 else "not YYYY-MM-DD"
    if type_name.startswith("timestamp"):
        datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        return None
    if type_name in ("boolean", "bool"):
        return None if text in ("true", "false") else "not true/false"
    if type_name == "text":
        limit = column.get("character_maximum_length")
        return None if limit is None or len(text) <= limit else "longer than declared"
    return None


def check_decimal(text: str, precision: int, scale: int) -> str | None:
    pattern = rf"-?(\d+)\.\d{{{scale}}}" if scale else r"-?(\d+)"
    match = re.fullmatch(pattern, text)
    if match is None:
        return f"not a decimal with scale {scale}"
    if len(match.group(1).lstrip("0")) > precision - scale:
        return f"more than {precision - scale} integer digits"
    return None


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with Sandbox(
        seed=11,
        rows_per_day=6,
        app_token=APP_TOKEN,
        access_token=ACCESS_TOKEN,
        program=PROGRAM,
        pending_polls=0,
        today=TODAY,
    ) as sandbox:
        yield Client(sandbox)


@pytest.mark.parametrize(("name", "schema"), SCHEMAS, ids=[name for name, _ in SCHEMAS])
def test_exported_values_fit_declared_types(
    client: Client, name: str, schema: dict
) -> None:
    params = {}
    if schema.get("date_column"):
        params[schema["date_column"]] = "2024-03-01..2024-03-31"
    response = client.get(f"/views/{name}/csv", **params)
    assert response.status_code == 202, response.text
    token = response.json()["token"]
    rows = read_rows(client.fetch(token).content, token)

    assert rows, f"{name} exported no rows"
    assert list(rows[0]) == [column["field"] for column in schema["columns"]]
    problems = []
    for line, row in enumerate(rows, start=2):
        for column in schema["columns"]:
            text = row[column["field"]]
            if text is None:
                if column.get("nullable") is False:
                    problems.append((line, column["field"], "empty but not nullable"))
                continue
            if (reason := check_value(column, text)) is not None:
                problems.append((line, column["field"], text, reason))
    assert problems == []
    keys = [tuple(row[field] for field in schema.get("key", [])) for row in rows]
    assert len(keys) == len(set(keys)), f"{name} repeats a key"
    assert all(all(part is not None for part in key) for key in keys)
