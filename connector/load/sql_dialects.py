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

from typing import TYPE_CHECKING

from connector.load.sql_exact_text import canonical_decimal_text
from connector.load.sql_generic import (
    SEQUENCE_COLUMN,
    MergeCounts,
    StagingMerger,
    describe_key,
)
from connector.load.sql_mysql import MySqlMerger
from connector.load.sql_postgres import PostgresMerger
from connector.load.sql_schema import family
from connector.load.sql_sqlite import SqliteMerger

if TYPE_CHECKING:
    from collections.abc import Collection

    import sqlalchemy as sa

    from connector.datasets import Dataset

__all__ = [
    "SEQUENCE_COLUMN",
    "MergeCounts",
    "MySqlMerger",
    "PostgresMerger",
    "SqliteMerger",
    "StagingMerger",
    "canonical_decimal_text",
    "describe_key",
    "merger_for",
]


def merger_for(
    conn: sa.Connection,
    table: str,
    dataset: Dataset,
    stage: str,
    preserve_columns: Collection[str] = (),
) -> StagingMerger:
    """Return the staging and merge strategy for the connection's dialect."""
    kind = family(conn.dialect)
    merger_class = {
        "postgresql": PostgresMerger,
        "mysql": MySqlMerger,
        "sqlite": SqliteMerger,
    }.get(kind, StagingMerger)
    return merger_class(conn, table, dataset, stage, preserve_columns)
