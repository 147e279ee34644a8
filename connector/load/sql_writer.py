"""The warehouse `BatchWriter`: one connection, one transaction, one audit row."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connector.errors import LoadError
from connector.load.base import LoadResult
from connector.load.keys import KeyTracker
from connector.load.sql_dialects import (
    MergeCounts,
    StagingMerger,
    describe_key,
    merger_for,
)
from connector.load.sql_schema import (
    audit_table,
    family,
    plan_evolution,
    qualified_name,
    reflect_columns,
    rejects_table,
    target_table,
)

if TYPE_CHECKING:
    from connector.datasets import Dataset
    from connector.windows import Window

log = logging.getLogger(__name__)

#: Driver messages quoted in errors and audit rows are cut to this many characters.
MAX_ERROR_CHARS = 500

_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
#: Query parameters whose value is a credential, e.g. `?password=...`,
#: `sslpassword`, `passwd`, `pwd`, `secret`, `token`, `api_key`.
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;][^=&#;\s]*(?:pass|pwd|secret|token|credential|api_?key)"
    r"[^=&#;\s]*=)[^&#;\s]*",
    re.IGNORECASE,
)


class SqlBatchWriter:
    """Stage batches in a temporary table and merge them into `table` at commit.

    Build it with `open_warehouse_writer`. Every database change of the load
    happens in one transaction on one connection, except on MariaDB/MySQL,
    where creating or altering the target table commits implicitly and is
    therefore done before the transaction starts.
    """

    def __init__(
        self,
        engine: sa.Engine,
        table: str,
        dataset: Dataset,
        *,
        mode: str,
        audit_table: str,
        rejects_table: str,
        stage: str,
        started_at: datetime,
        owns_engine: bool,
        fail_before_commit: Callable[[], None] | None = None,
        preserve_columns: Collection[str] = (),
    ) -> None:
        self.engine = engine
        self.table = table
        self.dataset = dataset
        self.mode = mode
        self.audit_table_name = audit_table
        self.rejects_table_name = rejects_table
        self.stage = stage
        self.started_at = started_at
        self.owns_engine = owns_engine
        self.fail_before_commit = fail_before_commit
        self.preserve_columns = tuple(preserve_columns)
        url = engine.url.render_as_string(hide_password=False)
        self.sink = f"{mask_url(url)} table {table}"
        self.rows_read = 0
        self.rows_rejected = 0
        self.connection: sa.Connection | None = None
        self._metadata = sa.MetaData()
        self._schema = dataset.arrow_schema()
        self._rejects: sa.Table | None = None
        self._merger: StagingMerger | None = None
        self._keys = KeyTracker(dataset, self._schema)
        self._session_restore: list[Callable[[], None]] = []
        #: Smallest and largest value of the date column among the staged rows.
        self._date_range: tuple[date, date] | None = None
        #: True when this load created the target table in a committed DDL
        #: statement (MariaDB/MySQL), so a failed load must drop it again.
        self._created_committed_table = False
        #: True when this load changed columns in committed DDL statements.
        self._evolved_committed_table = False

    def open(self) -> None:
        """Connect, fit the target table to the dataset and create the staging table.

        Raises:
            LoadError: The database cannot be reached or the table cannot be
                fitted to the dataset.
        """
        try:
            self.connection = self.engine.connect()
        except sa.exc.DBAPIError as err:
            self._dispose_engine()
            raise LoadError(
                f"Connecting to {self.sink} failed: {describe_error(err)}. Check the "
                "warehouse URL and that the database is running.",
                table=self.table,
            ) from err

        with self._rolled_back_on_error(f"Preparing {self.sink} failed"):
            self._prepare_session()
            if family(self.connection.dialect) == "mysql":
                self._prepare_tables()
                self.connection.commit()
                self._begin()
            else:
                self._begin()
                self._prepare_tables()
            self._merger = merger_for(
                self.connection,
                self.table,
                self.dataset,
                self.stage,
                self.preserve_columns,
            )
            self._merger.create_stage()

    def write(self, batch: pa.RecordBatch) -> None:
        """Stage one batch whose schema is the dataset's Arrow schema.

        Raises:
            LoadError: The batch is missing a column, a string is longer than its
                column allows, or the database rejected a value. The load is
                rolled back and the writer closed.
        """
        self._require_open()
        with self._rolled_back_on_error(f"Staging rows for {self.sink} failed"):
            batch = self._conform(batch)
            check_lengths(batch, self.dataset, first_row=self.rows_read)
            if batch.num_rows:
                self._merger.stage_batch(batch, self.rows_read)
                self._track_date_range(batch)
                self._keys.add(batch)
            self.rows_read += batch.num_rows

    def _track_date_range(self, batch: pa.RecordBatch) -> None:
        if not self.dataset.date_column:
            return
        column = batch.column(self.dataset.date_column)
        zoned = pa.types.is_timestamp(column.type) and column.type.tz is not None
        if zoned:
            # Arrow stores zoned timestamps in UTC. Reading them as UTC
            # spares pyarrow the pandas import its zone conversion needs.
            column = column.cast(pa.timestamp(column.type.unit))
        extremes = pc.min_max(column)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if low is None:
            return
        if zoned:
            low, high = low.replace(tzinfo=UTC), high.replace(tzinfo=UTC)
        if self._date_range is not None:
            low = min(low, self._date_range[0])
            high = max(high, self._date_range[1])
        self._date_range = (low, high)

    def write_rejects(self, rejects: pa.Table) -> None:
        """Stage rows set aside by the transform stage into the rejects table.

        Raises:
            LoadError: The rejects table cannot be created or written.
        """
        self._require_open()
        if rejects.num_rows == 0:
            return
        action = f"Writing rejects to {self.rejects_table_name} failed"
        with self._rolled_back_on_error(action):
            # The connection runs one statement at a time: end the staging.
            self._merger.finish_stage()
            if self._rejects is None:
                # On MariaDB/MySQL this CREATE commits implicitly. Until
                # commit() only the session's temporary staging table has
                # changed, so nothing becomes visible to other sessions.
                self._rejects = rejects_table(
                    self.rejects_table_name, self.connection.dialect, self._metadata
                )
                self._rejects.create(self.connection, checkfirst=True)
            names = [c.name for c in self._rejects.columns][2:]
            context = {"dataset": self.dataset.name, "load_started_at": self.started_at}
            for batch in rejects.select(names).to_batches(max_chunksize=10_000):
                rows = [{**context, **row} for row in batch.to_pylist()]
                self.connection.execute(self._rejects.insert(), rows)
            self.rows_rejected += rejects.num_rows

    def commit(self, window: Window | None, export_token: str | None) -> LoadResult:
        """Merge the staged rows, write the audit row and commit.

        In `replace` mode, `window` is the range whose rows the load replaces;
        when it is None, the days between the smallest and the largest
        staged date are replaced.

        Raises:
            LoadError: The merge or the commit failed; the table is left as it
                was and a `failed` audit row is written when possible.
        """
        self._require_open()
        action = f"Loading into {self.sink} failed"
        with self._rolled_back_on_error(action, window, export_token):
            counts = self._merger.merge(
                self.mode,
                self.rows_read,
                self._replace_range(window),
                keys_unique=self._keys.all_distinct(),
            )
            row = self._audit_row("succeeded", window, export_token, counts)
            self.connection.execute(self._audit.insert(), row)
            if self.fail_before_commit is not None:
                self.fail_before_commit()
            self.connection.commit()

        # The load is committed: a failure to drop the staging table or to
        # close the connection now must not report it as failed.
        self._discard()
        self._dispose_engine()
        result = self._result(counts)
        log.info(
            "Loaded %d rows of %s into %s: %s inserted, %s updated, %d superseded, "
            "%d rejected.",
            result.rows_written,
            self.dataset.name,
            self.table,
            result.rows_inserted,
            result.rows_updated,
            result.rows_superseded,
            result.rows_rejected,
        )
        return result

    def abort(self) -> None:
        """Roll back everything staged, and drop the table if this load created it."""
        if self.connection is None:
            return
        self._discard()
        self._drop_created_table()
        self._record_failure("aborted", None, None, None)
        self._dispose_engine()

    def _replace_range(self, window: Window | None) -> tuple[date, date] | None:
        if self.mode != "replace" or not self.dataset.date_column:
            return None
        kind = self.dataset.column(self.dataset.date_column).type.kind
        if window is not None:
            return replace_range(window.start, window.end, kind, window.is_days)
        if self._date_range is None:
            return None
        return replace_range(*self._date_range, kind, whole_days=True)

    def _require_open(self) -> None:
        if self.connection is None:
            raise LoadError(
                f"The load into {self.sink} is already committed or aborted; open "
                "a new writer for another load.",
                table=self.table,
            )

    def _prepare_session(self) -> None:
        if family(self.connection.dialect) != "mysql":
            return
        # Strict mode turns truncation and invalid values into errors, which
        # the default of some servers only reports as warnings.
        previous = self.connection.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar()
        modes = [m for m in previous.split(",") if m]
        if "STRICT_ALL_TABLES" not in modes:
            modes.append("STRICT_ALL_TABLES")
            self._set_sql_mode(",".join(modes))
            self._session_restore.append(lambda: self._set_sql_mode(previous))

    def _set_sql_mode(self, value: str) -> None:
        self.connection.exec_driver_sql("SET SESSION sql_mode = %s", (value,))

    def _begin(self) -> None:
        if family(self.connection.dialect) != "sqlite":
            self.connection.begin()
            return
        # Python's sqlite3 module opens transactions only before INSERT,
        # UPDATE and DELETE, so CREATE and ALTER would run outside the load's
        # transaction. Driving BEGIN by hand makes them part of it.
        driver = self.connection.connection.driver_connection
        previous = driver.isolation_level
        driver.isolation_level = None
        self._session_restore.append(
            lambda: setattr(driver, "isolation_level", previous)
        )
        self.connection.begin()
        self.connection.exec_driver_sql("BEGIN IMMEDIATE")

    def _prepare_tables(self) -> None:
        dialect = self.connection.dialect
        existing = reflect_columns(self.connection, self.table)
        if existing is None:
            table = target_table(self.table, self.dataset, dialect, self._metadata)
            table.create(self.connection)
            self._created_committed_table = family(dialect) == "mysql"
            log.info("Created table %s for %s.", self.table, self.dataset.name)
        else:
            for statement in plan_evolution(
                existing, self.dataset, self.table, dialect
            ):
                log.info("Evolving table %s: %s", self.table, statement)
                self.connection.exec_driver_sql(statement)
                self._evolved_committed_table = family(dialect) == "mysql"

        self._audit = audit_table(self.audit_table_name, dialect, self._metadata)
        self._audit.create(self.connection, checkfirst=True)

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        missing = [n for n in self._schema.names if n not in batch.schema.names]
        if missing:
            raise LoadError(
                f"A batch for {self.dataset.name} is missing the columns "
                f"{', '.join(missing)}; cast it to the dataset's schema first.",
                column=missing[0],
            )
        arrays = []
        for field in self._schema:
            array = batch.column(field.name)
            if array.type != field.type:
                array = pc.cast(array, field.type)
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, names=self._schema.names)

    def _result(self, counts: MergeCounts) -> LoadResult:
        return LoadResult(
            sink=self.sink,
            rows_written=counts.written,
            rows_inserted=counts.inserted,
            rows_updated=counts.updated,
            rows_superseded=self.rows_read - counts.written,
            rows_rejected=self.rows_rejected,
            details={
                "table": self.table,
                "mode": self.mode,
                "rows_read": self.rows_read,
                "rows_deleted": counts.deleted,
                "rejects_table": (
                    self.rejects_table_name if self.rows_rejected else None
                ),
            },
        )

    def _audit_row(
        self,
        status: str,
        window: Window | None,
        export_token: str | None,
        counts: MergeCounts | None,
        error: BaseException | None = None,
    ) -> dict[str, Any]:
        start, end = window.to_filter().split("..", 1) if window else (None, None)
        return {
            "dataset": self.dataset.name,
            "target_table": self.table,
            "mode": self.mode,
            "window_start": start,
            "window_end": end,
            "export_token": mask_export_token(export_token),
            "rows_read": self.rows_read,
            "rows_written": counts.written if counts else None,
            "rows_inserted": counts.inserted if counts else None,
            "rows_updated": counts.updated if counts else None,
            "rows_superseded": self.rows_read - counts.written if counts else None,
            "rows_rejected": self.rows_rejected,
            "started_at": self.started_at,
            "finished_at": datetime.now(UTC),
            "status": status,
            "error": describe_error(error) if error is not None else None,
        }

    @contextmanager
    def _rolled_back_on_error(
        self,
        action: str,
        window: Window | None = None,
        export_token: str | None = None,
    ) -> Iterator[None]:
        """Turn any error of the block into a rolled-back load and a `LoadError`."""
        try:
            yield
        except Exception as err:  # noqa: BLE001 - re-raised by _fail
            self._fail(err, action, window, export_token)

    def _fail(
        self,
        err: Exception,
        action: str,
        window: Window | None,
        export_token: str | None,
    ) -> None:
        """Roll back, record the failure and raise `LoadError` for `err`."""
        self._discard()
        outcome = self._drop_created_table()
        self._record_failure("failed", window, export_token, err)
        self._dispose_engine()
        if isinstance(err, LoadError):
            raise err
        raise LoadError(
            f"{action}: {describe_error(err)}. {outcome}",
            table=self.table,
            dataset=self.dataset.name,
        ) from err

    def _drop_created_table(self) -> str:
        """Drop the table this failed load created, if DDL committed it and it is empty.

        Returns the sentence of the error message about the state of the table.
        """
        if self._evolved_committed_table:
            # MariaDB/MySQL commit ALTER TABLE at once, so a rollback keeps it.
            return "The rows were left as they were, but the column changes stay."
        if not self._created_committed_table:
            return "The table was left as it was."
        self._created_committed_table = False
        target = qualified_name(self.table, self.engine.dialect)
        try:
            with self.engine.begin() as conn:
                if conn.exec_driver_sql(f"SELECT 1 FROM {target} LIMIT 1").first():
                    return (
                        "The table this load created was kept because another "
                        "load has written rows to it."
                    )
                conn.exec_driver_sql(f"DROP TABLE {target}")
        except Exception as err:  # noqa: BLE001 - the load error matters more
            log.warning(
                "Dropping table %s, created by the failed load of %s, failed: %s",
                self.table,
                self.dataset.name,
                describe_error(err),
            )
            return (
                "The table was created by this load and holds none of its rows; "
                "dropping it failed."
            )
        log.info("Dropped table %s, created by the failed load.", self.table)
        return "The table this load created was dropped again."

    def _discard(self) -> None:
        """Roll back and close the connection, whatever state it is in."""
        try:
            if self._merger is not None:
                self._merger.cancel_stage()
            self.connection.rollback()
            self._close()
        except Exception as err:  # noqa: BLE001 - the connection may be dead
            log.debug(
                "Closing the connection of the load into %s failed: %s", self.sink, err
            )
            if self.connection is not None:
                self.connection.invalidate()
                self.connection.close()
                self.connection = None

    def _close(self) -> None:
        self._merger_drop_stage()
        for restore in reversed(self._session_restore):
            restore()
        self._session_restore.clear()
        self.connection.close()
        self.connection = None

    def _merger_drop_stage(self) -> None:
        if self._merger is not None:
            self._merger.drop_stage()
            self.connection.commit()

    def _record_failure(
        self,
        status: str,
        window: Window | None,
        export_token: str | None,
        error: BaseException | None,
    ) -> None:
        try:
            with self.engine.begin() as conn:
                audit = audit_table(self.audit_table_name, conn.dialect, sa.MetaData())
                audit.create(conn, checkfirst=True)
                conn.execute(
                    audit.insert(),
                    self._audit_row(status, window, export_token, None, error),
                )
        except Exception as err:  # noqa: BLE001 - the load error matters more
            log.warning(
                "Recording the %s load of %s in %s failed: %s",
                status,
                self.dataset.name,
                self.audit_table_name,
                describe_error(err),
            )

    def _dispose_engine(self) -> None:
        if self.owns_engine:
            self.engine.dispose()


def check_lengths(
    batch: pa.RecordBatch, dataset: Dataset, *, first_row: int = 0
) -> None:
    """Raise `LoadError` when a string is longer than its column's `max_length`.

    Lengths count characters (code points), as VARCHAR(n) does in PostgreSQL
    and in MariaDB's utf8mb4. Checked here because MariaDB in non-strict mode
    truncates silently and SQLite stores any length.
    """
    for column in dataset.columns:
        limit = column.type.max_length
        if column.type.kind != "string" or limit is None:
            continue
        values = batch.column(column.name)
        # A character takes at least one byte, so the byte lengths settle
        # most columns without counting characters.
        if (pc.max(pc.binary_length(values)).as_py() or 0) <= limit:
            continue
        lengths = pc.utf8_length(values)
        too_long = pc.greater(lengths, limit)
        too_long = pc.and_kleene(too_long, pc.is_valid(too_long))
        if not pc.any(too_long).as_py():
            continue

        index = pc.indices_nonzero(too_long)[0].as_py()
        length = lengths[index].as_py()
        if dataset.key:
            values = tuple(batch.column(k)[index].as_py() for k in dataset.key)
            where = f"the row with key {describe_key(dataset.key, values)}"
        else:
            where = f"row {first_row + index + 1} of the load"
        raise LoadError(
            f"Column {column.name!r} of {where} is {length} characters long, more "
            f"than the column allows ({length} > {limit}). Widen the column in the "
            "dataset's schema or fix the source value; nothing was loaded.",
            column=column.name,
            key=values if dataset.key else None,
            length=length,
            max_length=limit,
        )


def replace_range(
    first: date, last: date, column_kind: str, whole_days: bool
) -> tuple[date, date]:
    """Return the `[start, end)` range of a date column that covers `first..last`.

    Both ends of `first..last` are included. With `whole_days`, or for a column
    of dates, the range covers every day touched: days start at
    00:00 UTC. Otherwise `first` and `last` are datetimes (naive ones are
    UTC) whose last second is included, which fits hour windows ending at
    `:59:59`.
    """
    if column_kind != "timestamp":
        return _utc_day(first), _utc_day(last) + timedelta(days=1)
    if whole_days:
        start = datetime.combine(_utc_day(first), time(), UTC)
        return start, datetime.combine(_utc_day(last) + timedelta(days=1), time(), UTC)
    return _as_utc(first), _as_utc(last) + timedelta(seconds=1)


def _utc_day(value: date) -> date:
    return _as_utc(value).date() if isinstance(value, datetime) else value


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def mask_url(url: str) -> str:
    """Return `url` with its password and credential query values replaced by `***`.

    Query parameters named like a credential (`password`, `sslpassword`,
    `passwd`, `pwd`, `secret`, `token`, `api_key`, ...) are masked as well,
    since drivers read passwords from the query string too.
    """
    try:
        masked = sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        masked = _URL_PASSWORD.sub(r"\1***@", url)
    return _SECRET_QUERY.sub(r"\g<name>***", masked)


def mask_export_token(token: str | None) -> str | None:
    """Return the first 6 characters of an export token followed by `…`."""
    if not token:
        return None
    return f"{token[:6]}…"


def describe_error(err: BaseException) -> str:
    """Return a short message for `err`: the driver's text, without the SQL statement
    and its parameters."""
    if isinstance(err, sa.exc.DBAPIError) and err.orig is not None:
        text = str(err.orig)
    else:
        text = str(err)
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text
