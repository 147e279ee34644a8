"""Staging and merging for MariaDB and MySQL: `ON DUPLICATE KEY UPDATE`."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

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
    client process can read. One statement loads every batch of the load:
    it reads a named pipe that the batches are written to, on a thread of
    its own, so the server stores rows while the client types the next
    batches. Where named pipes do not exist, each batch goes through a
    file of its own.
    """

    _pipe: _PipeLoad | None = None

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
            data = self._csv_bytes(arrays, _sequence(batch, first_seq))
            if _PIPES:
                if self._pipe is None:
                    self._pipe = _PipeLoad(self.conn, self._load_data_sql)
                self._pipe.write(data)
            else:
                self._load_file(data)
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

    def _csv_bytes(self, arrays: list[pa.Array], sequence: pa.Array) -> memoryview:
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
        buffer = io.BytesIO()
        pa_csv.write_csv(table, buffer, options)
        return buffer.getbuffer()

    def _load_data_sql(self, path: str) -> str:
        return (
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {self.quote(self.stage)} "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' "
            "OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            f"({self._stage_columns})"
        )

    def _load_file(self, data: memoryview) -> None:
        with tempfile.TemporaryDirectory(prefix="diva-load-") as folder:
            path = os.path.join(folder, "batch.csv")
            with open(path, "wb") as file:
                file.write(data)
            self.conn.exec_driver_sql(self._load_data_sql(path))
        self._raise_on_warnings()

    def finish_stage(self) -> None:
        """Wait for the `LOAD DATA` reading the pipe, then raise its error or warning."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.finish()
            self._raise_on_warnings()

    def cancel_stage(self) -> None:
        """End the pipe early. The rows it loaded are rolled back with the load."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.cancel()

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


#: Whether named pipes exist (POSIX). Elsewhere each batch is loaded from a file.
_PIPES = hasattr(os, "mkfifo")

#: Seconds to wait for the server to open the pipe before giving up.
_PIPE_OPEN_S = 60.0

#: Seconds to wait for a statement whose pipe could not be opened to end.
_PIPE_ABANDON_S = 5.0


class _PipeLoad:
    """A `LOAD DATA LOCAL INFILE` of a named pipe, running on its own thread.

    The pipe lives in a private temporary folder. The statement's thread is
    the only user of the connection until `finish` or `cancel` returns.
    """

    def __init__(self, conn: sa.Connection, statement: Callable[[str], str]) -> None:
        self._folder = tempfile.mkdtemp(prefix="diva-load-")
        path = os.path.join(self._folder, "stage.csv")
        os.mkfifo(path, 0o600)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(conn, statement(path)),
            name="mysql-load-data",
            daemon=True,
        )
        self._thread.start()
        self._path = path
        self._sink: BinaryIO | None = None
        try:
            self._sink = self._open_sink(path)
        except BaseException:
            self._abandon()
            raise

    def _run(self, conn: sa.Connection, statement: str) -> None:
        try:
            conn.exec_driver_sql(statement)
        except BaseException as err:  # noqa: BLE001 - re-raised by finish
            self._error = err

    def _open_sink(self, path: str) -> BinaryIO | None:
        # Opening a pipe for writing blocks until a reader opens it, and the
        # reader is the driver, once the server requests the file. Polling
        # without blocking lets a statement that fails early be noticed.
        deadline = time.monotonic() + _PIPE_OPEN_S
        while True:
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno != errno.ENXIO:
                    raise
            else:
                os.set_blocking(descriptor, True)
                return os.fdopen(descriptor, "wb")
            if not self._thread.is_alive():
                return None
            if time.monotonic() > deadline:
                raise LoadError(
                    f"MariaDB/MySQL did not start reading the staged rows within "
                    f"{_PIPE_OPEN_S:.0f} s. Check that the server is responsive, or "
                    "remove local_infile=1 from the warehouse URL to stage with "
                    "INSERT statements instead."
                )
            time.sleep(0.005)

    def write(self, data: memoryview) -> None:
        """Send CSV rows to the statement, or raise its error if it stopped."""
        if self._sink is None:
            self.finish()
        try:
            self._sink.write(data)
        except BrokenPipeError:
            self.finish()
            raise

    def finish(self) -> None:
        """Close the pipe, wait for the statement and raise its error."""
        self._close()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Close the pipe and wait for the statement, ignoring its error."""
        self._close()

    def _abandon(self) -> None:
        """Stop a statement whose pipe was never opened for writing."""
        # A driver waiting to open the pipe for reading gets an empty file
        # once a writer opens and closes it, and the statement then ends. The
        # driver may reach the pipe only later, so opening is retried.
        deadline = time.monotonic() + _PIPE_ABANDON_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                os.close(os.open(self._path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            self._thread.join(0.01)
        shutil.rmtree(self._folder, ignore_errors=True)

    def _close(self) -> None:
        sink, self._sink = self._sink, None
        try:
            if sink is not None:
                try:
                    sink.close()
                except BrokenPipeError:
                    pass
            self._thread.join()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
