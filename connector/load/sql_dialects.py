"""Staging and merging per SQL dialect, inside the load's one transaction.

Every load first fills a temporary staging table with the batches as they
come, numbered in file order by `_diva_seq`. The merge then reads the staging
table once, keeps for each key the row with the latest date (the later row in
file order on a tie), and writes it into the target table:

- PostgreSQL: `COPY ... FROM STDIN` in CSV, then one `INSERT ... SELECT ...
  ON CONFLICT (key) DO UPDATE`, whose `xmax = 0`
  distinguishes inserts from updates.
- MariaDB/MySQL: multi-row `INSERT` through `executemany`, then
  `INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`.
- SQLite: `executemany`, then `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.
- Any other dialect: SQLAlchemy inserts, then a delete of the staged keys and
  an insert of the staged rows.

Updates that would not change a row are skipped, so a rerun of the same rows
reports zero rows updated.

Money and timestamps reach the database as text in exact forms (`25.00`,
`2024-03-05 10:00:00.000001`), never as floats.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from connector.errors import LoadError
from connector.load.sql_schema import family, qualified_name, sql_type, table_options

if TYPE_CHECKING:
    from connector.datasets import Dataset

log = logging.getLogger(__name__)

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
        deleted: Rows removed first, in `replace` mode or by delete-then-insert.
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
        self, conn: sa.Connection, table: str, dataset: Dataset, stage: str
    ) -> None:
        self.conn = conn
        self.table = table
        self.dataset = dataset
        self.stage = stage
        self.quote = conn.dialect.identifier_preparer.quote_identifier
        self.columns = dataset.column_names

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

    def drop_stage(self) -> None:
        """Drop the staging table when it outlives the transaction."""
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.quote(self.stage)}")

    def merge(self, mode: str, rows_staged: int) -> MergeCounts:
        """Write the staged rows into the target table according to `mode`.

        `rows_staged` is the number of rows staged; when it equals the number
        of distinct keys, the merge reads the staging table as it is and
        skips ranking duplicates.
        """
        written, existing = self._count_keys(rows_staged)
        self._has_duplicates = written < rows_staged
        if mode == "replace":
            deleted = self.conn.exec_driver_sql(f"DELETE FROM {self._target}").rowcount
            self._insert_selected()
            return MergeCounts(written, inserted=written, updated=0, deleted=deleted)
        if mode == "append":
            self._check_no_conflict()
            self._insert_selected()
            return MergeCounts(written, inserted=written, updated=0)
        return self.upsert(written, existing)

    def upsert(self, written: int, existing: int) -> MergeCounts:
        """Delete the rows of staged keys, then insert the selected staged rows."""
        deleted = self.conn.exec_driver_sql(
            f"DELETE FROM {self._target} WHERE EXISTS "
            f"(SELECT 1 FROM {self.quote(self.stage)} staged "
            f"WHERE {self._key_join('staged', self._target)})"
        ).rowcount
        self._insert_selected()
        return MergeCounts(
            written, inserted=written - existing, updated=existing, deleted=deleted
        )

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
                f"Append to table {self.table} failed: the table already holds the "
                f"row with key {key}. Load in upsert mode to update existing rows.",
                key=dict(zip(self.dataset.key, conflict, strict=True)),
            )

    def _conflict_action(self, new_row: str, distinct_operator: str) -> str:
        """Return the ON CONFLICT clause that updates only rows that change.

        The clause names the target table `existing`, so the INSERT must give
        it that alias.
        """
        keys = ", ".join(self.quote(k) for k in self.dataset.key)
        others = [c for c in self.columns if c not in self.dataset.key]
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


class PostgresMerger(StagingMerger):
    """Stage with `COPY ... FROM STDIN`, merge with `INSERT ... ON CONFLICT`."""

    def stage_batch(self, batch: pa.RecordBatch, first_seq: int) -> None:
        """Copy one batch into the staging table as CSV text."""
        table = pa.Table.from_arrays(
            [_exact_text(column) for column in batch.columns]
            + [_sequence(batch, first_seq)],
            names=[*self.columns, SEQUENCE_COLUMN],
        )
        buffer = io.BytesIO()
        # Quoting every non-null value keeps empty strings apart from NULL,
        # which COPY's CSV format reads from an unquoted empty field.
        pa_csv.write_csv(
            table,
            buffer,
            pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"),
        )
        columns = f"{self._column_list()}, {self.quote(SEQUENCE_COLUMN)}"
        statement = f"COPY {self.quote(self.stage)} ({columns}) FROM STDIN (FORMAT csv)"
        with self.conn.connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(buffer.getbuffer())

    def drop_stage(self) -> None:
        """Do nothing: the staging table is dropped at commit or rollback."""

    def upsert(self, written: int, existing: int) -> MergeCounts:
        """Merge in one statement that reports inserts and updates."""
        action = self._conflict_action("EXCLUDED", "IS DISTINCT FROM")
        statement = (
            f"WITH merged AS (INSERT INTO {self._target} AS existing "
            f"({self._column_list()}) "
            f"{self.selected_rows()} {action} RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), "
            "count(*) FILTER (WHERE NOT inserted) FROM merged"
        )
        inserted, updated = self.conn.exec_driver_sql(statement).one()
        return MergeCounts(written, inserted=inserted, updated=updated)

    def _count_keys(self, rows_staged: int) -> tuple[int, int]:
        """Return the number of distinct staged keys; the merge counts the rest."""
        if not self.dataset.key:
            return rows_staged, 0
        keys = ", ".join(self.quote(k) for k in self.dataset.key)
        written = self.conn.exec_driver_sql(
            f"SELECT count(*) FROM (SELECT DISTINCT {keys} "
            f"FROM {self.quote(self.stage)}) s"
        ).scalar_one()
        return written, 0


class MySqlMerger(StagingMerger):
    """Stage with `LOAD DATA LOCAL INFILE` or multi-row inserts, merge with
    `ON DUPLICATE KEY UPDATE`.

    `LOAD DATA LOCAL INFILE` is used when the client and the server both
    allow it, i.e. the URL carries `?local_infile=1`. It stays opt-in
    because a client with that option lets the server read any file the
    client process can read.
    """

    def create_stage(self) -> None:
        """Create the staging table and choose how batches reach it."""
        super().create_stage()
        self._load_data = self._local_infile_allowed()

    def stage_batch(self, batch: pa.RecordBatch, first_seq: int) -> None:
        """Send one batch to the staging table, as a CSV file when allowed."""
        arrays = [
            _exact_text(column, timestamp_format="%Y-%m-%d %H:%M:%S")
            for column in batch.columns
        ]
        if self._load_data:
            self._load_file(arrays, _sequence(batch, first_seq))
            return

        # PyMySQL turns executemany of one INSERT ... VALUES into multi-row
        # statements of up to about 1 MB each.
        rows = list(
            zip(
                *(a.to_pylist() for a in arrays),
                range(first_seq, first_seq + batch.num_rows),
            )
        )
        marks = ", ".join(["%s"] * (len(self.columns) + 1))
        self.conn.exec_driver_sql(
            f"INSERT INTO {self.quote(self.stage)} ({self._stage_columns}) "
            f"VALUES ({marks})",
            rows,
        )

    @property
    def _stage_columns(self) -> str:
        return f"{self._column_list()}, {self.quote(SEQUENCE_COLUMN)}"

    def _local_infile_allowed(self) -> bool:
        # PyMySQL keeps its local_infile connect option in this attribute.
        driver = self.conn.connection.driver_connection
        if not getattr(driver, "_local_infile", False):
            return False
        allowed = self.conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()
        if not allowed:
            log.warning(
                "The client allows LOAD DATA LOCAL INFILE but the server does "
                "not (local_infile=OFF); staging with multi-row INSERT instead."
            )
        return bool(allowed)

    def _load_file(self, arrays: list[pa.Array], sequence: pa.Array) -> None:
        arrays = [
            pc.cast(a, pa.int8()) if pa.types.is_boolean(a.type) else a for a in arrays
        ]
        table = pa.Table.from_arrays(
            [*arrays, sequence], names=[*self.columns, SEQUENCE_COLUMN]
        )
        # Every value is quoted and NULL is the bare word NULL, so empty
        # strings and NULLs stay apart; ESCAPED BY '' keeps backslashes as data.
        options = pa_csv.WriteOptions(
            include_header=False, quoting_style="all_valid", null_string="NULL"
        )
        with tempfile.TemporaryDirectory(prefix="diva-load-") as folder:
            path = os.path.join(folder, "batch.csv")
            pa_csv.write_csv(table, path, options)
            self.conn.exec_driver_sql(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {self.quote(self.stage)} "
                "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' "
                "OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
                f"({self._stage_columns})",
                (path,),
            )
        self._raise_on_warnings()

    def _raise_on_warnings(self) -> None:
        # With LOCAL, the server turns data errors into warnings even in
        # strict mode, because it cannot stop the client mid-file.
        warnings = self.conn.exec_driver_sql("SHOW WARNINGS LIMIT 1").all()
        if warnings:
            level, code, message = warnings[0]
            raise LoadError(
                f"MariaDB/MySQL rejected a staged value: {level} {code}: "
                f"{message}. Check the column types of table {self.table}.",
                table=self.table,
            )

    def drop_stage(self) -> None:
        """Drop the session's temporary staging table (no implicit commit)."""
        self.conn.exec_driver_sql(
            f"DROP TEMPORARY TABLE IF EXISTS {self.quote(self.stage)}"
        )

    def upsert(self, written: int, existing: int) -> MergeCounts:
        """Merge with one `INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`."""
        updates = (
            ", ".join(
                f"{self.quote(c)} = VALUES({self.quote(c)})"
                for c in self.columns
                if c not in self.dataset.key
            )
            or f"{self.quote(self.dataset.key[0])} = {self.quote(self.dataset.key[0])}"
        )
        affected = self.conn.exec_driver_sql(
            f"INSERT INTO {self._target} ({self._column_list()}) {self.selected_rows()} "
            f"ON DUPLICATE KEY UPDATE {updates}"
        ).rowcount
        inserted = written - existing
        # An insert counts 1 and a changed row 2. An unchanged row counts 1
        # when the client sets CLIENT_FOUND_ROWS (SQLAlchemy always does), else 0.
        if self._found_rows():
            updated = affected - written
        else:
            updated = (affected - inserted) // 2
        return MergeCounts(written, inserted=inserted, updated=updated)

    def _found_rows(self) -> bool:
        from pymysql.constants import CLIENT

        flags = getattr(self.conn.connection.driver_connection, "client_flag", 0)
        return bool(flags & CLIENT.FOUND_ROWS)


