"""Query parameters of the view endpoints: filters, fields, sorting, limits.

DiVA reads every parameter it does not reserve as a column name, so an
unknown parameter is a 400 naming it. Column filters are `col=value`
(equality), `col=A..B` (both ends inclusive) and comparisons written as a
prefix of the value: `col=>=X`, `col=>X`, `col=<X`, `col=<=X`.

A date-only bound on a timestamp column covers the whole day when it is an
upper bound (`..B`, `<=B`) or an equality, and starts at midnight otherwise.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from connector.sandbox.catalog import ColumnSpec, ViewSpec

#: Records in one JSON response, at most.
JSON_RECORD_LIMIT = 10_000
#: Rows in an export when the request names no `max_count`.
DEFAULT_EXPORT_ROWS = 1_048_575
#: The largest `max_count` an export accepts.
MAX_EXPORT_ROWS = 5_000_000
#: Days in the window applied when a request has no date filter.
DEFAULT_WINDOW_DAYS = 7

RESERVED = frozenset({"program", "fields", "sort_by", "count", "compress", "max_count"})

_OPERATORS: dict[str, Callable[[object, object], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?Z?)?$"
)


class ApiProblem(Exception):
    """A rejected or failed request, sent back as a DiVA error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Condition:
    """One comparison of a column against a typed operand."""

    column: str
    op: str
    operand: object

    def matches(self, row: dict[str, object]) -> bool:
        """Return whether `row` satisfies the comparison; nulls never do."""
        value = row.get(self.column)
        return value is not None and _OPERATORS[self.op](value, self.operand)


@dataclass
class Query:
    """The parsed parameters of one view request."""

    programs: tuple[str, ...]
    conditions: list[Condition] = field(default_factory=list)
    fields: list[str] | None = None
    sort: list[tuple[str, bool]] = field(default_factory=list)
    count: int = JSON_RECORD_LIMIT
    max_count: int | None = None
    compress: str = "gz"
    first_day: date | None = None
    last_day: date | None = None


def parse_query(
    spec: ViewSpec, params: Iterable[tuple[str, str]], today: date
) -> Query:
    """Parse the query parameters of a request on `spec`.

    Raises:
        ApiProblem: A parameter is missing, unknown or malformed (400).
    """
    params = list(params)
    programs = [value for name, value in params if name == "program"]
    if not programs or not programs[-1].strip():
        raise ApiProblem(400, "400001", "The program parameter is required.")
    query = Query(
        programs=tuple(p.strip() for p in programs[-1].split(",") if p.strip())
    )

    for name, value in params:
        if name in RESERVED:
            _apply_reserved(spec, query, name, value)
            continue
        column = spec.column(name)
        if column is None:
            raise ApiProblem(
                400,
                "400002",
                f"The view {spec.name} does not have a column with the name {name}.",
            )
        query.conditions.extend(parse_filter(column, value))

    query.first_day, query.last_day = date_window(spec, query.conditions, today)
    return query


def _apply_reserved(spec: ViewSpec, query: Query, name: str, value: str) -> None:
    if name == "fields":
        query.fields = [_known_column(spec, part) for part in _split(value)]
    elif name == "sort_by":
        query.sort = [
            (_known_column(spec, part.lstrip("-")), part.startswith("-"))
            for part in _split(value)
        ]
    elif name == "count":
        query.count = min(_parse_count(name, value, 0), JSON_RECORD_LIMIT)
    elif name == "max_count":
        query.max_count = _parse_count(name, value, 1)
        if query.max_count > MAX_EXPORT_ROWS:
            raise ApiProblem(
                400,
                "400004",
                f"max_count {value} is above the maximum of {MAX_EXPORT_ROWS}.",
            )
    elif name == "compress":
        if value not in ("gz", "gzip", "zip"):
            raise ApiProblem(
                400, "400005", f"Invalid compress value {value!r}: use gz or zip."
            )
        query.compress = "zip" if value == "zip" else "gz"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _known_column(spec: ViewSpec, name: str) -> str:
    if spec.column(name) is None:
        raise ApiProblem(
            400,
            "400002",
            f"The view {spec.name} does not have a column with the name {name}.",
        )
    return name


