"""The staging merger every dialect builds on, and its portable SQL.

`StagingMerger` stages batches with SQLAlchemy inserts and merges them with a
delete of the staged keys and an insert of the staged rows. The mergers of
PostgreSQL, MariaDB/MySQL and SQLite override its staging and upsert steps.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from connector.errors import LoadError
from connector.load.sql_schema import family, qualified_name, sql_type, table_options

if TYPE_CHECKING:
    from connector.datasets import Dataset


#: Staging column holding each row's position in the load, counted from 0.
SEQUENCE_COLUMN = "_diva_seq"
_RANK_COLUMN = "_diva_rank"


@dataclass
class MergeCounts:
    """Row counts of one merge into the target table.

    Attributes:
        written: Distinct rows written (after dropping superseded duplicates).
        inserted: Keys new to the table, when the database can tell.
        updated: Existing keys whose row changed, when the database can tell.
            In `replace` mode: existing keys the load wrote again.
        deleted: Rows removed from the table and not written back by the load
            (rows of a key the load brings again count as updated instead).
    """

    written: int
    inserted: int | None = None
    updated: int | None = None
    deleted: int = 0


class StagingMerger:
    """Stage batches and merge them with portable SQL (any SQLAlchemy dialect).

    NOTE: this portable path is tested on SQLite only. A database whose
    temporary tables need other syntax (SQL Server's `#name`) or that lacks
    ROW_NUMBER() would need a merger of its own.
    """

    def __init__(
        self,
        conn: sa.Connection,
        table: str,
        dataset: Dataset,
        stage: str,
        preserve_columns: Collection[str] = (),
    ) -> None:
        self.conn = conn
        self.table = table
        self.dataset = dataset
        self.stage = stage
        self.quote = conn.dialect.identifier_preparer.quote_identifier
        self.columns = dataset.column_names
        #: Columns an existing row keeps when the load brings its key again.
        self.preserve_columns = [c for c in self.columns if c in preserve_columns]

    def create_stage(self) -> None:
        """Create the temporary staging table with the dataset's column types."""
        metadata = sa.MetaData()
        columns = [
            sa.Column(c.name, sql_type(c.type, self.conn.dialect), nullable=True)
            for c in self.dataset.columns
        ]
        options = table_options(self.conn.dialect)
        if family(self.conn.dialect) == "postgresql":
            options["postgresql_on_commit"] = "DROP"
        self._stage_table = sa.Table(
            self.stage,
            metadata,
            *columns,
            sa.Column(SEQUENCE_COLUMN, sa.BigInteger, nullable=False),
            prefixes=["TEMPORARY"],
            **options,
        )
        self._stage_table.create(self.conn)

    def stage_batch(self, batch: pa.RecordBatch, first_seq: int) -> None:
        """Insert one batch into the staging table; rows get `first_seq`, ... ."""
        rows = batch.to_pylist()
        for offset, row in enumerate(rows):
            row[SEQUENCE_COLUMN] = first_seq + offset
        self.conn.execute(self._stage_table.insert(), rows)

    def finish_stage(self) -> None:
        """Complete the staging of the batches sent so far (`merge` calls it first)."""

    def cancel_stage(self) -> None:
        """Stop a staging still in progress, so the connection can roll back."""

    def drop_stage(self) -> None:
        """Drop the staging table when it outlives the transaction."""
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.quote(self.stage)}")

    def merge(
        self,
        mode: str,
        rows_staged: int,
        replace_range: tuple[date, date] | None = None,
        *,
        keys_unique: bool = False,
    ) -> MergeCounts:
        """Write the staged rows into the target table according to `mode`.

        `rows_staged` is the number of rows staged; when it equals the number
        of distinct keys, the merge reads the staging table as it is and
        skips ranking duplicates. `keys_unique` means that the caller has
        checked that no key repeats. The distinct keys then need no counting
        in SQL where the merge counts inserts and updates itself. `replace_range` is
        the `[start, end)` range of the date column that `replace` mode
        empties first (see `replace`).
        """
        self.finish_stage()
        self._keys_unique = keys_unique
        written, existing = self._count_keys(rows_staged)
        self._has_duplicates = written < rows_staged
        if mode == "replace":
            return self.replace(written, replace_range)
        if mode == "append":
            self._check_no_conflict()
            self._insert_selected()
            return MergeCounts(written, inserted=written, updated=0)
        return self.upsert(written, existing)

    def replace(
        self, written: int, replace_range: tuple[date, date] | None
    ) -> MergeCounts:
        """Delete the rows of the range and of the staged keys, then insert.

        Without a date column the whole table is deleted. With one, the rows
        whose date lies in `[start, end)` are deleted; a None range deletes
        none of them. Rows of a staged key are deleted wherever their date
        lies, since the insert would conflict with them.
        """
        self.keep_preserved_values()
        existing = self._count_staged_keys_in_target()
        where = self._replace_condition(replace_range)
        deleted = self.conn.execute(
            sa.text(f"DELETE FROM {self._target} WHERE {where}"),
            self._range_parameters(replace_range),
        ).rowcount
        self._insert_selected()
        return MergeCounts(
            written,
            inserted=written - existing,
            updated=existing,
            deleted=deleted - existing,
        )

    def upsert(self, written: int, existing: int) -> MergeCounts:
        """Delete the rows of staged keys, then insert the selected staged rows."""
        self.keep_preserved_values()
        self.conn.exec_driver_sql(
            f"DELETE FROM {self._target} WHERE {self._staged_key_exists()}"
        )
        self._insert_selected()
        return MergeCounts(written, inserted=written - existing, updated=existing)

    def keep_preserved_values(self) -> None:
        """Copy the stored values of the preserved columns into the staged rows.

        Only staged rows whose key the table contains are changed, so the
        delete-then-insert of `replace` and of the portable upsert writes
        the stored values back.
        """
        if not self.preserve_columns or not self.dataset.key:
            return
        stage = self.quote(self.stage)
        stored = f"FROM {self._target} stored WHERE {self._key_join(stage, 'stored')}"
        assignments = ", ".join(
            f"{self.quote(c)} = (SELECT stored.{self.quote(c)} {stored})"
            for c in self.preserve_columns
        )
        self.conn.exec_driver_sql(
            f"UPDATE {stage} SET {assignments} WHERE EXISTS (SELECT 1 {stored})"
        )

    def _staged_key_exists(self) -> str:
        return (
            f"EXISTS (SELECT 1 FROM {self.quote(self.stage)} staged "
            f"WHERE {self._key_join('staged', self._target)})"
        )

    def _count_staged_keys_in_target(self) -> int:
        if not self.dataset.key:
            return 0
        return self.conn.exec_driver_sql(
            f"SELECT count(*) FROM {self._target} WHERE {self._staged_key_exists()}"
        ).scalar_one()

    def _replace_condition(self, replace_range: tuple[date, date] | None) -> str:
        date_column = self.dataset.date_column
        if not date_column:
            return "1 = 1"
        if replace_range is None:
            condition = "1 = 0"
        else:
            column = f"{self._target}.{self.quote(date_column)}"
            condition = f"{column} >= :range_start AND {column} < :range_end"
        if self.dataset.key:
            condition = f"({condition}) OR {self._staged_key_exists()}"
        return condition

    def _range_parameters(self, replace_range: tuple[date, date] | None) -> dict:
        if replace_range is None or not self.dataset.date_column:
            return {}
        start, end = (self.bound_value(v) for v in replace_range)
        return {"range_start": start, "range_end": end}

    def bound_value(self, value: date) -> object:
        """Return a date or aware UTC datetime in the form the table stores it."""
        kind = family(self.conn.dialect)
        if isinstance(value, datetime):
            value = value.astimezone(UTC)
            if kind == "sqlite":
                return value.strftime("%Y-%m-%d %H:%M:%S.%f")
            if kind == "mysql":
                return value.replace(tzinfo=None)
            return value
        return value.isoformat() if kind == "sqlite" else value

    @property
    def _target(self) -> str:
        return qualified_name(self.table, self.conn.dialect)

    def _column_list(self, prefix: str = "") -> str:
        return ", ".join(prefix + self.quote(name) for name in self.columns)

    def _key_join(self, left: str, right: str) -> str:
        return " AND ".join(
            f"{left}.{self.quote(k)} = {right}.{self.quote(k)}"
            for k in self.dataset.key
        )

    def selected_rows(self) -> str:
        """Return a SELECT of the staged rows, one per key: the latest wins.

        The SELECT always ends in a WHERE clause, which SQLite needs before
        ON CONFLICT to parse an INSERT ... SELECT upsert.
        """
        stage = self.quote(self.stage)
        if not self.dataset.key or not self._has_duplicates:
            return f"SELECT {self._column_list()} FROM {stage} WHERE 1 = 1"

        order = [f"{self.quote(SEQUENCE_COLUMN)} DESC"]
        if self.dataset.date_column:
            date = self.quote(self.dataset.date_column)
            # NULL sorts first or last depending on the database; a row
            # without a date never supersedes one with a date.
            order[:0] = [
                f"CASE WHEN {date} IS NULL THEN 0 ELSE 1 END DESC",
                f"{date} DESC",
            ]
        partition = ", ".join(self.quote(k) for k in self.dataset.key)
        rank = self.quote(_RANK_COLUMN)
        return (
            f"SELECT {self._column_list()} FROM (SELECT {self._column_list()}, "
            f"ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {', '.join(order)}) "
            f"AS {rank} FROM {stage}) ranked WHERE {rank} = 1"
        )

    def _insert_selected(self) -> None:
        self.conn.exec_driver_sql(
            f"INSERT INTO {self._target} ({self._column_list()}) {self.selected_rows()}"
        )

    def _count_keys(self, rows_staged: int) -> tuple[int, int]:
        """Return the number of distinct staged keys and how many the table holds."""
        if not self.dataset.key:
            return rows_staged, 0
        if self._keys_unique:
            existing = self.conn.exec_driver_sql(
                f"SELECT count(*) FROM {self.quote(self.stage)} staged "
                f"JOIN {self._target} t ON {self._key_join('staged', 't')}"
            ).scalar_one()
            return rows_staged, int(existing)
        keys = ", ".join(self.quote(k) for k in self.dataset.key)
        first_key = self.quote(self.dataset.key[0])
        row = self.conn.exec_driver_sql(
            f"SELECT count(*), count(t.{first_key}) "
            f"FROM (SELECT DISTINCT {keys} FROM {self.quote(self.stage)}) staged "
            f"LEFT JOIN {self._target} t ON {self._key_join('staged', 't')}"
        ).one()
        return int(row[0]), int(row[1])

    def _check_no_conflict(self) -> None:
        if not self.dataset.key:
            return
        keys = ", ".join(f"r.{self.quote(k)}" for k in self.dataset.key)
        conflict = self.conn.exec_driver_sql(
            f"SELECT {keys} FROM {self.quote(self.stage)} r "
            f"JOIN {self._target} t ON {self._key_join('r', 't')}"
        ).first()
        if conflict is not None:
            key = describe_key(self.dataset.key, tuple(conflict))
            raise LoadError(
                f"Append to table {self.table} failed: the table already contains the "
                f"row with key {key}. Load in upsert mode to update existing rows.",
                key=dict(zip(self.dataset.key, conflict, strict=True)),
            )

    def _conflict_action(self, new_row: str, distinct_operator: str) -> str:
        """Return the ON CONFLICT clause that updates only rows that change.

        The clause names the target table `existing`, so the INSERT must give
        it that alias.
        """
        keys = ", ".join(self.quote(k) for k in self.dataset.key)
        others = self.updated_columns()
        if not others:
            return f"ON CONFLICT ({keys}) DO NOTHING"
        updates = ", ".join(
            f"{self.quote(c)} = {new_row}.{self.quote(c)}" for c in others
        )
        changed = " OR ".join(
            f"existing.{self.quote(c)} {distinct_operator} {new_row}.{self.quote(c)}"
            for c in others
        )
        return f"ON CONFLICT ({keys}) DO UPDATE SET {updates} WHERE {changed}"

    def updated_columns(self) -> list[str]:
        """Return the columns an upsert sets on an existing row, in table order."""
        return [
            c
            for c in self.columns
            if c not in self.dataset.key and c not in self.preserve_columns
        ]


def describe_key(names: tuple[str, ...], values: tuple) -> str:
    """Return a key for messages, e.g. `token='2f1fa8e8-...'`."""
    return ", ".join(
        f"{name}={value!r}" for name, value in zip(names, values, strict=True)
    )


def _sequence(batch: pa.RecordBatch, first_seq: int) -> pa.Array:
    # Built from a buffer: pa.array() would make pyarrow import pandas.
    numbers = np.arange(first_seq, first_seq + batch.num_rows, dtype=np.int64)
    buffers = [None, pa.py_buffer(numbers)]
    return pa.Array.from_buffers(pa.int64(), len(numbers), buffers)
