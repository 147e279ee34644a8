"""Refresh schema files from the column lists DiVA's schema endpoint returns.

`diva-connector schemas pull` fetches `views/{view}/{aggregation}/schema` and
passes the response here. The functions in this module send no HTTP requests:
they compare the response with a schema file, rewrite the file and describe
the change.

A refreshed file keeps what DiVA does not publish (the view, aggregation, row
key, window date column and our `nullable` flags) and takes DiVA's column
objects for everything else, marked `confirmed`. A file is replaced whole
(temporary file, then rename) or left untouched.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.datasets import Dataset, load_dataset, schemas_root
from connector.errors import SchemaError

log = logging.getLogger(__name__)

#: Snake-case names of the keys that older DiVA responses spell in camel case.
_KEY_SPELLINGS = {"hasTotal": "has_total", "isFilterOnly": "is_filter_only"}

#: Keys beside `type` that change how a column is typed (`TEXT`, `NUMBER`).
_TYPE_DETAILS = ("precision", "scale", "character_maximum_length")


@dataclass
class SchemaChange:
    """The difference between a schema file and DiVA's column list.

    Attributes:
        added: Columns DiVA lists that the file lacks, in DiVA's order.
        removed: Columns of the file that DiVA no longer lists, in file order.
        retyped: `(column, old type, new type)` for columns whose type changed.
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when no column was added, removed or retyped."""
        return not (self.added or self.removed or self.retyped)


def diff_schema(current: dict[str, Any], api_columns: list[dict]) -> SchemaChange:
    """Compare a schema file's content with DiVA's column list.

    Type names are compared case- and space-insensitively, so `NUMERIC(14, 2)`
    and `numeric(14,2)` are the same type.

    Args:
        current: The content of a schema file.
        api_columns: The column objects the schema endpoint returned.

    Raises:
        SchemaError: The response is not a list of objects with `field` and
            `type`, or lacks the file's key or date column.
    """
    columns = _validate_response(current, api_columns)
    old = {c["field"]: c for c in current.get("columns", [])}
    new = {c["field"]: c for c in columns}

    change = SchemaChange()
    change.added = [name for name in new if name not in old]
    change.removed = [name for name in old if name not in new]
    for name, column in new.items():
        if name in old and _type_signature(old[name]) != _type_signature(column):
            change.retyped.append(
                (name, _describe_type(old[name]), _describe_type(column))
            )
    return change


def refresh_schema_file(path: Path, api_columns: list[dict]) -> SchemaChange:
    """Rewrite a schema file with DiVA's column list and return the change.

    The view, aggregation, key, date column and any other top-level field
    are kept. Columns come from DiVA, marked `confirmed: true`, in DiVA's
    order. Columns still present keep their `nullable` flag, and their
    description when DiVA sends none. New columns are nullable. Columns that
    DiVA no longer lists are dropped.

    Args:
        path: The schema file to refresh.
        api_columns: The column objects the schema endpoint returned.

    Raises:
        SchemaError: The file cannot be read, or DiVA's response is invalid
            (see `diff_schema`) or not a valid schema. The file is then left
            as it was.
    """
    path = Path(path)
    current = _read_schema_file(path)
    change = diff_schema(current, api_columns)

    refreshed = dict(current)
    refreshed["columns"] = _merge_columns(current, api_columns)
    try:
        Dataset.from_dict(refreshed)
    except SchemaError as err:
        raise SchemaError(
            f"DiVA's schema for {path} is not usable: {err.message} "
            "The file was left unchanged."
        ) from err

    if refreshed != current:
        _write_atomically(path, refreshed)
        load_dataset.cache_clear()
        log.info("Refreshed schema file %s.", path)
    return change


def refresh_dataset(name: str, api_columns: list[dict]) -> SchemaChange:
    """Refresh the installed schema file of the dataset called `name`.

    Raises:
        ConfigError: No schema file exists for that name.
        SchemaError: As for `refresh_schema_file`.
    """
    dataset = load_dataset(name)
    return refresh_schema_file(schemas_root() / f"{dataset.name}.json", api_columns)


def describe_change(dataset_name: str, change: SchemaChange) -> str:
    """Describe a schema change in lines a person can read, one per column."""
    if change.is_empty:
        return f"{dataset_name}: no column changes."

    counts = (
        f"{len(change.added)} added, {len(change.removed)} removed, "
        f"{len(change.retyped)} retyped"
    )
    lines = [f"{dataset_name}: {counts}"]
    lines += [f"  added    {name}" for name in change.added]
    lines += [f"  removed  {name}" for name in change.removed]
    lines += [f"  retyped  {name}: {old} -> {new}" for name, old, new in change.retyped]
    return "\n".join(lines)


def _validate_response(current: dict[str, Any], api_columns: Any) -> list[dict]:
    """Return DiVA's column list after checking its shape and coverage."""
    if not isinstance(api_columns, list):
        raise SchemaError(
            f"DiVA's schema response is a {type(api_columns).__name__}, expected a "
            "list of column objects. Pass the JSON array the schema endpoint "
            "returns."
        )

    names: set[str] = set()
    for index, column in enumerate(api_columns):
        if not isinstance(column, dict):
            raise SchemaError(
                f"Item {index} of DiVA's schema response is {column!r}, expected an "
                "object with 'field' and 'type'."
            )
        for name in ("field", "type"):
            value = column.get(name)
            if not isinstance(value, str) or not value.strip():
                raise SchemaError(
                    f"Item {index} of DiVA's schema response has no valid {name!r}: "
                    f"{column!r}."
                )
        if column["field"] in names:
            raise SchemaError(
                f"DiVA's schema response lists the column {column['field']!r} twice."
            )
        names.add(column["field"])

    required = [*current.get("key", []), current.get("date_column")]
    missing = [name for name in required if name is not None and name not in names]
    if missing:
        raise SchemaError(
            f"DiVA's schema response lacks the key or date column(s) "
            f"{', '.join(missing)} of {_dataset_label(current)}. Check the "
            "dataset's key and date_column before refreshing."
        )
    return api_columns


