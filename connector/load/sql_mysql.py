"""Staging and merging for MariaDB and MySQL: `ON DUPLICATE KEY UPDATE`."""

from __future__ import annotations

import logging
import os
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from connector.errors import LoadError
from connector.load.sql_exact_text import _exact_text
from connector.load.sql_generic import (
    SEQUENCE_COLUMN,
    MergeCounts,
    StagingMerger,
    _sequence,
)

log = logging.getLogger(__name__)


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
                for c in self.updated_columns()
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
