"""Deterministic rows per view and day, for any window.

Rows are made per `(view, day)` from a generator seeded with the sandbox
seed, the view name, the day and the row number, so that any window is cheap
to produce and the same seed always yields the same rows. Week and month
aggregations carry rows only on the first day of their period. A view without
a date column contains one fixed set of rows.

A `revision` above zero rewrites the state and amount columns of every tenth
row (or the first plain column when a view has neither), so that a rerun
sees changed rows under unchanged keys.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from threading import Lock

from connector.sandbox.catalog import ColumnSpec, ViewSpec
from connector.sandbox.values import (
    RowContext,
    make_value,
    string_pool,
    unique_token,
)

Row = dict[str, object]
KeyPool = tuple[ColumnSpec, list[object] | None]

#: Aggregation levels whose date column contains the start of a period.
PERIOD_AGGREGATIONS = frozenset({"day", "week", "month", "fundingday"})

#: Share of empty cells in nullable columns that are neither key nor date.
NULL_SHARE = 0.1
#: Share of rows whose amounts are negative (refunds and reversals).
NEGATIVE_SHARE = 0.08
#: Every this-many-th row changes when the revision changes.
REVISED_EVERY = 10
#: The fixed day that the rows of a view without a date column belong to.
UNDATED_DAY = date(2024, 1, 1)
#: Rows of a view without a date column, in days' worth of `rows_per_day`.
UNDATED_DAYS = 7
MAX_ROWS_PER_DAY = 99_999

_CACHE_DAYS = 4096


class DataGenerator:
    """Make the rows of every view, deterministically, per day.

    Args:
        seed: Any integer; the same seed always gives the same rows.
        rows_per_day: Rows per day for detail views; aggregated views hold
            at most one row per combination of their grouping columns.
        programs: The program names that rows are spread over.
    """

    def __init__(self, seed: int, rows_per_day: int, programs: tuple[str, ...]) -> None:
        if not 1 <= rows_per_day <= MAX_ROWS_PER_DAY:
            raise ValueError(
                f"Invalid rows_per_day {rows_per_day}: expected 1..{MAX_ROWS_PER_DAY}."
            )
        self.seed = seed
        self.rows_per_day = rows_per_day
        self.programs = programs
        self.revision = 0
        self._cache: OrderedDict[tuple, list[Row]] = OrderedDict()
        self._lock = Lock()

    def rows_for_days(self, spec: ViewSpec, first: date, last: date) -> Iterator[Row]:
        """Yield the rows of `spec` from day `first` through day `last`, in order."""
        if spec.date_column is None:
            yield from self.rows_for_day(spec, UNDATED_DAY)
            return
        day = first
        while day <= last:
            yield from self.rows_for_day(spec, day)
            day += timedelta(days=1)

    def rows_for_day(self, spec: ViewSpec, day: date) -> list[Row]:
        """Return the rows of `spec` on `day`, from the cache when possible."""
        cache_key = (spec.name, day, self.revision)
        with self._lock:
            if cache_key in self._cache:
                self._cache.move_to_end(cache_key)
                return self._cache[cache_key]

        rows = self._make_day(spec, day)

        with self._lock:
            self._cache[cache_key] = rows
            while len(self._cache) > _CACHE_DAYS:
                self._cache.popitem(last=False)
        return rows

    def _make_day(self, spec: ViewSpec, day: date) -> list[Row]:
        if not _carries_rows(spec, day):
            return []
        pools = self._key_pools(spec, day)
        count = self.rows_per_day * (UNDATED_DAYS if spec.date_column is None else 1)
        if all(pool is not None for _, pool in pools):
            count = min(count, math.prod(len(pool) for _, pool in pools))

        moments = self._moments(spec, day, count)
        rows = [
            self._make_row(spec, day, index, moments[index], pools)
            for index in range(count)
        ]
        if self.revision:
            for index in range(0, count, REVISED_EVERY):
                self._revise(spec, rows[index], day, index, moments[index])
        return rows

    def _key_pools(self, spec: ViewSpec, day: date) -> list[KeyPool]:
        """Return each non-date key column with its finite values, or None.

        A view whose key columns all have finite values (an aggregated view,
        keyed by period and grouping columns) contains at most one row per
        combination. Otherwise the unbounded key columns get unique values.
        """
        pools = []
        for name in spec.key:
            column = spec.column(name)
            if column is None or name == spec.date_column:
                continue
            pools.append((column, self._key_pool(column, day)))
        return pools

    def _key_pool(self, column: ColumnSpec, day: date) -> list[object] | None:
        if column.name == "program":
            return list(self.programs)
        match column.kind:
            case "bool":
                return [False, True]
            case "date":
                return [day - timedelta(days=offset) for offset in range(3)]
            case "timestamp":
                start = datetime.combine(day, time())
                return [start - timedelta(days=offset) for offset in range(3)]
            case "string":
                pool = string_pool(column)
                return sorted(set(pool)) if pool else None
        return None

    def _moments(self, spec: ViewSpec, day: date, count: int) -> list[datetime]:
        rng = random.Random(f"{self.seed}|{spec.name}|{day.isoformat()}|moments")
        start = datetime.combine(day, time())
        if _is_period_view(spec):
            return [start] * count
        seconds = sorted(rng.randrange(86_400) for _ in range(count))
        return [start + timedelta(seconds=s) for s in seconds]

    def _make_row(
        self,
        spec: ViewSpec,
        day: date,
        index: int,
        moment: datetime,
        pools: list[KeyPool],
    ) -> Row:
        rng = random.Random(f"{self.seed}|{spec.name}|{day.isoformat()}|{index}")
        context = RowContext(
            seed=self.seed,
            day=day,
            moment=moment,
            program=self.programs[index % len(self.programs)],
            negative=rng.random() < NEGATIVE_SHARE,
        )
        keys = self._key_values(spec, day, index, pools)
        row: Row = {}
        for column in spec.columns:
            if column.name in keys:
                row[column.name] = keys[column.name]
            elif column.name == spec.date_column:
                row[column.name] = moment if column.kind == "timestamp" else day
            elif column.nullable and rng.random() < NULL_SHARE:
                row[column.name] = None
            else:
                row[column.name] = make_value(column, rng, context)
        return row

    def _key_values(
        self, spec: ViewSpec, day: date, index: int, pools: list[KeyPool]
    ) -> Row:
        """Return the key columns of row `index`, unique within the view's day."""
        values: Row = {}
        if all(pool is not None for _, pool in pools):
            # Mixed-radix digits of the row number pick one combination each.
            remainder = index
            for column, pool in reversed(pools):
                remainder, digit = divmod(remainder, len(pool))
                values[column.name] = pool[digit]
            return values

        rng = random.Random(f"{self.seed}|{spec.name}|{day.isoformat()}|{index}|keys")
        for column, pool in pools:
            if pool is None:
                values[column.name] = self._unique_value(spec, column, day, index)
            else:
                values[column.name] = rng.choice(pool)
        return values

    def _unique_value(
        self, spec: ViewSpec, column: ColumnSpec, day: date, index: int
    ) -> object:
        if column.kind in ("int64", "int32", "int16"):
            return _unique_integer(spec, column, day, index)
        token = unique_token(self.seed, spec.name, day, index)
        if column.max_length is not None and column.max_length < len(token):
            token = token.replace("-", "")[: column.max_length]
        return token

    def _revise(
        self, spec: ViewSpec, row: Row, day: date, index: int, moment: datetime
    ) -> None:
        rng = random.Random(f"{self.seed}|{spec.name}|{day}|{index}|rev{self.revision}")
        context = RowContext(
            self.seed, day, moment, str(row.get("program") or ""), False
        )
        for column in _revised_columns(spec):
            # A few draws make sure the value really changes, even from a
            # small pool such as the networks.
            for _ in range(8):
                value = make_value(column, rng, context)
                if value != row[column.name]:
                    break
            row[column.name] = value