class SqliteMerger(StagingMerger):
    """Stage with `executemany`, merge with `INSERT ... ON CONFLICT DO UPDATE`."""

    def stage_batch(self, batch: pa.RecordBatch, first_seq: int) -> None:
        """Insert one batch into the staging table with `executemany`."""
        arrays = [
            _exact_text(column, timestamp_format="%Y-%m-%d %H:%M:%S", text_dates=True)
            for column in batch.columns
        ]
        arrays = [
            pc.cast(a, pa.int8()) if pa.types.is_boolean(a.type) else a for a in arrays
        ]
        rows = list(
            zip(
                *(a.to_pylist() for a in arrays),
                range(first_seq, first_seq + batch.num_rows),
            )
        )
        marks = ", ".join(["?"] * (len(self.columns) + 1))
        columns = f"{self._column_list()}, {self.quote(SEQUENCE_COLUMN)}"
        self.conn.exec_driver_sql(
            f"INSERT INTO {self.quote(self.stage)} ({columns}) VALUES ({marks})", rows
        )

    def upsert(self, written: int, existing: int) -> MergeCounts:
        """Merge with one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`."""
        action = self._conflict_action("excluded", "IS NOT")
        changes = self.conn.exec_driver_sql(
            f"INSERT INTO {self._target} AS existing ({self._column_list()}) "
            f"{self.selected_rows()} {action}"
        ).rowcount
        inserted = written - existing
        return MergeCounts(written, inserted=inserted, updated=changes - inserted)


