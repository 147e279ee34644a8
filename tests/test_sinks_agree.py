"""One export into Parquet and every warehouse reads back identical rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy

from connector.datasets import load_dataset
from connector.load.parquet import read_parquet_dataset
from connector.load.sql import normalize_url
from connector.pipeline import run_window
from connector.windows import Window

DATASET = "authorizations/detail"
WINDOW = Window(date(2024, 3, 1), date(2024, 3, 3))


def normalize(value, kind):
    """Bring a value read from any sink to one exact Python form."""
    if value is None:
        return None
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "timestamp":
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if kind == "date" and isinstance(value, str):
        return date.fromisoformat(value)
    if kind == "bool":
        return bool(value)
    if kind.startswith("int"):
        return int(value)
    return value


def rows_by_key(dataset, rows):
    kinds = {column.name: column.type.kind for column in dataset.columns}
    result = {}
    for row in rows:
        clean = {name: normalize(row[name], kinds[name]) for name in kinds}
        result[clean["transaction_token"]] = clean
    return result


@pytest.fixture
def databases(request):
    urls = [request.getfixturevalue("sqlite_url"), request.getfixturevalue("pg_url"),
            request.getfixturevalue("mariadb_url")]
    return urls


def test_every_sink_holds_identical_rows(sandbox, sandbox_settings, tmp_path,
                                         databases, table_name):
    dataset = load_dataset(DATASET)
    lake = tmp_path / "lake"
    run_window(dataset, WINDOW, sandbox_settings(parquet=str(lake)))
    parquet_rows = rows_by_key(dataset, read_parquet_dataset(str(lake), dataset)
                               .to_pylist())
    assert len(parquet_rows) == 3 * 30

    for url in databases:
        run_window(dataset, WINDOW, sandbox_settings(warehouse=url, table=table_name))
        engine = sqlalchemy.create_engine(normalize_url(url))
        try:
            with engine.begin() as connection:
                result = connection.execute(
                    sqlalchemy.text(f"SELECT * FROM {table_name}")
                )
                stored = [dict(row._mapping) for row in result]
                connection.execute(sqlalchemy.text(f"DROP TABLE {table_name}"))
                connection.execute(
                    sqlalchemy.text(f"DROP TABLE IF EXISTS {table_name}_rejects")
                )
        finally:
            engine.dispose()

        warehouse_rows = rows_by_key(dataset, stored)
        assert warehouse_rows.keys() == parquet_rows.keys(), url
        for key, row in parquet_rows.items():
            assert warehouse_rows[key] == row, (url, key)
