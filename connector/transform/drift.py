"""Compare an export's header with the dataset schema (schema drift).

DiVA adds columns to views without notice and our schema files are a best
knowledge, so a header that differs from the schema is reported, not
rejected: new columns are kept, missing nullable columns become nulls, and
order does not matter because batches are always built in schema order.
A header that has the columns of another dataset, and few of its own, is
rejected: the file was most likely loaded as the wrong dataset.
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
            another case, lacks a column that does not allow nulls, shares
            no column with the schema, or has the columns of another dataset.
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
            f"this dataset.{_other_dataset_hint(present, dataset)}",
            path=path,
        )
    _check_other_dataset(present, dataset, path)

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
                f"{dataset.name} requires (it does not allow nulls)."
                f"{_other_dataset_hint(present, dataset)}",
                path=path,
                line=1,
                column=column.name,
            )
        drift.append(DriftItem("missing", column.name, "filled with nulls"))
    return drift


#: A header is taken to be an export of another dataset when it shares at
#: least `_OTHER_MATCH` of the columns of both (counted over their union)
#: with that dataset, and less than `_OWN_MATCH` with its own. DiVA adding
#: a few columns to a view lowers the share only a little.
_OTHER_MATCH = 0.9
_OWN_MATCH = 0.5


def _check_other_dataset(
    present: set[str], dataset: Dataset, path: str | None
) -> None:
    """Raise when the header is clearly an export of another dataset."""
    if _match(present, dataset.column_names) >= _OWN_MATCH:
        return
    better = _better_datasets(present, dataset)
    if better and better[0][1] >= _OTHER_MATCH:
        names = " or ".join(name for name, _ in better)
        common = len(present & set(dataset.column_names))
        others = len(present) - common
        raise SchemaError(
            f"The header of {path} has the columns of {names}, not of "
            f"{dataset.name}: it has {common} of the {len(dataset.columns)} "
            f"columns of {dataset.name} and {others} others. Load the file as "
            f"{better[0][0]}, or check that the export is of the dataset you "
            "meant.",
            path=path,
            line=1,
        )


def _other_dataset_hint(present: set[str], dataset: Dataset) -> str:
    """Return a sentence naming datasets the header matches better, or ''."""
    better = [
        name
        for name, share in _better_datasets(present, dataset)
        if share >= _OWN_MATCH
    ]
    if not better:
        return ""
    return (
        f" Its columns match {' or '.join(better)} better; load it as that "
        "dataset if it is an export of it."
    )


def _better_datasets(present: set[str], dataset: Dataset) -> list[tuple[str, float]]:
    """Return the datasets that match `present` best, if better than `dataset`.

    Each comes with its share of columns in common, and all have the same,
    highest share.
    """
    from connector.datasets import list_datasets, load_dataset

    own = _match(present, dataset.column_names)
    shares = {
        name: _match(present, load_dataset(name).column_names)
        for name in list_datasets()
        if name != dataset.name
    }
    best = max(shares.values(), default=0.0)
    if best <= own:
        return []
    return [(name, share) for name, share in shares.items() if share == best]


def _match(present: set[str], columns: list[str]) -> float:
    """Return the share of columns in common, of all columns in either set."""
    union = present | set(columns)
    return len(present & set(columns)) / len(union) if union else 0.0


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