def _parse_count(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ApiProblem(
            400,
            "400003",
            f"Invalid {name} {value!r}: expected a whole number >= {minimum}.",
        )
    return number


def parse_filter(column: ColumnSpec, text: str) -> list[Condition]:
    """Parse one filter value (`A..B`, `>=X`, `X`, ...) on `column`."""
    if ".." in text and column.kind != "string":
        low, _, high = text.partition("..")
        return [
            Condition(column.name, ">=", parse_operand(column, low, upper=False)),
            _upper_condition(column, "<=", high),
        ]
    for op in (">=", "<=", ">", "<"):
        if text.startswith(op):
            if op in ("<=", "<"):
                return [_upper_condition(column, op, text[len(op) :])]
            return [
                Condition(
                    column.name, op, parse_operand(column, text[len(op) :], False)
                )
            ]
    if column.kind == "timestamp" and _is_date_only(text):
        return [
            Condition(column.name, ">=", parse_operand(column, text, upper=False)),
            _upper_condition(column, "<=", text),
        ]
    return [Condition(column.name, "=", parse_operand(column, text, upper=False))]


def _upper_condition(column: ColumnSpec, op: str, text: str) -> Condition:
    operand = parse_operand(column, text, upper=True)
    if column.kind == "timestamp" and op == "<=" and _is_date_only(text):
        return Condition(column.name, "<", operand)
    return Condition(column.name, op, operand)


def _is_date_only(text: str) -> bool:
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()) is not None


def parse_operand(column: ColumnSpec, text: str, upper: bool) -> object:
    """Convert a filter operand to the column's Python type.

    A date-only upper bound on a timestamp column becomes the next midnight,
    so that the caller can compare with `<` and cover the whole day.

    Raises:
        ApiProblem: The operand does not fit the column's type (400).
    """
    text = text.strip()
    try:
        match column.kind:
            case "timestamp":
                moment = _parse_timestamp(text)
                if upper and _is_date_only(text):
                    moment += timedelta(days=1)
                return moment
            case "date":
                return _parse_timestamp(text).date()
            case "int16" | "int32" | "int64":
                return int(text)
            case "decimal":
                return Decimal(text)
            case "bool":
                return {"true": True, "false": False}[text.lower()]
            case _:
                return text
    except (ValueError, KeyError, InvalidOperation) as err:
        raise ApiProblem(
            400,
            "400003",
            f"Invalid filter value {text!r} for column {column.name} of type "
            f"{column.schema_object.get('type')}.",
        ) from err


def _parse_timestamp(text: str) -> datetime:
    match = _TIMESTAMP.match(text)
    if match is None:
        raise ValueError(text)
    return datetime.fromisoformat(f"{match.group(1)}T{match.group(2) or '00:00:00'}")


def date_window(
    spec: ViewSpec, conditions: list[Condition], today: date
) -> tuple[date | None, date | None]:
    """Return the first and last day that rows must be made for.

    Without a filter on the date column the window is the last
    `DEFAULT_WINDOW_DAYS` days before `today`. Only days before `today` hold
    rows, as DiVA's data lags behind the current day.
    """
    if spec.date_column is None:
        return None, None
    first = last = None
    for condition in conditions:
        if condition.column != spec.date_column:
            continue
        operand = condition.operand
        day = operand.date() if isinstance(operand, datetime) else operand
        if condition.op == "<" and (
            not isinstance(operand, datetime) or operand.time() == time()
        ):
            day -= timedelta(days=1)
        if condition.op in (">=", ">", "="):
            first = max(first or day, day)
        if condition.op in ("<=", "<", "="):
            last = min(last or day, day)

    if first is None and last is None:
        return today - timedelta(days=DEFAULT_WINDOW_DAYS), today - timedelta(days=1)
    yesterday = today - timedelta(days=1)
    last = min(last or yesterday, yesterday)
    # NOTE: how DiVA bounds a filter with only an upper end is undocumented;
    # the sandbox serves the default window's length before that end.
    first = first or last - timedelta(days=DEFAULT_WINDOW_DAYS - 1)
    return first, last


def sort_rows(rows: list[dict[str, object]], sort: list[tuple[str, bool]]) -> None:
    """Sort `rows` in place by the `(column, descending)` pairs; nulls go last."""
    for name, descending in reversed(sort):
        present = [row for row in rows if row.get(name) is not None]
        empty = [row for row in rows if row.get(name) is None]
        present.sort(key=lambda row: row[name], reverse=descending)
        rows[:] = present + empty
