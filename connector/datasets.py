"""The dataset registry: schema files, keys, date columns and column types.

Each DiVA dataset is a `view/aggregation` pair described by one JSON file,
`schemas/<view>/<aggregation>.json`, installed as the `connector.schemas`
package. A file contains DiVA's schema objects (`field`, `type`, `display`,
`description`, `units`, ...) under `columns`, plus what DiVA does not publish:
the row `key`, the window `date_column`, and per column whether it is
`confirmed` by the public documentation and whether it is `nullable`.

Type names are mapped to exact Arrow types here, once, for every stage:

| DiVA type | Arrow type |
|---|---|
| `character varying(n)`, `varchar(n)`, `TEXT` | string (limit n kept as `max_length`) |
| `numeric(p,s)`, `decimal(p,s)`, `NUMBER` with `scale` | decimal128(p, s) |
| `numeric`, `decimal` without precision | decimal128(38, 9) |
| `bigint` | int64 |
| `integer`, `int`, `smallint` | int32 (int16 for smallint) |
| `date` | date32 |
| `timestamp`, `timestamp without time zone` | timestamp[us, UTC] |
| `timestamp with time zone` | timestamp[us, UTC] |
| `boolean` | bool |
| anything else | string, with a warning |
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.errors import ConfigError, SchemaError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Precision and scale given to `numeric`/`decimal` columns that declare none.
DEFAULT_DECIMAL_PRECISION = 38
DEFAULT_DECIMAL_SCALE = 9

_LENGTH_TYPE = re.compile(
    r"^(character varying|varchar|character|char|text)\s*(?:\(\s*(\d+)\s*\))?$"
)
_DECIMAL_TYPE = re.compile(
    r"^(numeric|decimal|number)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$"
)
_PLAIN_TYPES = {
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
class ColumnType:
    """A DiVA column type resolved to one of the connector's kinds.

    Attributes:
        kind: One of `string`, `decimal`, `int16`, `int32`, `int64`, `date`,
            `timestamp`, `bool`.
        precision: Total digits, for decimals.
        scale: Digits after the point, for decimals.
        max_length: Maximum length in characters, for strings with a limit.
        known: False when the DiVA type name was not recognised and the
            column falls back to a string.
    """

    kind: str
    precision: int | None = None
    scale: int | None = None
    max_length: int | None = None
    known: bool = True

    def arrow_type(self) -> pa.DataType:
        """Return the exact Arrow type for this column type."""
        import pyarrow as pa

        match self.kind:
            case "decimal":
                return pa.decimal128(self.precision, self.scale)
            case "int16":
                return pa.int16()
            case "int32":
                return pa.int32()
            case "int64":
                return pa.int64()
            case "date":
                return pa.date32()
            case "timestamp":
                return pa.timestamp("us", tz="UTC")
            case "bool":
                return pa.bool_()
            case _:
                return pa.string()


def parse_diva_type(
    type_name: str,
    *,
    scale: int | None = None,
    precision: int | None = None,
    character_maximum_length: int | None = None,
) -> ColumnType:
    """Map a DiVA type name to a `ColumnType`.

    Args:
        type_name: The `type` of a DiVA schema object, e.g. `numeric(12,2)`.
        scale: The `scale` field that newer views send beside `NUMBER`.
        precision: A `precision` field, when the schema object has one.
        character_maximum_length: The length limit sent beside `TEXT`.

    Unknown type names never raise: they map to a string column with
    `known=False`, and the caller decides how to warn.
    """
    name = " ".join(str(type_name).strip().lower().split())

    if match := _LENGTH_TYPE.match(name):
        length = int(match.group(2)) if match.group(2) else character_maximum_length
        return ColumnType("string", max_length=length)

    if match := _DECIMAL_TYPE.match(name):
        declared_precision = match.group(2)
        declared_scale = match.group(3)
        if declared_precision is not None:
            p = int(declared_precision)
            s = int(declared_scale) if declared_scale is not None else 0
        else:
            p = precision or DEFAULT_DECIMAL_PRECISION
            s = scale if scale is not None else DEFAULT_DECIMAL_SCALE
        if not 1 <= p <= 38 or not 0 <= s <= p:
            raise SchemaError(
                f"Invalid decimal type {type_name!r}: precision must be 1..38 and "
                "scale 0..precision."
            )
        return ColumnType("decimal", precision=p, scale=s)

    if name in _PLAIN_TYPES:
        return ColumnType(_PLAIN_TYPES[name])

    return ColumnType("string", known=False)


@dataclass(frozen=True)
class Column:
    """One column of a dataset, as its schema file describes it."""

    name: str
    diva_type: str
    type: ColumnType
    nullable: bool = True
    confirmed: bool = True
    units: str | None = None
    description: str | None = None

    @classmethod
    def from_schema_object(cls, obj: dict[str, Any]) -> Column:
        """Build a column from one DiVA schema object (or one of our files')."""
        try:
            name = obj["field"]
            diva_type = obj["type"]
        except KeyError as err:
            raise SchemaError(
                f"Schema object {obj!r} has no {err.args[0]!r}; every column needs "
                "'field' and 'type'."
            ) from err
        column_type = parse_diva_type(
            diva_type,
            scale=obj.get("scale"),
            precision=obj.get("precision"),
            character_maximum_length=obj.get("character_maximum_length"),
        )
        if not column_type.known:
            log.warning(
                "Column %s has the unknown DiVA type %r; it is kept as a string.",
                name,
                diva_type,
            )
        return cls(
            name=name,
            diva_type=diva_type,
            type=column_type,
            nullable=obj.get("nullable", True),
            confirmed=obj.get("confirmed", True),
            units=obj.get("units"),
            description=obj.get("description"),
        )


@dataclass(frozen=True)
class Dataset:
    """A DiVA dataset: one view at one aggregation level.

    Attributes:
        view: The view name, e.g. `authorizations`.
        aggregation: The aggregation level, e.g. `detail`; empty for views
            that have none.
        key: The columns that identify a row, used for upserts.
        date_column: The column that windows filter on, or None when the
            view has no date column.
        columns: The columns in the order of the schema file.
    """

    view: str
    aggregation: str
    key: tuple[str, ...]
    date_column: str | None
    columns: tuple[Column, ...]
    unconfirmed_note: str | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The `view/aggregation` name used on the command line."""
        return f"{self.view}/{self.aggregation}" if self.aggregation else self.view

    @property
    def path(self) -> str:
        """The URL path below the base URL, e.g. `views/authorizations/detail`."""
        return f"views/{self.name}"

    @property
    def column_names(self) -> list[str]:
        """The column names in schema order."""
        return [column.name for column in self.columns]

    def column(self, name: str) -> Column:
        """Return the column called `name`.

        Raises:
            SchemaError: The dataset has no such column.
        """
        for column in self.columns:
            if column.name == name:
                return column
        raise SchemaError(f"Dataset {self.name} has no column {name!r}.", column=name)

    def arrow_schema(self) -> pa.Schema:
        """Return the Arrow schema with the exact type of every column."""
        import pyarrow as pa

        return pa.schema(
            [
                pa.field(c.name, c.type.arrow_type(), nullable=c.nullable)
                for c in self.columns
            ]
        )

    def with_columns(self, columns: list[Column]) -> Dataset:
        """Return a copy of this dataset with another column list."""
        return Dataset(
            self.view,
            self.aggregation,
            self.key,
            self.date_column,
            tuple(columns),
            self.unconfirmed_note,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dataset:
        """Build a dataset from the content of a schema file.

        Raises:
            SchemaError: The content lacks a required field, or its key or
                date column is not one of its columns.
        """
        try:
            view = data["view"]
            columns = tuple(Column.from_schema_object(c) for c in data["columns"])
        except KeyError as err:
            raise SchemaError(
                f"Schema file content has no {err.args[0]!r} field."
            ) from err
        dataset = cls(
            view=view,
            aggregation=data.get("aggregation") or "",
            key=tuple(data.get("key") or ()),
            date_column=data.get("date_column"),
            columns=columns,
            unconfirmed_note=data.get("unconfirmed_note"),
        )
        names = set(dataset.column_names)
        if len(names) != len(columns):
            raise SchemaError(f"Schema of {dataset.name} lists a column twice.")
        for name in (*dataset.key, dataset.date_column):
            if name is not None and name not in names:
                raise SchemaError(
                    f"Schema of {dataset.name} names {name!r} as key or date column, "
                    "but has no such column."
                )
        return dataset

    @classmethod
    def from_file(cls, path: str | Path) -> Dataset:
        """Read a dataset from a schema file on disk, such as a test schema."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SchemaError(f"Cannot read schema file {path}: {err}") from err
        return cls.from_dict(data)


def schemas_root() -> Path:
    """Return the folder holding the installed schema files."""
    return Path(str(resources.files("connector.schemas")))


def list_datasets() -> list[str]:
    """Return the names of every dataset with a schema file, sorted."""
    root = schemas_root()
    names = []
    for path in sorted(root.rglob("*.json")):
        relative = path.relative_to(root).with_suffix("")
        names.append(relative.as_posix())
    return names


@cache
def load_dataset(name: str) -> Dataset:
    """Return the dataset called `name` (`view/aggregation`) from `schemas/`.

    Raises:
        ConfigError: No schema file exists for that name.
    """
    clean = name.strip().strip("/")
    if not re.fullmatch(r"[a-z_]+(/[a-z_]+)*", clean):
        if re.fullmatch(r"[a-z_]+(/[a-z_]+)*", clean.lower()):
            raise ConfigError(
                f"Invalid dataset name {name!r}: dataset names are lower case; "
                f"use {clean.lower()}."
            )
        raise ConfigError(
            f"Invalid dataset name {name!r}: expected view/aggregation, "
            "e.g. authorizations/detail."
        )
    path = schemas_root() / f"{clean}.json"
    if not path.is_file():
        import difflib

        names = list_datasets()
        # A view alone (`authorizations`) is completed with each aggregation.
        close = [n for n in names if n.startswith(f"{clean}/")]
        close = close or difflib.get_close_matches(clean, names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown dataset {name!r}.{hint} Run `diva-connector datasets` to list "
            "the datasets."
        )
    return Dataset.from_file(path)


def rejects_schema() -> pa.Schema:
    """Return the Arrow schema of rows set aside in quarantine mode.

    Each rejected row is kept whole: `record` is the CSV record as read,
    `line` the line it starts on (the header is line 1), `column` and
    `reason` the first problem found, and `file` the export it came from.
    """
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("file", pa.string()),
            pa.field("line", pa.int64()),
            pa.field("column", pa.string()),
            pa.field("reason", pa.string()),
            pa.field("record", pa.string()),
        ]
    )