def merger_for(
    conn: sa.Connection, table: str, dataset: Dataset, stage: str
) -> StagingMerger:
    """Return the staging and merge strategy for the connection's dialect."""
    kind = family(conn.dialect)
    merger_class = {
        "postgresql": PostgresMerger,
        "mysql": MySqlMerger,
        "sqlite": SqliteMerger,
    }.get(kind, StagingMerger)
    return merger_class(conn, table, dataset, stage)


def describe_key(names: tuple[str, ...], values: tuple) -> str:
    """Return a key for messages, e.g. `token='2f1fa8e8-...'`."""
    return ", ".join(
        f"{name}={value!r}" for name, value in zip(names, values, strict=True)
    )


def _sequence(batch: pa.RecordBatch, first_seq: int) -> pa.Array:
    return pa.array(range(first_seq, first_seq + batch.num_rows), pa.int64())


def _exact_text(
    array: pa.Array, *, timestamp_format: str | None = None, text_dates: bool = False
) -> pa.Array:
    """Return decimals (and optionally timestamps and dates) as exact text."""
    if pa.types.is_decimal(array.type):
        return canonical_decimal_text(array)
    if timestamp_format and pa.types.is_timestamp(array.type):
        # Arrow's %S prints the seconds with the unit's fraction: 00.000001.
        return pc.strftime(array, format=timestamp_format)
    if text_dates and pa.types.is_date(array.type):
        return pc.cast(array, pa.string())
    return array


def canonical_decimal_text(array: pa.Array) -> pa.Array:
    """Return decimals as fixed-point text with the type's scale, e.g. `-0.000000001`.

    Arrow writes values below 1e-6 in scientific notation (`-1E-9`); those
    few are rewritten through `Decimal`, the rest stay vectorised.
    """
    text = pc.cast(array, pa.string())
    scientific = pc.fill_null(pc.match_substring(text, "E"), False)
    if not pc.any(scientific).as_py():
        return text

    quantum = Decimal(1).scaleb(-array.type.scale)
    positions = pc.indices_nonzero(scientific).to_pylist()
    fixed = [format(array[i].as_py().quantize(quantum), "f") for i in positions]
    return pc.replace_with_mask(text, scientific, pa.array(fixed, pa.string()))
