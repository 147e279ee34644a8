"""Warehouse tables for a dataset: column types, creation, and schema evolution.

Each dataset column type maps to one SQL type per dialect:

| kind | PostgreSQL | MariaDB/MySQL | SQLite |
|---|---|---|---|
| decimal | NUMERIC(p,s) | NUMERIC(p,s) | DECIMAL_TEXT(p,s) (canonical text) |
| int16/int32/int64 | SMALLINT/INTEGER/BIGINT | same | same |
| date | DATE | DATE | DATE (ISO text) |
| timestamp | TIMESTAMP WITH TIME ZONE | DATETIME(6), UTC values | TIMESTAMP (ISO text, UTC) |
| bool | BOOLEAN | BOOL | BOOLEAN (0/1) |
| string | VARCHAR(n), or TEXT | VARCHAR(n), or LONGTEXT | VARCHAR(n), or TEXT |

SQLite has no exact decimal storage: a column declared NUMERIC converts
`"25.00"` to an integer or a float. The declared type `DECIMAL_TEXT(p,s)`
contains `TEXT`, so SQLite gives it text affinity and keeps the canonical
fixed-point string (`-0.000000001`, `25.00`) as written. `Decimal(value)`
reads it back exactly.

An existing table is compared with the dataset: missing columns are added,
wider types are applied with `ALTER TABLE`, and a narrower type or a change
of kind raises `LoadError`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from connector.datasets import ColumnType
from connector.errors import ConfigError, LoadError

if TYPE_CHECKING:
    from connector.datasets import Column, Dataset

log = logging.getLogger(__name__)

#: MariaDB/MySQL tables are created in this character set and collation. A
#: binary collation compares keys as PostgreSQL and SQLite do, so `abc` and
#: `ABC` stay two rows.
MYSQL_CHARSET = "utf8mb4"
MYSQL_COLLATION = "utf8mb4_bin"

_INTEGER_RANK = {"int16": 1, "int32": 2, "int64": 3}
_SQLITE_DECLARED = re.compile(
    r"^\s*([A-Za-z_ ]+?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$"
)


class DecimalText(sa.types.UserDefinedType):
    """SQLite column type for exact decimals stored as canonical text."""

    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        self.precision = precision
        self.scale = scale

    def get_col_spec(self, **kw: object) -> str:
        return f"DECIMAL_TEXT({self.precision},{self.scale})"

    def bind_processor(self, dialect: sa.Dialect):
        quantum = Decimal(1).scaleb(-self.scale)

        def to_text(value: Decimal | None) -> str | None:
            return None if value is None else format(value.quantize(quantum), "f")

        return to_text

    def result_processor(self, dialect: sa.Dialect, coltype: object):
        def to_decimal(value: str | None) -> Decimal | None:
            return None if value is None else Decimal(value)

        return to_decimal


def family(dialect: sa.Dialect) -> str:
    """Return `postgresql`, `mysql` (MariaDB too), `sqlite` or `generic`."""
    if dialect.name in ("mysql", "mariadb"):
        return "mysql"
    if dialect.name in ("postgresql", "sqlite"):
        return dialect.name
    return "generic"


def split_table_name(name: str) -> tuple[str | None, str]:
    """Split `schema.table` into its schema (None when absent) and table name."""
    schema, _, table = name.rpartition(".")
    return schema or None, table


#: The maximum length of a table or schema name in each database, and its
#: unit. PostgreSQL allows 63 bytes (NAMEDATALEN is 64 with the final NUL)
#: and truncates longer names. MariaDB and MySQL allow 64 characters.
_NAME_LIMITS = {"postgresql": (63, "bytes"), "mysql": (64, "characters")}


def check_table_name(name: str, dialect: sa.Dialect) -> None:
    """Raise ConfigError when `name` (`table` or `schema.table`) is too long.

    Only PostgreSQL, MariaDB and MySQL are checked, because other
    databases state their limits differently or have none.
    """
    limit = _NAME_LIMITS.get(family(dialect))
    if limit is None:
        return
    maximum, unit = limit
    for part in split_table_name(name):
        if part is None:
            continue
        size = len(part.encode()) if unit == "bytes" else len(part)
        if size > maximum:
            raise ConfigError(
                f"Invalid table name {name!r}: {part!r} is {size} {unit} long, "
                f"and {dialect.name} accepts at most {maximum}. Choose a shorter "
                "name (--table, or table in the config file).",
                table=name,
            )


def qualified_name(name: str, dialect: sa.Dialect) -> str:
    """Return `name` (`table` or `schema.table`) quoted for `dialect`."""
    quote = dialect.identifier_preparer.quote_identifier
    schema, table = split_table_name(name)
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def sql_type(column_type: ColumnType, dialect: sa.Dialect) -> sa.types.TypeEngine:
    """Return the SQL type that stores `column_type` exactly in `dialect`."""
    kind = family(dialect)
    match column_type.kind:
        case "decimal" if kind == "sqlite":
            return DecimalText(column_type.precision, column_type.scale)
        case "decimal":
            return sa.Numeric(column_type.precision, column_type.scale)
        case "int16":
            return sa.SmallInteger()
        case "int32":
            return sa.Integer()
        case "int64":
            return sa.BigInteger()
        case "date":
            return sa.Date()
        case "timestamp" if kind == "postgresql":
            return postgresql.TIMESTAMP(timezone=True)
        case "timestamp" if kind == "mysql":
            return mysql.DATETIME(fsp=6)
        case "timestamp" if kind == "sqlite":
            return sa.TIMESTAMP()
        case "timestamp":
            return sa.DateTime(timezone=True)
        case "bool":
            return sa.Boolean()
    if column_type.max_length is not None:
        return sa.String(column_type.max_length)
    return mysql.LONGTEXT() if kind == "mysql" else sa.Text()


def type_sql(column_type: ColumnType, dialect: sa.Dialect) -> str:
    """Return the DDL text of the SQL type for `column_type`, e.g. `NUMERIC(12, 2)`."""
    return sql_type(column_type, dialect).compile(dialect=dialect)


def table_options(dialect: sa.Dialect) -> dict[str, str]:
    """Return the `Table` keyword options for a new table in `dialect`."""
    if family(dialect) == "mysql":
        return {"mysql_charset": MYSQL_CHARSET, "mysql_collate": MYSQL_COLLATION}
    return {}


def target_table(
    name: str, dataset: Dataset, dialect: sa.Dialect, metadata: sa.MetaData
) -> sa.Table:
    """Describe the table that stores `dataset`, with its key as primary key."""
    columns = [
        sa.Column(
            column.name,
            sql_type(column.type, dialect),
            primary_key=column.name in dataset.key,
            nullable=column.nullable and column.name not in dataset.key,
            autoincrement=False,
        )
        for column in dataset.columns
    ]
    schema, table = split_table_name(name)
    return sa.Table(table, metadata, *columns, schema=schema, **table_options(dialect))


def audit_table(name: str, dialect: sa.Dialect, metadata: sa.MetaData) -> sa.Table:
    """Describe the audit table: one row per load, succeeded or failed."""
    timestamp = _utc_timestamp()
    schema, table = split_table_name(name)
    return sa.Table(
        table,
        metadata,
        sa.Column("load_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("target_table", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("window_start", sa.String(32)),
        sa.Column("window_end", sa.String(32)),
        sa.Column("export_token", sa.String(16)),
        sa.Column("rows_read", sa.BigInteger),
        sa.Column("rows_written", sa.BigInteger),
        sa.Column("rows_inserted", sa.BigInteger),
        sa.Column("rows_updated", sa.BigInteger),
        sa.Column("rows_superseded", sa.BigInteger),
        sa.Column("rows_rejected", sa.BigInteger),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Column("finished_at", timestamp),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        schema=schema,
        **table_options(dialect),
    )


def rejects_table(name: str, dialect: sa.Dialect, metadata: sa.MetaData) -> sa.Table:
    """Describe the rejects table: the columns of `rejects_schema()` plus the load."""
    schema, table = split_table_name(name)
    return sa.Table(
        table,
        metadata,
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("load_started_at", _utc_timestamp(), nullable=False),
        sa.Column("file", sa.Text),
        sa.Column("line", sa.BigInteger),
        sa.Column("column", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("record", sa.Text),
        schema=schema,
        **table_options(dialect),
    )


def _utc_timestamp() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True).with_variant(
        mysql.DATETIME(fsp=6), "mysql", "mariadb"
    )


@dataclass(frozen=True)
class ExistingColumn:
    """A column found in the database: its type as a dataset type and as DDL."""

    name: str
    type: ColumnType
    type_sql: str
    nullable: bool


def reflect_columns(
    conn: sa.Connection, table: str
) -> dict[str, ExistingColumn] | None:
    """Return the columns of `table` by lower-cased name, or None when it is absent."""
    schema, name = split_table_name(table)
    inspector = sa.inspect(conn)
    if not inspector.has_table(name, schema=schema):
        return None
    if family(conn.dialect) == "sqlite":
        return _reflect_sqlite(conn, schema, name)

    columns = {}
    for info in inspector.get_columns(name, schema=schema):
        reflected = info["type"]
        columns[info["name"].lower()] = ExistingColumn(
            name=info["name"],
            type=_column_type_of(reflected),
            type_sql=reflected.compile(dialect=conn.dialect),
            nullable=info["nullable"],
        )
    return columns


def _reflect_sqlite(
    conn: sa.Connection, schema: str | None, table: str
) -> dict[str, ExistingColumn]:
    # SQLAlchemy reflects DECIMAL_TEXT as NullType, so the declared type text
    # is parsed here instead.
    quote = conn.dialect.identifier_preparer.quote_identifier
    pragma = f"PRAGMA {quote(schema)}.table_info" if schema else "PRAGMA table_info"
    rows = conn.exec_driver_sql(f"{pragma}({quote(table)})").all()
    return {
        row[1].lower(): ExistingColumn(
            name=row[1],
            type=_parse_declared_type(row[2]),
            type_sql=row[2],
            nullable=not row[3] and not row[5],
        )
        for row in rows
    }


def _parse_declared_type(declared: str) -> ColumnType:
    match = _SQLITE_DECLARED.match(declared or "")
    if not match:
        return ColumnType(f"other:{declared}")
    name = " ".join(match.group(1).upper().split())
    first = int(match.group(2)) if match.group(2) else None
    second = int(match.group(3)) if match.group(3) else 0
    if name in ("DECIMAL_TEXT", "NUMERIC", "DECIMAL"):
        return ColumnType("decimal", precision=first, scale=second)
    if name in ("VARCHAR", "CHARACTER VARYING", "TEXT", "CLOB"):
        return ColumnType("string", max_length=first)
    simple = {
        "BIGINT": "int64",
        "INTEGER": "int32",
        "INT": "int32",
        "SMALLINT": "int16",
        "DATE": "date",
        "TIMESTAMP": "timestamp",
        "DATETIME": "timestamp",
        "BOOLEAN": "bool",
    }
    kind = simple.get(name, f"other:{name}")
    return ColumnType(kind, precision=6 if kind == "timestamp" else None)


def _column_type_of(reflected: sa.types.TypeEngine) -> ColumnType:
    if isinstance(reflected, sa.Boolean) or (
        isinstance(reflected, mysql.TINYINT) and reflected.display_width == 1
    ):
        return ColumnType("bool")
    if isinstance(reflected, sa.Numeric) and not isinstance(reflected, sa.Float):
        return ColumnType(
            "decimal", precision=reflected.precision, scale=reflected.scale or 0
        )
    for sa_class, kind in (
        (sa.BigInteger, "int64"),
        (sa.SmallInteger, "int16"),
        (mysql.TINYINT, "int16"),
        (sa.Integer, "int32"),
    ):
        if isinstance(reflected, sa_class):
            return ColumnType(kind)
    if isinstance(reflected, sa.DateTime):
        return _timestamp_type_of(reflected)
    if isinstance(reflected, sa.Date):
        return ColumnType("date")
    if isinstance(reflected, sa.String):
        return ColumnType("string", max_length=reflected.length)
    return ColumnType(f"other:{type(reflected).__name__}")


def _timestamp_type_of(reflected: sa.DateTime) -> ColumnType:
    if isinstance(reflected, mysql.DATETIME):
        return ColumnType("timestamp", precision=reflected.fsp or 0)
    if isinstance(reflected, postgresql.TIMESTAMP) and not reflected.timezone:
        return ColumnType("timestamp without time zone")
    precision = getattr(reflected, "precision", None)
    return ColumnType("timestamp", precision=6 if precision is None else precision)


def expected_type(column: Column) -> ColumnType:
    """Return the dataset column's type in the form `reflect_columns` reports."""
    if column.type.kind == "timestamp":
        return ColumnType("timestamp", precision=6)
    return column.type


