"""Cast CSV text columns to the exact Arrow type of each dataset column.

Numbers, dates and timestamps are usually converted by pyarrow's CSV parser
itself (`parse_type`) and then only checked (`finish_parsed`). Any value the
parser or the checks reject sends the column back to the text path:
`cast_column` casts a string column, vectorised with `pyarrow.compute`, and
raises `ValueProblem` when any value does not fit. Finding which values are bad is left to the error
path (`find_bad_rows`), which bisects the column with the same cast so that
the fast path and the error path can never disagree about a value.

Accepted text, by kind:

- decimal: `12.00`, `-7.5`, `1e3`, `+3.1`, `.5`. More digits after the point than the
  scale, or more digits than the precision, is an error: values are never
  rounded.
- int16, int32, int64: `42`, `-7`. `1.0` and out-of-range values are errors.
- bool: `true`/`false`, `t`/`f`, `1`/`0`, in any case, without spaces.
- date: `YYYY-MM-DD`, optionally followed by a midnight time such as
  ` 00:00:00` or `T00:00:00.000Z`. Any other time of day is an error.
- timestamp: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.ffffff]`, and ISO 8601
  with `T`, an optional fraction of up to 6 digits, and `Z` or `+HH:MM`.
- string: any text of at most `max_length` characters (not bytes) and
  without the NUL character U+0000, which PostgreSQL text cannot store.

Dates and timestamps must fall within 0001-01-01 and 9999-12-31T23:59:59.999999
UTC, the range of Python's `datetime`, which Parquet and database readers
rely on. Timestamps are checked after conversion to UTC.

Spaces and tabs around numbers and dates are ignored, as pyarrow's CSV parser
ignores them. Empty cells arrive as nulls and stay nulls. A null in a column that is not
nullable is an error. Zone-less timestamps are read in `source_timezone`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.datasets import Column
from connector.transform.options import TransformOptions

_ONE_MICROSECOND = timedelta(microseconds=1)
#: Kinds whose text pyarrow's CSV parser trims of spaces and tabs.
_TRIMMED_KINDS = ("decimal", "int16", "int32", "int64", "date")
_PARSED_KINDS = (*_TRIMMED_KINDS, "bool")
_PARSER_SPACE = " \t"
#: The spellings of booleans pyarrow's parser reads. Any other spelling
#: that the text path accepts (`tRuE`) sends the column back to text.
PARSED_TRUE = ["true", "t", "1", "TRUE", "T", "True"]
PARSED_FALSE = ["false", "f", "0", "FALSE", "F", "False"]
_TRUE_TEXT = ("true", "t", "1")
_FALSE_TEXT = ("false", "f", "0")
_MIDNIGHT_DATE = r"^\d{4}-\d{2}-\d{2}([T ]00:00(:00(\.0{1,9})?)?(Z|[+-]00:?00)?)?$"
_ZONED_TIME = r"[T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)$"
_UTC = pa.timestamp("us", tz="UTC")
_NAIVE = pa.timestamp("us")
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_MIN_DAY = date.min.toordinal() - _EPOCH_DAY
_MAX_DAY = date.max.toordinal() - _EPOCH_DAY
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _ONE_MICROSECOND
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_MICROSECOND
_DATE_RANGE = "outside the supported dates 0001-01-01 to 9999-12-31"
_TIME_RANGE = (
    "outside the supported range 0001-01-01T00:00:00 to 9999-12-31T23:59:59.999999 "
    "UTC after conversion to UTC"
)


class ValueProblem(Exception):
    """A value, or some value of a column, does not fit the column's type."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def expected_type(column: Column) -> str:
    """Describe a column's type for error messages, e.g. `numeric(18,2)`."""
    arrow_type = column.type.arrow_type()
    if column.type.kind == "string" and column.type.max_length is not None:
        limit = column.type.max_length
        return f"{column.diva_type} ({arrow_type}, at most {limit} characters)"
    return f"{column.diva_type} ({arrow_type})"


def cast_column(
    values: pa.Array,
    column: Column,
    options: TransformOptions,
    *,
    may_hold_nul: bool = True,
) -> pa.Array:
    """Cast a string array to the column's Arrow type.

    Pass `may_hold_nul=False` when the text is known to hold no NUL
    character, which saves searching string values for one.

    Raises:
        ValueProblem: Some value does not fit; the reason names the first
            problem found, not the row.
    """
    kind = column.type.kind
    if kind in _TRIMMED_KINDS:
        values = pc.utf8_trim(values, _PARSER_SPACE)
    if kind == "string":
        if may_hold_nul:
            values = _check_no_nul(values)
        result = _check_length(values, column.type.max_length)
    elif kind == "bool":
        result = _cast_bool(values)
    elif kind == "date":
        result = _check_range(_cast_date(values), _MIN_DAY, _MAX_DAY, _DATE_RANGE)
    elif kind == "timestamp":
        result = _check_range(
            _cast_timestamp(values, options), _MIN_MICROS, _MAX_MICROS, _TIME_RANGE
        )
    else:
        result = _cast_number(values, column)

    if not column.nullable and result.null_count:
        raise ValueProblem("the value is empty, but the column does not allow nulls")
    return result


