"""Load typed Arrow batches into a warehouse table in one transaction.

`open_warehouse_writer` connects to PostgreSQL (psycopg 3), MariaDB or MySQL
(PyMySQL), SQLite, or any other SQLAlchemy dialect, creates or evolves the
target table from the dataset's schema, and returns a `BatchWriter`. Batches
are staged in a temporary table inside the load's transaction. `commit`
merges them into the target table, writes an audit row and commits, so the
table shows either all of a load or none of it. Column types, SQLite's exact
decimals and schema evolution are described in `connector.load.sql_schema`,
staging and merging in `connector.load.sql_dialects`.

Modes:

- `upsert` (default): rows of keys already in the table are updated, other
  rows inserted.
- `append`: rows are inserted; a key already in the table fails the load.
- `replace`: the rows of the load's window are replaced. The rows whose
  date column lies in the window are deleted and the load's rows inserted,
  so rows of other days stay. A load without a window replaces the days
  from its first to its last date. A dataset without a date column has its
  whole table replaced.

Within one load, rows sharing a key are reduced to one before the merge: the
row with the latest date column wins, and on a tie the later row in file
order. Strings longer than their column's `max_length` fail the load before
they reach the database, since MariaDB in non-strict mode and SQLite would
store or truncate them without an error.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from connector.errors import ConfigError, LoadError
from connector.load.sql_schema import check_table_name
from connector.load.sql_writer import SqlBatchWriter, describe_error, mask_url

if TYPE_CHECKING:
    from connector.datasets import Dataset
    from connector.load.base import BatchWriter

log = logging.getLogger(__name__)

MODES = ("upsert", "append", "replace")

_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def normalize_url(url: str) -> str:
    """Return `url` with the installed driver named, ready for SQLAlchemy.

    `postgresql://` and `postgres://` get psycopg 3, `mysql://` and
    `mariadb://` get PyMySQL; a URL naming its driver (`postgresql+asyncpg://`)
    is kept. A bare file path (`warehouse.db`, `/data/w.sqlite`) becomes a
    SQLite URL; any other text without a scheme is rejected.

    Raises:
        ConfigError: The URL cannot be parsed.
    """
    text = url.strip()
    if "://" not in text:
        if text.lower().endswith((".db", ".sqlite", ".sqlite3")):
            return f"sqlite:///{text}"
        raise ConfigError(
            f"Invalid warehouse URL {mask_url(text)!r}: expected dialect://..., e.g. "
            "postgresql://user@host/db, mysql://user@host/db or sqlite:///w.db "
            "(a bare path ending in .db or .sqlite is read as SQLite)."
        )

    try:
        parsed = sa.engine.make_url(text)
    except (sa.exc.ArgumentError, ValueError) as err:
        raise ConfigError(
            f"Invalid warehouse URL {mask_url(text)!r}: {err}. Expected "
            "dialect://user@host/database, e.g. postgresql://postgres@localhost/dw."
        ) from err
    driver = _DEFAULT_DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def open_warehouse_writer(
    url: str,
    table: str,
    dataset: Dataset,
    *,
    mode: str = "upsert",
    audit_table: str = "diva_loads",
    rejects_table: str | None = None,
    engine: sa.Engine | None = None,
    fail_before_commit: Callable[[], None] | None = None,
    preserve_columns: Collection[str] = (),
) -> BatchWriter:
    """Open a one-transaction load of `dataset` into `table`.

    Args:
        url: A database URL such as `postgresql://user@host/db`,
            `mysql://root@host/db` or `sqlite:///path.db`; ignored when
            `engine` is given.
        table: The target table, created from the dataset's schema when absent.
        dataset: The dataset whose Arrow batches will be written.
        mode: `upsert`, `append` or `replace`. `replace` deletes the target
            rows whose date column (`dataset.date_column`) lies in the
            window passed to `commit`, then inserts the load's rows. Day
            windows cover whole UTC days, hour windows their datetimes to
            the last second. When `commit` gets no window, the days from the
            smallest to the largest date among the load's rows are replaced,
            and nothing is deleted when the load has no dated row. Rows of a
            key the load brings are replaced wherever their date lies. A
            dataset without a date column has its whole table replaced.
            `LoadResult.details["rows_deleted"]` counts the deleted rows
            whose key the load did not write again (for a dataset without a
            key: every deleted row).
        audit_table: The table that receives one row per load.
        rejects_table: The table for rows the transform stage set aside;
            `<table>_rejects` by default.
        engine: An engine to use instead of one built from `url`; it is not
            disposed when the load ends.
        fail_before_commit: Called after the merge and the audit row, just
            before the final commit; an exception it raises aborts the load.
            Tests use it to inject a failure.
        preserve_columns: Columns whose stored value an existing row keeps,
            e.g. the columns absent from the export's header. `upsert`
            leaves them out of its update, and `replace` writes the stored
            values back; new rows get NULL. Ignored in `append` mode.

    Raises:
        ConfigError: The mode is unknown, upsert was asked for a dataset
            without a key, or a preserved column is a key column or not a
            column of the dataset.
        LoadError: The database cannot be reached, or the table cannot be
            fitted to the dataset (a column would narrow or change kind).
    """
    _check_mode(mode, dataset)
    _check_preserve_columns(preserve_columns, dataset)

    owns_engine = engine is None
    if engine is None:
        engine = create_warehouse_engine(url)
    writer = SqlBatchWriter(
        engine,
        table,
        dataset,
        mode=mode,
        audit_table=audit_table,
        rejects_table=rejects_table or f"{table}_rejects",
        stage=f"_diva_stage_{uuid.uuid4().hex[:12]}",
        started_at=datetime.now(UTC),
        owns_engine=owns_engine,
        fail_before_commit=fail_before_commit,
        preserve_columns=preserve_columns,
    )
    writer.open()
    return writer


def check_warehouse(
    url: str,
    table: str,
    dataset: Dataset,
    *,
    mode: str = "upsert",
    other_tables: Collection[str] = (),
) -> None:
    """Check that a load of `dataset` into `table` at `url` can start.

    Connects once, then checks the mode and the length of every table name
    the load uses: `table` and `other_tables` (such as the audit, state and
    rejects tables). A run calls it before exporting, so that a wrong URL or
    name fails before the export instead of after it.

    Raises:
        ConfigError: The URL or mode is invalid, or a table name is longer
            than the database accepts.
        LoadError: The database cannot be reached.
    """
    _check_mode(mode, dataset)
    engine = create_warehouse_engine(url)
    sink = mask_url(engine.url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            dialect = connection.dialect
    except sa.exc.DBAPIError as err:
        raise LoadError(
            f"Connecting to {sink} failed: {describe_error(err)}. Check the "
            "warehouse URL and that the database is running.",
            table=table,
        ) from err
    finally:
        engine.dispose()

    for name in (table, *other_tables):
        check_table_name(name, dialect)


def _check_mode(mode: str, dataset: Dataset) -> None:
    if mode not in MODES:
        raise ConfigError(
            f"Invalid load mode {mode!r}: expected one of {', '.join(MODES)}."
        )
    if mode == "upsert" and not dataset.key:
        raise ConfigError(
            f"Dataset {dataset.name} has no key, so it cannot be upserted; "
            "load it with mode 'append' or 'replace'."
        )


def _check_preserve_columns(names: Collection[str], dataset: Dataset) -> None:
    unknown = [n for n in names if n not in dataset.column_names]
    if unknown:
        raise ConfigError(
            f"Cannot preserve {', '.join(unknown)}: dataset {dataset.name} has no "
            f"such column. Its columns are {', '.join(dataset.column_names)}."
        )
    keys = [n for n in names if n in dataset.key]
    if keys:
        raise ConfigError(
            f"Cannot preserve the key column {', '.join(keys)} of dataset "
            f"{dataset.name}: every row needs its key. Remove it from the "
            "preserved columns."
        )


def _create_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file, as Parquet folders are."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database:
        return
    if database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_warehouse_engine(url: str) -> sa.Engine:
    """Create an engine for `url` with the settings a load relies on.

    Raises:
        ConfigError: The URL is invalid or names a driver that is not installed.
    """
    normalized = normalize_url(url)
    _create_sqlite_folder(normalized)
    connect_args = {}
    if normalized.startswith(("mysql+pymysql", "mariadb+pymysql")):
        connect_args["charset"] = "utf8mb4"
    try:
        return sa.create_engine(
            normalized, connect_args=connect_args, pool_pre_ping=True
        )
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as err:
        raise ConfigError(
            f"Cannot use warehouse URL {mask_url(normalized)!r}: {err}. Check the "
            "dialect name, or install its driver."
        ) from err
