"""A run checks its sinks before it exports anything.

An export can take minutes, so a wrong warehouse URL, table name or Parquet
folder must fail before the first export request reaches DiVA.
"""

from __future__ import annotations

import logging
import socket
from datetime import date

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from benchmarks.generate import ensure_exports
from connector.datasets import load_dataset
from connector.errors import ConfigError, LoadError
from connector.incremental import run_incremental
from connector.load.sql import normalize_url
from connector.load.sql_schema import check_table_name
from connector.pipeline import run_window
from connector.windows import Window

DATASET = "authorizations/detail"
WINDOW = Window(date(2024, 3, 1), date(2024, 3, 2))


def exports_made(sandbox) -> int:
    return sum(1 for entry in sandbox.requests if entry.path.endswith("/csv"))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_warehouse_fails_before_export(sandbox, sandbox_settings):
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    settings = sandbox_settings(warehouse=url, table="authorizations")

    with pytest.raises(LoadError, match="Connecting to .* failed") as caught:
        run_window(load_dataset(DATASET), WINDOW, settings)

    assert "Check the warehouse URL" in str(caught.value)
    assert exports_made(sandbox) == 0


def test_unreachable_warehouse_named_in_incremental_run(sandbox, sandbox_settings):
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    settings = sandbox_settings(warehouse=url, table="authorizations")

    with pytest.raises(LoadError, match="Connecting to .* failed") as caught:
        run_incremental(load_dataset(DATASET), settings, start=WINDOW.start)

    assert "diva_state" not in str(caught.value)
    assert exports_made(sandbox) == 0


@pytest.mark.parametrize(
    ("database", "too_long"), [("postgresql", 64), ("mariadb", 65)]
)
def test_long_table_name_fails_before_export(
    request, sandbox, sandbox_settings, database, too_long
):
    fixture = "pg_url" if database == "postgresql" else "mariadb_url"
    url = request.getfixturevalue(fixture)
    name = "t" * too_long
    settings = sandbox_settings(warehouse=url, table=name)

    with pytest.raises(ConfigError, match="Invalid table name") as caught:
        run_window(load_dataset(DATASET), WINDOW, settings)

    assert f"at most {too_long - 1}" in str(caught.value)
    assert exports_made(sandbox) == 0
    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as connection:
        assert not sa.inspect(connection).has_table(name[:63])
    engine.dispose()


def test_long_rejects_table_name_rejected(sandbox, sandbox_settings, pg_url):
    # Quarantined rows go to "<table>_rejects", so that name runs out first.
    settings = sandbox_settings(
        warehouse=pg_url, table="t" * 60, on_bad_rows="quarantine"
    )

    with pytest.raises(ConfigError, match="_rejects"):
        run_window(load_dataset(DATASET), WINDOW, settings)

    assert exports_made(sandbox) == 0


def test_rejects_name_unchecked_without_quarantine(
    sandbox, sandbox_settings, pg_url
):
    # Without quarantine no rejects table is made, so 60 characters are fine.
    name = "t" * 60
    settings = sandbox_settings(warehouse=pg_url, table=name)

    try:
        summary = run_window(load_dataset(DATASET), WINDOW, settings)
        assert summary.rows_read == 60
    finally:
        engine = sa.create_engine(normalize_url(pg_url))
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_parquet_destination_file_fails_before_export(
    sandbox, sandbox_settings, tmp_path
):
    blocker = tmp_path / "lake"
    blocker.write_text("not a folder")
    settings = sandbox_settings(parquet=str(tmp_path / "lake"))

    with pytest.raises(ConfigError, match="is a file, not a folder") as caught:
        run_window(load_dataset(DATASET), WINDOW, settings)

    assert str(blocker) in str(caught.value)
    assert blocker.read_text() == "not a folder"
    assert exports_made(sandbox) == 0


def test_load_into_file_path_names_the_file(tmp_path):
    from connector.pipeline import load_file
    from connector.settings import load_settings

    export = ensure_exports(200, tmp_path).gzip
    blocker = tmp_path / "lake"
    blocker.write_text("not a folder")
    settings = load_settings(None, parquet=str(blocker / "sub"))

    with pytest.raises(ConfigError, match="is a file, not a folder") as caught:
        load_file(export, load_dataset(DATASET), settings)

    assert str(blocker) in str(caught.value)


def test_parquet_destination_created_when_missing(
    sandbox, sandbox_settings, tmp_path
):
    settings = sandbox_settings(parquet=str(tmp_path / "new" / "lake"))

    summary = run_window(load_dataset(DATASET), WINDOW, settings)

    assert summary.rows_read == 60
    assert list((tmp_path / "new" / "lake").rglob("*.parquet"))


@pytest.mark.parametrize(
    ("dialect", "name", "accepted"),
    [
        (postgresql.dialect(), "a" * 63, True),
        (postgresql.dialect(), "a" * 64, False),
        # PostgreSQL counts bytes: 32 two-byte letters are 64 bytes.
        (postgresql.dialect(), "é" * 32, False),
        (postgresql.dialect(), "s" * 63 + "." + "t" * 63, True),
        (postgresql.dialect(), "s" * 64 + ".t", False),
        (mysql.dialect(), "é" * 64, True),
        (mysql.dialect(), "a" * 65, False),
        (sqlite.dialect(), "a" * 500, True),
    ],
)
def test_table_name_limits(dialect, name, accepted):
    if accepted:
        check_table_name(name, dialect)
    else:
        with pytest.raises(ConfigError, match="Choose a shorter name"):
            check_table_name(name, dialect)


def test_write_mode_without_warehouse_warns(tmp_path, caplog):
    from connector.pipeline import load_file
    from connector.settings import load_settings

    export = ensure_exports(200, tmp_path).gzip
    settings = load_settings(None, parquet=str(tmp_path / "lake"), write="append")

    with caplog.at_level(logging.WARNING, logger="connector.sinks"):
        summary = load_file(export, load_dataset(DATASET), settings)

    assert summary.rows_read == 200
    assert "write=append applies to warehouse tables only" in caplog.text


def test_sqlite_folder_created_when_missing(sandbox, sandbox_settings, tmp_path):
    database = tmp_path / "new" / "folder" / "warehouse.db"
    settings = sandbox_settings(warehouse=f"sqlite:///{database}", table="t")

    summary = run_window(load_dataset(DATASET), WINDOW, settings)

    assert summary.rows_read == 60
    assert database.is_file()