def _merge_columns(current: dict[str, Any], api_columns: list[dict]) -> list[dict]:
    """Return DiVA's columns with our nullable flags and fallback descriptions."""
    old = {c["field"]: c for c in current.get("columns", [])}
    merged = []
    for api_column in api_columns:
        column = {_KEY_SPELLINGS.get(k, k): v for k, v in api_column.items()}
        ours = old.get(column["field"], {})
        if not column.get("description") and ours.get("description"):
            column["description"] = ours["description"]
        column["confirmed"] = True
        column["nullable"] = ours.get("nullable", True)
        merged.append(column)
    return merged


def _type_signature(column: dict[str, Any]) -> tuple:
    """Return what decides a column's type, normalised for comparison."""
    name = " ".join(str(column["type"]).lower().split())
    name = name.replace("( ", "(").replace(" )", ")").replace(", ", ",")
    return (name, *(column.get(detail) for detail in _TYPE_DETAILS))


def _describe_type(column: dict[str, Any]) -> str:
    """Return the type name with any `scale` or length detail DiVA sent."""
    details = [
        f"{detail}={column[detail]}"
        for detail in _TYPE_DETAILS
        if column.get(detail) is not None
    ]
    if not details:
        return str(column["type"])
    return f"{column['type']} ({', '.join(details)})"


def _dataset_label(content: dict[str, Any]) -> str:
    view = content.get("view", "?")
    aggregation = content.get("aggregation")
    return f"{view}/{aggregation}" if aggregation else str(view)


def _read_schema_file(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SchemaError(f"Cannot read schema file {path}: {err}") from err
    if not isinstance(content, dict):
        raise SchemaError(
            f"Schema file {path} contains a {type(content).__name__}, expected an "
            "object with 'view', 'key' and 'columns'."
        )
    return content


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    """Replace `path` with `content` through a temporary file and a rename."""
    mode = path.stat().st_mode & 0o777
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException as err:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(err, (TypeError, ValueError)):
            raise SchemaError(
                f"Cannot write schema file {path}: DiVA's response contains a value "
                f"that is not JSON ({err}). The file was left unchanged."
            ) from err
        raise