def is_widening(old: ColumnType, new: ColumnType) -> bool | None:
    """Return None when `new` equals `old`, True when it widens, False otherwise."""
    if old == new:
        return None
    if old.kind != new.kind:
        if old.kind in _INTEGER_RANK and new.kind in _INTEGER_RANK:
            return _INTEGER_RANK[new.kind] > _INTEGER_RANK[old.kind]
        return False

    match old.kind:
        case "string" if old.max_length is None:
            return False
        case "string":
            return new.max_length is None or new.max_length > old.max_length
        case "decimal":
            whole_digits_kept = (
                new.precision - new.scale >= (old.precision or 0) - old.scale
            )
            return new.scale >= old.scale and whole_digits_kept
        case "timestamp":
            return (new.precision or 0) > (old.precision or 0)
    return False


def plan_evolution(
    existing: dict[str, ExistingColumn],
    dataset: Dataset,
    table: str,
    dialect: sa.Dialect,
) -> list[str]:
    """Return the `ALTER TABLE` statements that fit `table` to `dataset`.

    Raises:
        LoadError: A column would narrow or change kind; the message names
            the column, its type in the table and the type the dataset needs.
    """
    quote = dialect.identifier_preparer.quote_identifier
    statements = []
    for column in dataset.columns:
        new_sql = type_sql(column.type, dialect)
        found = existing.get(column.name.lower())
        if found is None:
            # Rows already in the table have no value, so a new column is
            # always nullable.
            statements.append(
                f"ALTER TABLE {qualified_name(table, dialect)} "
                f"ADD COLUMN {quote(column.name)} {new_sql}"
            )
            continue

        widening = is_widening(found.type, expected_type(column))
        if widening is None:
            continue
        if not widening:
            raise LoadError(
                f"Column {column.name!r} of table {table} is {found.type_sql}, but "
                f"dataset {dataset.name} needs {new_sql}; that would narrow the "
                "column or change its kind and could lose data. Migrate the column "
                "by hand or load into a new table.",
                column=column.name,
                old_type=found.type_sql,
                new_type=new_sql,
            )
        statement = _widen_statement(table, found, new_sql, dialect)
        if statement is not None:
            statements.append(statement)
    return statements


def _widen_statement(
    table: str, found: ExistingColumn, new_sql: str, dialect: sa.Dialect
) -> str | None:
    quote = dialect.identifier_preparer.quote_identifier
    target, column = qualified_name(table, dialect), quote(found.name)
    match family(dialect):
        case "sqlite":
            # NOTE: SQLite cannot change a column's declared type without
            # rebuilding the table. It enforces neither lengths nor precision,
            # so the wider values store as they are and the old declaration
            # stays until the table is rebuilt by hand.
            log.info(
                "Column %s of SQLite table %s keeps its declared type %s; SQLite "
                "stores %s values without change.",
                found.name,
                table,
                found.type_sql,
                new_sql,
            )
            return None
        case "mysql":
            null_sql = "NULL" if found.nullable else "NOT NULL"
            return f"ALTER TABLE {target} MODIFY COLUMN {column} {new_sql} {null_sql}"
    # NOTE: other dialects get PostgreSQL's form as well, which SQL Server
    # and Oracle reject; widen such columns by hand until they get their own.
    return f"ALTER TABLE {target} ALTER COLUMN {column} TYPE {new_sql}"