def _carries_rows(spec: ViewSpec, day: date) -> bool:
    aggregation = spec.aggregation.lower()
    if aggregation.startswith("week"):
        return day.weekday() == 0
    if aggregation.startswith("month"):
        return day.day == 1
    return True


def _is_period_view(spec: ViewSpec) -> bool:
    return spec.aggregation.split("/")[0].lower() in PERIOD_AGGREGATIONS


def _unique_integer(spec: ViewSpec, column: ColumnSpec, day: date, index: int) -> int:
    ordinal_index = day.toordinal() * 100_000 + index
    if column.kind != "int64":
        return ordinal_index % (2**31 - 1) if column.kind == "int32" else index
    view_prefix = sum(ord(char) for char in spec.name) % 900 + 100
    return view_prefix * 10**14 + ordinal_index


def _revised_columns(spec: ViewSpec) -> list[ColumnSpec]:
    fixed = {*spec.key, spec.date_column, "program"}
    plain = [column for column in spec.columns if column.name not in fixed]
    chosen = [
        column
        for column in plain
        if (column.name.lower() == "state" or column.name.lower().endswith("_state"))
        and "merchant" not in column.name.lower()
        or column.kind == "decimal"
        and "amount" in column.name.lower()
    ]
    return chosen or plain[:1]
