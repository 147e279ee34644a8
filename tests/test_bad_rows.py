"""Bad values end to end: fail loads nothing, quarantine sets rows aside."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.datasets import Dataset
from connector.errors import DataError
from connector.pipeline import load_file
from connector.settings import load_settings

CASES = Path(__file__).parent / "cases"
HEADER = (
    "token,user_token,card_token,transaction_timestamp,amount,currency_code,state,"
    "merchant_name,mcc,network,response_code"
)


def write_export(tmp_path: Path, amounts: list[str]) -> Path:
    lines = [HEADER] + [
        f"t{i},u,c,2024-03-05 10:00:0{i},{amount},USD,COMPLETION,Shop {i},0742,VISA,00"
        for i, amount in enumerate(amounts)
    ]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cases_dataset():
    return Dataset.from_file(CASES / "schema.json")


def test_fail_mode_names_line_and_loads_nothing(tmp_path, cases_dataset):
    export = write_export(tmp_path, ["1.00", "2.00", "12.345", "4.00"])
    settings = load_settings(
        None, parquet=str(tmp_path / "lake"),
        warehouse=f"sqlite:///{tmp_path / 'w.db'}", table="tx",
    )

    with pytest.raises(DataError) as caught:
        load_file(export, cases_dataset, settings)

    assert caught.value.line == 4
    assert caught.value.column == "amount"
    assert "12.345" in str(caught.value)
    assert str(export) in str(caught.value)
    assert not list((tmp_path / "lake").rglob("*.parquet"))
    with sqlite3.connect(tmp_path / "w.db") as connection:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "tx" in tables:
            assert connection.execute("SELECT COUNT(*) FROM tx").fetchone()[0] == 0


def test_quarantine_sets_bad_rows_aside_in_both_sinks(tmp_path, cases_dataset):
    export = write_export(tmp_path, ["1.00", "oops", "3.00", "12.345"])
    settings = load_settings(
        None, parquet=str(tmp_path / "lake"), on_bad_rows="quarantine",
        warehouse=f"sqlite:///{tmp_path / 'w.db'}", table="tx",
    )

    summary = load_file(export, cases_dataset, settings)

    assert summary.rows_read == 4
    assert summary.rows_rejected == 2
    with sqlite3.connect(tmp_path / "w.db") as connection:
        kept = connection.execute("SELECT token FROM tx ORDER BY token").fetchall()
        rejects = connection.execute(
            "SELECT line, \"column\", record FROM tx_rejects ORDER BY line"
        ).fetchall()
    assert kept == [("t0",), ("t2",)]
    assert [(line, column) for line, column, _ in rejects] == [
        (3, "amount"), (5, "amount")
    ]
    assert "oops" in rejects[0][2]
    files = list((tmp_path / "lake").rglob("_rejects/*.parquet"))
    assert len(files) == 1
    assert pq.read_table(files[0]).column("line").to_pylist() == [3, 5]


def test_cli_quarantine_summary_counts_rejects(tmp_path, monkeypatch):
    # The cases schema is not an installed dataset, so drive a real one:
    # an authorizations export with one amount that overflows numeric(14,2).
    header = "transaction_token,program,transaction_timestamp,transaction_amount"
    rows = [
        "1,p,2024-03-01 10:00:00,1.00",
        "2,p,2024-03-01 11:00:00,1234567890123.00",
        "3,p,2024-03-01 12:00:00,-2.50",
    ]
    export = tmp_path / "auths.csv"
    export.write_text("\n".join([header, *rows]) + "\n")

    result = CliRunner().invoke(
        main,
        ["load", str(export), "--dataset", "authorizations/detail",
         "--on-bad-rows", "quarantine", "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 0, result.output
    assert "1 row rejected (set aside in " in result.output
    assert "3 rows read" in result.output


def test_cli_fail_mode_exits_1_naming_value(tmp_path):
    header = "transaction_token,program,transaction_timestamp,transaction_amount"
    export = tmp_path / "auths.csv"
    export.write_text(header + "\n1,p,2024-03-01 10:00:00,12.345\n")

    result = CliRunner().invoke(
        main,
        ["load", str(export), "--dataset", "authorizations/detail",
         "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 1
    assert "12.345" in result.output
    assert "line 2" in result.output
    assert "transaction_amount" in result.output


def test_missing_column_keeps_stored_values(tmp_path, warehouse_url, table_name):
    import sqlalchemy

    from connector.datasets import load_dataset
    from connector.load.sql import normalize_url

    full = tmp_path / "full.csv"
    full.write_text(
        "transaction_token,program,transaction_timestamp,transaction_amount,state\n"
        "1,p,2024-03-01 10:00:00,55.55,PENDING\n"
    )
    partial = tmp_path / "partial.csv"
    partial.write_text(
        "transaction_token,program,transaction_timestamp,state\n"
        "1,p,2024-03-01 10:00:00,COMPLETION\n"
        "2,p,2024-03-01 11:00:00,PENDING\n"
    )
    settings = load_settings(None, warehouse=warehouse_url, table=table_name)
    dataset = load_dataset("authorizations/detail")

    load_file(full, dataset, settings)
    load_file(partial, dataset, settings)

    engine = sqlalchemy.create_engine(normalize_url(warehouse_url))
    try:
        with engine.begin() as connection:
            rows = connection.execute(sqlalchemy.text(
                f"SELECT transaction_token, transaction_amount, state FROM {table_name} "
                "ORDER BY transaction_token"
            )).fetchall()
            connection.execute(sqlalchemy.text(f"DROP TABLE {table_name}"))
    finally:
        engine.dispose()
    assert [(int(t), None if a is None else str(a), s) for t, a, s in rows] == [
        (1, "55.55", "COMPLETION"),
        (2, None, "PENDING"),
    ]
