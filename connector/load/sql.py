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
- `replace`: the table's rows are deleted and this load's rows inserted.

Within one load, rows sharing a key are reduced to one before the merge: the
row with the latest date column wins, and on a tie the later row in file
order. Strings longer than their column's `max_length` fail the load before
they reach the database, since MariaDB in non-strict mode and SQLite would
store or truncate them without an error.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from connector.errors import ConfigError
from connector.load.sql_writer import SqlBatchWriter

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
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


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


def mask_url(url: str) -> str:
    """Return `url` with any password replaced by `***`."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return _URL_PASSWORD.sub(r"\1***@", url)


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
) -> BatchWriter:
    """Open a one-transaction load of `dataset` into `table`.

    Args:
        url: A database URL such as `postgresql://user@host/db`,
            `mysql://root@host/db` or `sqlite:///path.db`; ignored when
            `engine` is given.
        table: The target table, created from the dataset's schema when absent.
        dataset: The dataset whose Arrow batches will be written.
        mode: `upsert`, `append` or `replace`.
        audit_table: The table that receives one row per load.
        rejects_table: The table for rows the transform stage set aside;
            `<table>_rejects` by default.
        engine: An engine to use instead of one built from `url`; it is not
            disposed when the load ends.
        fail_before_commit: Called after the merge and the audit row, just
            before the final commit; an exception it raises aborts the load.
            Tests use it to inject a failure.

    Raises:
        ConfigError: The mode is unknown, or upsert was asked for a dataset
            without a key.
        LoadError: The database cannot be reached, or the table cannot be
            fitted to the dataset (a column would narrow or change kind).
    """
    if mode not in MODES:
        raise ConfigError(
            f"Invalid load mode {mode!r}: expected one of {', '.join(MODES)}."
        )
    if mode == "upsert" and not dataset.key:
        raise ConfigError(
            f"Dataset {dataset.name} has no key, so it cannot be upserted; "
            "load it with mode 'append' or 'replace'."
        )

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
    )
    writer.open()
    return writer


def create_warehouse_engine(url: str) -> sa.Engine:
    """Create an engine for `url` with the settings a load relies on.

    Raises:
        ConfigError: The URL is invalid or names a driver that is not installed.
    """
    normalized = normalize_url(url)
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
