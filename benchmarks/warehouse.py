"""Connections, tables and reachability checks for the warehouse runs.

The floors build their own tables from the dataset schema here, independent
of the product's DDL. The tables use the SQL types that the DiVA types name
(`numeric(14,2)`, `varchar(128)`, `timestamp`, ...) and a primary key on
the dataset key.
"""

from __future__ import annotations

import logging
from typing import Any

from connector.datasets import Column, Dataset

log = logging.getLogger(__name__)

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# The product stages MariaDB loads with LOAD DATA LOCAL INFILE only when the
# URL opts in; without it, it falls back to multi-row INSERTs.
MARIADB_URL = "mysql://root@127.0.0.1:3306/test?local_infile=1"
MARIADB_DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"


def connect_postgres() -> Any:
    """Open a psycopg connection to the local PostgreSQL `test` database."""
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=5
    )


def connect_mariadb() -> Any:
    """Open a PyMySQL connection to the local MariaDB `test` database."""
    import pymysql

    return pymysql.connect(
        host="127.0.0.1",
        port=3306,
        user="root",
        password="",
        database="test",
        charset="utf8mb4",
        local_infile=True,
        connect_timeout=5,
    )


def driver_errors() -> tuple[type[BaseException], ...]:
    """Return the exception classes the two drivers raise for a failed call."""
    import psycopg
    import pymysql

    return (psycopg.Error, pymysql.MySQLError, OSError)


def reachable(system: str) -> str | None:
    """Return None when `system` (postgres, mariadb) accepts a connection, else the error."""
    connect = connect_postgres if system == "postgres" else connect_mariadb
    try:
        connect().close()
    except driver_errors() as err:
        return f"{type(err).__name__}: {err}"
    return None


def sql_type(column: Column, system: str) -> str:
    """Return the SQL type of `column` for `system` (postgres, mariadb)."""
    kind = column.type
    match kind.kind:
        case "string":
            return f"VARCHAR({kind.max_length})" if kind.max_length else "TEXT"
        case "decimal":
            return f"DECIMAL({kind.precision},{kind.scale})"
        case "int64":
            return "BIGINT"
        case "int32":
            return "INTEGER"
        case "int16":
            return "SMALLINT"
        case "date":
            return "DATE"
        case "timestamp":
            return "TIMESTAMP" if system == "postgres" else "DATETIME(6)"
        case "bool":
            return "BOOLEAN"
    raise ValueError(f"No SQL type for column kind {kind.kind!r} of {column.name}.")


def create_table(cursor: Any, table: str, dataset: Dataset, system: str) -> None:
    """Create `table` with the dataset's columns and its key as primary key."""
    columns = [
        f"{c.name} {sql_type(c, system)}{'' if c.nullable else ' NOT NULL'}"
        for c in dataset.columns
    ]
    columns.append(f"PRIMARY KEY ({', '.join(dataset.key)})")
    cursor.execute(f"DROP TABLE IF EXISTS {table}")
    cursor.execute(f"CREATE TABLE {table} ({', '.join(columns)})")


def drop_tables(system: str, tables: list[str]) -> None:
    """Drop `tables` (and their `_rejects` companions) if they exist."""
    connect = connect_postgres if system == "postgres" else connect_mariadb
    try:
        connection = connect()
    except driver_errors() as err:
        log.warning("Could not connect to %s to drop %s: %s", system, tables, err)
        return
    try:
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.execute(f"DROP TABLE IF EXISTS {table}_rejects")
        connection.commit()
    finally:
        connection.close()


def count_rows(system: str, table: str) -> int:
    """Return the number of rows in `table`."""
    connect = connect_postgres if system == "postgres" else connect_mariadb
    connection = connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()
