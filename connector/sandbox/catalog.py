"""The sandbox's view catalog, read from the schema files the package ships.

The sandbox reads `connector.schemas` itself instead of going through the
connector's dataset registry, so that tests talking to the sandbox never
check the connector against its own code. Each file
`<view>/<aggregation>.json` contains DiVA schema objects under `columns`, the
row `key` and the window `date_column`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

log = logging.getLogger(__name__)

#: The keys of a schema object that DiVA's schema endpoint returns.
DIVA_SCHEMA_KEYS = (
    "field",
    "type",
    "display",
    "description",
    "units",
    "has_total",
    "date_format",
    "is_filter_only",
    "enum_values",
)

_STRING_TYPE = re.compile(
    r"^(character varying|varchar|character|char|text)\s*(?:\(\s*(\d+)\s*\))?$"
)
_DECIMAL_TYPE = re.compile(
    r"^(numeric|decimal|number)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$"
)
_PLAIN_KINDS = {
    "bigint": "int64",
    "int8": "int64",
    "integer": "int32",
    "int": "int32",
    "int4": "int32",
    "smallint": "int16",
    "int2": "int16",
    "date": "date",
    "timestamp": "timestamp",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamp",
    "timestamptz": "timestamp",
    "datetime": "timestamp",
    "boolean": "bool",
    "bool": "bool",
}


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a view, with the limits its DiVA type declares.

    Attributes:
        name: The field name.
        kind: One of `string`, `decimal`, `int16`, `int32`, `int64`, `date`,
            `timestamp`, `bool`; unknown type names become `string`.
        max_length: Maximum length in characters of a string, if declared.
        precision: Total digits of a decimal.
        scale: Digits after the point of a decimal.
        nullable: Whether the generator may leave the column empty.
        enum_values: The allowed values, when the schema lists them.
        schema_object: The DiVA schema object, as the schema endpoint returns it.
    """

    name: str
    kind: str
    max_length: int | None
    precision: int | None
    scale: int | None
    nullable: bool
    enum_values: tuple[str, ...] | None
    schema_object: dict[str, Any]


@dataclass(frozen=True)
class ViewSpec:
    """One view at one aggregation level, as the sandbox serves it."""

    name: str
    view: str
    aggregation: str
    key: tuple[str, ...]
    date_column: str | None
    columns: tuple[ColumnSpec, ...]

    def column(self, name: str) -> ColumnSpec | None:
        """Return the column called `name`, or None when the view has none."""
        for column in self.columns:
            if column.name == name:
                return column
        return None

    @property
    def column_names(self) -> list[str]:
        """The field names in schema order."""
        return [column.name for column in self.columns]


def parse_column(obj: dict[str, Any]) -> ColumnSpec:
    """Build a column spec from one schema object of a schema file."""
    type_name = " ".join(str(obj["type"]).strip().lower().split())
    kind, max_length, precision, scale = "string", None, None, None

    if match := _STRING_TYPE.match(type_name):
        length = match.group(2) or obj.get("character_maximum_length")
        max_length = int(length) if length else None
    elif match := _DECIMAL_TYPE.match(type_name):
        kind = "decimal"
        if match.group(2):
            precision = int(match.group(2))
            scale = int(match.group(3) or 0)
        else:
            precision = int(obj.get("precision") or 38)
            scale = int(obj["scale"]) if obj.get("scale") is not None else 9
    elif type_name in _PLAIN_KINDS:
        kind = _PLAIN_KINDS[type_name]
    else:
        log.warning(
            "Column %s has the unknown type %r; serving text.",
            obj["field"],
            obj["type"],
        )

    enum_values = obj.get("enum_values")
    return ColumnSpec(
        name=obj["field"],
        kind=kind,
        max_length=max_length,
        precision=precision,
        scale=scale,
        nullable=bool(obj.get("nullable", True)),
        enum_values=tuple(str(v) for v in enum_values) if enum_values else None,
        schema_object={key: obj.get(key) for key in DIVA_SCHEMA_KEYS},
    )


def parse_view(name: str, data: dict[str, Any]) -> ViewSpec:
    """Build a view spec from the content of the schema file called `name`."""
    view, _, aggregation = name.partition("/")
    return ViewSpec(
        name=name,
        view=data.get("view") or view,
        aggregation=data.get("aggregation") or aggregation,
        key=tuple(data.get("key") or ()),
        date_column=data.get("date_column"),
        columns=tuple(parse_column(obj) for obj in data["columns"]),
    )


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    found = []
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            found.extend(_walk(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(".json"):
            found.append((prefix + entry.name.removesuffix(".json"), entry))
    return found


@cache
def load_catalog() -> dict[str, ViewSpec]:
    """Read every schema file shipped in `connector.schemas`, keyed by name.

    A file that cannot be read or lacks `columns` is skipped with a warning,
    so one broken file does not take the whole sandbox down.
    """
    catalog = {}
    for name, entry in sorted(_walk(resources.files("connector.schemas"), "")):
        try:
            catalog[name] = parse_view(name, json.loads(entry.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Skipping schema file %s.json: %s", name, err)
    return catalog