def parse_type(column: Column) -> pa.DataType:
    """Return the type pyarrow's CSV parser should convert `column` to.

    Integers, decimals, dates and booleans (spelled as in `PARSED_TRUE`
    and `PARSED_FALSE`) are parsed as their own type. Timestamps are parsed
    as zone-less microseconds. Pass such a column to `finish_parsed`.
    Strings are parsed as strings, for `cast_column`.
    """
    kind = column.type.kind
    if kind == "timestamp":
        return _NAIVE
    if kind in _PARSED_KINDS:
        return column.type.arrow_type()
    return pa.string()


def finish_parsed(
    values: pa.Array, column: Column, options: TransformOptions
) -> pa.Array:
    """Check a column that pyarrow parsed as `parse_type(column)`.

    Timestamps are read in `source_timezone` and converted to UTC.

    Raises:
        ValueProblem: Some value does not fit. Cast the column as text with
            `cast_column` to find and describe it.
    """
    kind = column.type.kind
    if kind == "decimal":
        result = _check_precision(values, column)
    elif kind == "date":
        result = _check_range(values, _MIN_DAY, _MAX_DAY, _DATE_RANGE)
    elif kind == "timestamp":
        result = _check_range(
            _localize(values, options), _MIN_MICROS, _MAX_MICROS, _TIME_RANGE
        )
    else:
        result = values
    if not column.nullable and result.null_count:
        raise ValueProblem("the value is empty, but the column does not allow nulls")
    return result


def _check_precision(values: pa.Array, column: Column) -> pa.Array:
    # The CSV parser checks the precision of the text before rescaling it, so
    # `12345678901234567.0` passes as decimal(18, 2) with 19 digits.
    precision, scale = column.type.precision, column.type.scale
    # Written out digit by digit: Decimal arithmetic would round to 28 digits.
    largest = Decimal(
        "9" * (precision - scale) + "." + "9" * scale if scale else "9" * precision
    )
    low, high = pc.min_max(values).values()
    if low.is_valid and (low.as_py() < largest.copy_negate() or high.as_py() > largest):
        raise ValueProblem("more digits than the precision")
    return values


def find_bad_rows(
    values: pa.Array, column: Column, options: TransformOptions, start: int = 0
) -> Iterator[tuple[int, str]]:
    """Yield `(index, reason)` for each value that `cast_column` rejects.

    The column is split in halves and only failing halves are searched, so
    k bad values in n cost about k * log2(n) casts. Indexes count from
    `start` and come in ascending order.
    """
    try:
        cast_column(values, column, options)
        return
    except ValueProblem as problem:
        if len(values) == 1:
            yield start, problem.reason
            return
    middle = len(values) // 2
    yield from find_bad_rows(values.slice(0, middle), column, options, start)
    yield from find_bad_rows(values.slice(middle), column, options, start + middle)


def _cast_number(values: pa.Array, column: Column) -> pa.Array:
    try:
        return pc.cast(values, column.type.arrow_type())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueProblem(_describe_number_error(column, str(err))) from err


def _describe_number_error(column: Column, message: str) -> str:
    kind = column.type.kind
    if kind != "decimal":
        return f"not a whole number in the range of {kind}"
    precision, scale = column.type.precision, column.type.scale
    if "Rescaling" in message:
        return (
            f"more than {scale} digits after the decimal point; values are never "
            "rounded"
        )
    if "precision" in message:
        return (
            f"more than {precision - scale} digits before the decimal point "
            f"(precision {precision}, scale {scale})"
        )
    return "not a decimal number"


def _check_no_nul(values: pa.Array) -> pa.Array:
    if pc.any(pc.match_substring(values, "\x00")).as_py():
        raise ValueProblem(
            "contains the NUL character U+0000, which PostgreSQL cannot store"
        )
    return values


def _check_range(result: pa.Array, lowest: int, highest: int, reason: str) -> pa.Array:
    # Arrow stores days or microseconds since 1970 and accepts year 0 and
    # years past 9999. Python's date and datetime cannot represent them, so
    # Parquet readers that return Python objects fail on such values.
    stored = result.view(pa.int32() if result.type == pa.date32() else pa.int64())
    low, high = pc.min_max(stored).values()
    if low.is_valid and (low.as_py() < lowest or high.as_py() > highest):
        raise ValueProblem(reason)
    return result


def _check_length(values: pa.Array, max_length: int | None) -> pa.Array:
    if max_length is None or values.null_count == len(values):
        return values
    # A character takes at least one byte, so the longest value in bytes,
    # read from the offsets alone, settles most columns.
    if _longest_bytes(values) <= max_length:
        return values
    longest = pc.max(pc.utf8_length(values)).as_py()
    if longest is not None and longest > max_length:
        raise ValueProblem(
            f"too long: {longest} > {max_length} characters; values are never truncated"
        )
    return values


