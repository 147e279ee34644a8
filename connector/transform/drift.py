"""Compare an export's header with the dataset schema (schema drift).

DiVA adds columns to views without notice and our schema files are a best
knowledge, so a header that differs from the schema is reported, not
rejected: new columns are kept, missing nullable columns become nulls, and
order does not matter because batches are always built in schema order.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.datasets import Column, ColumnType, Dataset
from connector.errors import SchemaError

log = logging.getLogger(__name__)

ColumnLookup = Callable[[str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class DriftItem:
    """One difference between an export's header and the dataset schema.

    Attributes:
        kind: `added` (in the header, not in the schema), `missing` (in the
            schema, not in the header), `reordered`, or `renamed` (a header
            name with surrounding whitespace, read without it).
        column: The column concerned; for `reordered`, the first column out
            of schema order; for `renamed`, the name without whitespace.
        detail: What the connector did about it.
    """

    kind: str
    column: str
    detail: str


def reconcile_header(
    header: list[str],
    dataset: Dataset,
    column_lookup: ColumnLookup | None = None,
    *,
    path: str | None = None,
) -> tuple[Dataset, list[DriftItem]]:
    """Return the effective dataset for `header` and the drift found.

    The effective dataset contains the schema's columns in schema order, then
    each new header column in header order.

    Args:
        header: The column names of the export, in file order.
        dataset: The dataset the export should hold.
        column_lookup: Returns DiVA's schema object for a new column name,
            or None when it is unknown; new columns are strings without it.
        path: The export file, for error messages.

    Raises:
        SchemaError: The header has an empty name, names a column twice (also
            when the names differ only in case), spells a schema column in
            another case, lacks a column that does not allow nulls, or shares
            no column with the schema.
    """
    header, renamed = normalize_header(header, path)
    _check_duplicates(header, path)
    _check_case(header, dataset, path)
    known = set(dataset.column_names)
    present = set(header)
    if not known & present:
        raise SchemaError(
            f"The header of {path} shares no column with dataset {dataset.name} "
            f"(header: {', '.join(header[:10])}); the file is not an export of "
            "this dataset.",
            path=path,
        )

    drift = renamed + _missing_columns(dataset, present, path)
    added = [_new_column(name, column_lookup) for name in header if name not in known]
    drift += [
        DriftItem("added", column.name, _describe_added(column)) for column in added
    ]
    drift += _reordered(header, dataset)

    if drift:
        log.warning(
            "Schema drift in %s: %s.",
            path,
            "; ".join(
                f"{item.kind} column {item.column} ({item.detail})" for item in drift
            ),
        )
    effective = dataset.with_columns([*dataset.columns, *added]) if added else dataset
    return effective, drift


def normalize_header(
    header: list[str], path: str | None = None
) -> tuple[list[str], list[DriftItem]]:
    """Strip surrounding whitespace from header names and check none is empty.

    Returns:
        The stripped names in file order, and a `renamed` drift item for each
        name that changed.

    Raises:
        SchemaError: A name is empty or only whitespace.
    """
    names = []
    renamed = []
    for position, raw in enumerate(header, start=1):
        name = raw.strip()
        if not name:
            raise SchemaError(
                f"The header of {path} has an empty column name at position "
                f"{position} (header: {','.join(header[:10])}); every column of a "
                "DiVA export is named. Check that the file is an unmodified export.",
                path=path,
                line=1,
                value=raw,
            )
        if name != raw:
            detail = f"header name {raw!r} had surrounding whitespace; read as {name}"
            renamed.append(DriftItem("renamed", name, detail))
        names.append(name)
    return names, renamed


def _check_duplicates(header: list[str], path: str | None) -> None:
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise SchemaError(
            f"The header of {path} names column(s) {', '.join(repeated)} more than "
            "once, so their values cannot be told apart.",
            path=path,
            line=1,
            column=repeated[0],
        )
    first_spelling: dict[str, str] = {}
    for name in header:
        other = first_spelling.setdefault(name.casefold(), name)
        if other != name:
            raise SchemaError(
                f"The header of {path} has columns {other} and {name}, which differ "
                "only in case; SQLite and MariaDB treat them as one column. Rename "
                "one of them in the export.",
                path=path,
                line=1,
                column=name,
            )


def _check_case(header: list[str], dataset: Dataset, path: str | None) -> None:
    # Matching a name in another case could put a value in the wrong column,
    # so the export must use the schema's spelling exactly.
    known = set(dataset.column_names)
    by_folded = {name.casefold(): name for name in dataset.column_names}
    for name in header:
        schema_name = by_folded.get(name.casefold())
        if name not in known and schema_name is not None:
            raise SchemaError(
                f"The header of {path} has column {name}, but dataset "
                f"{dataset.name} spells it {schema_name}. Column names are matched "
                "exactly; fix the header or the schema file.",
                path=path,
                line=1,
                column=name,
            )


def _missing_columns(
    dataset: Dataset, present: set[str], path: str | None
) -> list[DriftItem]:
    drift = []
    for column in dataset.columns:
        if column.name in present:
            continue
        if not column.nullable:
            raise SchemaError(
                f"The header of {path} lacks column {column.name}, which dataset "
                f"{dataset.name} requires (it does not allow nulls).",
                path=path,
                line=1,
                column=column.name,
            )
        drift.append(DriftItem("missing", column.name, "filled with nulls"))
    return drift


def _new_column(name: str, column_lookup: ColumnLookup | None) -> Column:
    schema_object = column_lookup(name) if column_lookup is not None else None
    if schema_object is None:
        return Column(
            name=name,
            diva_type="unknown",
            confirmed=False,
            type=ColumnType("string", known=False),
        )
    return Column.from_schema_object({**schema_object, "field": name})


def _describe_added(column: Column) -> str:
    if column.diva_type == "unknown":
        return "not in the schema and unknown to the lookup; kept as a string"
    return f"not in the schema; typed as {column.diva_type}"


def _reordered(header: list[str], dataset: Dataset) -> list[DriftItem]:
    position = {name: index for index, name in enumerate(dataset.column_names)}
    shared = [name for name in header if name in position]
    expected = sorted(shared, key=position.__getitem__)
    for got, want in zip(shared, expected, strict=True):
        if got != want:
            return [
                DriftItem(
                    "reordered",
                    got,
                    f"header order differs from the schema (found {got} where "
                    f"{want} was expected); batches use schema order",
                )
            ]
    return []
