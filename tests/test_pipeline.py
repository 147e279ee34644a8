"""One window end to end through the real sandbox, and the row-cap split."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy

import connector
from connector.datasets import load_dataset
from connector.errors import TruncatedExportError
from connector.load.sql import normalize_url
from connector.pipeline import run_window
from connector.windows import Window

DATASET = "authorizations/detail"
WINDOW = Window(date(2024, 3, 1), date(2024, 3, 4))


def sandbox_truth(sandbox, window=WINDOW):
    rows = sandbox.expected_rows(DATASET, window.start, window.end)
    return {
        int(row["transaction_token"]): (
            Decimal(row["transaction_amount"]) if row["transaction_amount"] else None
        )
        for row in rows
    }


def exports_made(sandbox):
    return sum(
        1 for entry in sandbox.requests if entry.path.endswith("/csv")
    )


def test_row_cap_splits_window_until_parts_fit(sandbox, sandbox_settings, tmp_path):
    sandbox.faults.row_cap = 50
    settings = sandbox_settings(parquet=str(tmp_path / "lake"), max_count=50)

    summary = run_window(load_dataset(DATASET), WINDOW, settings)

    truth = sandbox_truth(sandbox)
    assert summary.rows_read == len(truth) == 120
    assert summary.exports >= 4
    table = connector.load_dataset(DATASET)
    from connector.load.parquet import read_parquet_dataset

    loaded = read_parquet_dataset(str(tmp_path / "lake"), table)
    assert loaded.num_rows == 120
    assert sorted(loaded.column("transaction_token").to_pylist()) == sorted(truth)


def test_single_day_over_cap_splits_into_hours(sandbox, sandbox_settings, tmp_path):
    sandbox.faults.row_cap = 20
    day = Window(date(2024, 3, 2), date(2024, 3, 2))
    settings = sandbox_settings(parquet=str(tmp_path / "lake"), max_count=20)

    summary = run_window(load_dataset(DATASET), day, settings)

    assert summary.rows_read == 30
    assert summary.exports > 2


def test_unsplittable_capped_export_fails_and_loads_nothing(
    sandbox, sandbox_settings, tmp_path
):
    dataset = load_dataset("transactiontoken")
    sandbox.faults.row_cap = 5
    settings = sandbox_settings(parquet=str(tmp_path / "lake"), max_count=5)

    with pytest.raises(TruncatedExportError, match="row cap") as caught:
        run_window(dataset, WINDOW, settings)

    assert "max_count" in str(caught.value)
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_same_rows_in_every_warehouse(sandbox, sandbox_settings, warehouse_url,
                                      table_name):
    settings = sandbox_settings(warehouse=warehouse_url, table=table_name)

    run_window(load_dataset(DATASET), WINDOW, settings)
    run_window(load_dataset(DATASET), WINDOW, settings)

    engine = sqlalchemy.create_engine(normalize_url(warehouse_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(
                    f"SELECT transaction_token, transaction_amount FROM {table_name}"
                )
            ).fetchall()
            connection.execute(sqlalchemy.text(f"DROP TABLE {table_name}"))
            connection.commit()
    finally:
        engine.dispose()
    loaded = {
        int(key): None if amount is None else Decimal(str(amount))
        for key, amount in rows
    }
    assert loaded == sandbox_truth(sandbox)


def test_read_dataset_keeps_exact_types(sandbox):
    frame = connector.read_dataset(
        DATASET, "2024-03-01", "2024-03-02",
        base_url=sandbox.base_url, app_token=sandbox.app_token,
        access_token=sandbox.access_token, program=sandbox.program,
        poll_interval_s=0.01,
    )

    assert len(frame) == 60
    assert frame["transaction_amount"].dtype == pd.ArrowDtype(pa.decimal128(14, 2))
    assert frame["transaction_token"].dtype == pd.ArrowDtype(pa.int64())
    assert frame["transaction_timestamp"].dtype == pd.ArrowDtype(
        pa.timestamp("us", tz="UTC")
    )
    truth = sandbox_truth(sandbox, Window(date(2024, 3, 1), date(2024, 3, 2)))
    amounts = [None if pd.isna(v) else v for v in frame["transaction_amount"]]
    assert dict(zip(frame["transaction_token"], amounts, strict=True)) == truth


def test_refused_warehouse_load_leaves_parquet_untouched(
    sandbox, sandbox_settings, tmp_path, warehouse_url, table_name
):
    from connector.errors import LoadError
    from connector.load.parquet import read_parquet_dataset

    dataset = load_dataset(DATASET)
    first = sandbox_settings(warehouse=warehouse_url, table=table_name)
    run_window(dataset, WINDOW, first)
    again = sandbox_settings(
        warehouse=warehouse_url, table=table_name, write="append",
        parquet=str(tmp_path / "lake"),
    )

    try:
        with pytest.raises(LoadError):
            run_window(dataset, WINDOW, again)

        assert read_parquet_dataset(str(tmp_path / "lake"), dataset).num_rows == 0
        assert not list((tmp_path / "lake").rglob("*.parquet"))
    finally:
        engine = sqlalchemy.create_engine(normalize_url(warehouse_url))
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP TABLE {table_name}"))
        engine.dispose()


def test_sized_windows_split_before_export(sandbox, sandbox_settings, tmp_path):
    sandbox.faults.row_cap = 50
    settings = sandbox_settings(
        parquet=str(tmp_path / "lake"), max_count=50, size_windows=True
    )

    summary = run_window(load_dataset(DATASET), WINDOW, settings)

    assert summary.rows_read == 120
    assert summary.exports == exports_made(sandbox)
    assert all(entry.params.get("count") for entry in sandbox.requests
               if entry.path.endswith("/detail"))
    filters = [entry.params["transaction_timestamp"] for entry in sandbox.requests
               if entry.path.endswith("/csv")]
    assert "2024-03-01..2024-03-04" not in filters


def test_sized_window_mismatch_warns(sandbox, sandbox_settings, tmp_path, caplog):
    import logging

    settings = sandbox_settings(parquet=str(tmp_path / "lake"), size_windows=True)
    summary = run_window(load_dataset(DATASET), WINDOW, settings)
    assert "counted" not in caplog.text

    from connector.sizing import reconcile

    summary.rows_read -= 1
    with caplog.at_level(logging.WARNING, logger="connector"):
        reconcile(load_dataset(DATASET), WINDOW, summary, [(WINDOW, 120)])

    assert "counted 120" in caplog.text


def test_stages_as_separate_calls(sandbox, sandbox_settings, tmp_path):
    settings = dict(
        base_url=sandbox.base_url, app_token=sandbox.app_token,
        access_token=sandbox.access_token, program=sandbox.program,
        poll_interval_s=0.01, work_dir=tmp_path / "work", max_count=50,
    )
    sandbox.faults.row_cap = 50

    files = connector.export_files(DATASET, "2024-03-01", "2024-03-04", **settings)
    assert len(files) >= 4
    assert all(path.is_file() for path in files)

    rows = sum(
        batch.num_rows
        for path in files
        for batch in connector.transform_file(path, DATASET)
    )
    assert rows == 120

    summaries = [
        connector.load_file(path, DATASET, parquet=str(tmp_path / "lake"),
                       warehouse=f"sqlite:///{tmp_path / 'w.db'}", table="auths")
        for path in files
    ]
    assert sum(summary.rows_read for summary in summaries) == 120
    from connector.load.parquet import read_parquet_dataset

    loaded = read_parquet_dataset(str(tmp_path / "lake"), load_dataset(DATASET))
    assert sorted(loaded.column("transaction_token").to_pylist()) == sorted(
        sandbox_truth(sandbox)
    )


def test_api_names_survive_stage_imports():
    import connector.extract.client  # noqa: F401
    import connector.load.parquet  # noqa: F401
    import connector.transform  # noqa: F401

    assert callable(connector.export_files)
    assert callable(connector.transform_file)
    assert callable(connector.load_file)


@pytest.mark.parametrize("write", ["upsert", "replace"])
def test_local_day_reloads_keep_every_row(sandbox, sandbox_settings, tmp_path, write):
    # Local days cut UTC days in two: reloading one local day, or an
    # overlapping range, must not drop the rows of the neighbouring days.
    from connector.load.parquet import read_parquet_dataset

    dataset = load_dataset(DATASET)
    database = tmp_path / "warehouse.db"
    settings = sandbox_settings(
        parquet=str(tmp_path / "lake"),
        warehouse=f"sqlite:///{database}",
        table="authorizations",
        write=write,
        source_timezone="America/Bogota",
    )
    for window in (
        WINDOW,
        Window(date(2024, 3, 2), date(2024, 3, 2)),
        Window(date(2024, 3, 3), date(2024, 3, 5)),
    ):
        run_window(dataset, window, settings)

    truth = sandbox_truth(sandbox, Window(date(2024, 3, 1), date(2024, 3, 5)))
    table = read_parquet_dataset(str(tmp_path / "lake"), dataset)
    amounts = dict(
        zip(
            table.column("transaction_token").to_pylist(),
            table.column("transaction_amount").to_pylist(),
            strict=True,
        )
    )
    assert table.num_rows == len(truth) == 150
    assert amounts == truth
    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        tokens = connection.execute(
            sqlalchemy.text("SELECT transaction_token FROM authorizations")
        ).scalars()
        assert sorted(int(token) for token in tokens) == sorted(truth)
    engine.dispose()