def _longest_bytes(values: pa.Array) -> int:
    """Return the byte length of the longest value of a string array."""
    if values.type != pa.string():
        return pc.max(pc.binary_length(values)).as_py() or 0
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    offsets = offsets[values.offset : values.offset + len(values) + 1]
    # A null has no bytes of its own, so it never counts as the longest.
    return int(np.diff(offsets).max()) if len(values) else 0


def _cast_bool(values: pa.Array) -> pa.Array:
    lowered = pc.utf8_lower(values)
    is_true = pc.is_in(lowered, value_set=pa.array(_TRUE_TEXT))
    is_false = pc.is_in(lowered, value_set=pa.array(_FALSE_TEXT))
    known = pc.or_(pc.or_(is_true, is_false), pc.is_null(values))
    if not pc.all(known, min_count=0).as_py():
        raise ValueProblem("not a boolean; expected true/false, t/f or 1/0")
    return pc.if_else(is_true, True, pc.if_else(is_false, False, None))


def _cast_date(values: pa.Array) -> pa.Array:
    try:
        return pc.cast(values, pa.date32())
    except pa.ArrowInvalid:
        pass
    midnight = pc.match_substring_regex(values, _MIDNIGHT_DATE)
    if not pc.all(midnight, min_count=0).as_py():
        raise ValueProblem(
            "not a date; expected YYYY-MM-DD, optionally followed by a midnight "
            "time such as T00:00:00.000Z"
        )
    try:
        return pc.cast(pc.utf8_slice_codeunits(values, 0, 10), pa.date32())
    except pa.ArrowInvalid as err:
        raise ValueProblem("not a calendar date") from err


def _cast_timestamp(values: pa.Array, options: TransformOptions) -> pa.Array:
    # When a column uses one form throughout, all zone-less or all with a
    # zone, one of the first two casts succeeds. Only a column that mixes
    # both forms pays for the regex.
    try:
        naive = pc.cast(values, _NAIVE)
    except pa.ArrowInvalid:
        pass
    else:
        return _localize(naive, options)

    try:
        return pc.cast(values, _UTC)
    except pa.ArrowInvalid:
        pass

    zoned = pc.match_substring_regex(values, _ZONED_TIME)
    try:
        aware = pc.cast(pc.if_else(zoned, values, None), _UTC)
        naive = pc.cast(pc.if_else(zoned, None, values), _NAIVE)
    except pa.ArrowInvalid as err:
        raise ValueProblem(
            "not a timestamp; expected YYYY-MM-DD, YYYY-MM-DD HH:MM:SS[.ffffff] "
            "or ISO 8601 such as 2024-03-05T14:22:31.000Z"
        ) from err
    return pc.if_else(zoned, aware, _localize(naive, options))


def _localize(naive: pa.Array, options: TransformOptions) -> pa.Array:
    zone = options.source_timezone
    if zone == "UTC":
        return pc.cast(naive, _UTC)
    policy = options.ambiguous_times
    try:
        local = pc.assume_timezone(
            naive, timezone=zone, ambiguous=policy, nonexistent=policy
        )
    except pa.ArrowInvalid as err:
        raise ValueProblem(_describe_zone_problem(str(err), zone)) from err
    result = pc.cast(local, _UTC)
    if policy != "raise":
        result = _shift_nonexistent(naive, result, zone, policy)
    return result


def _shift_nonexistent(
    naive: pa.Array, result: pa.Array, zone: str, policy: str
) -> pa.Array:
    # Arrow maps a time in a gap to the edge of the gap (01:59:59.999999 or
    # 03:00), which loses the minutes. Read it instead with the offset in
    # force before and after the gap and keep the earliest or latest of the
    # two instants, as for ambiguous times. Such rows are rare, so this part
    # is per row.
    moved = pc.not_equal(
        pc.local_timestamp(pc.cast(result, pa.timestamp("us", zone))), naive
    )
    moved = pc.and_kleene(moved, pc.is_valid(moved))
    positions = pc.indices_nonzero(moved).to_pylist()
    if not positions:
        return result
    tz = ZoneInfo(zone)
    choose = min if policy == "earliest" else max
    replacements = []
    for position in positions:
        local_time = naive[position].as_py()
        candidates = [
            local_time.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)
        ]
        replacements.append(choose(candidates))
    mask = moved
    return pc.replace_with_mask(result, mask, pa.array(replacements, _UTC))


def _describe_zone_problem(message: str, zone: str) -> str:
    if "ambiguous" in message:
        return (
            f"ambiguous local time in {zone}: it occurs twice when clocks go back; "
            "set ambiguous_times to earliest or latest to choose one"
        )
    return (
        f"local time does not exist in {zone}: clocks skip it when they go "
        "forward; set ambiguous_times to earliest or latest to map it"
    )
