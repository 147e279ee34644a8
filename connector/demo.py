"""The demo: a month of sandbox authorizations into Parquet and SQLite.

It runs the same pipeline as `diva-connector run`, against a sandbox started
in this process on a free loopback port, then checks the loaded rows against
what the sandbox served, to the cent.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from connector.datasets import load_dataset
from connector.errors import DivaError
from connector.settings import load_settings
from connector.windows import Window

log = logging.getLogger(__name__)

DATASET = "authorizations/detail"
TABLE = "authorizations"
AMOUNT = "transaction_amount"


def last_full_month(today: date) -> Window:
    """Return the calendar month before the one holding `today`."""
    last_day = today.replace(day=1) - timedelta(days=1)
    return Window(last_day.replace(day=1), last_day)


def run_demo(
    directory: Path,
    *,
    rows_per_day: int = 200,
    today: date | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Start the sandbox, load one month into `directory`, and check the rows.

    Raises:
        DivaError: A stage failed, or the loaded rows differ from the
            sandbox's (which would be a bug in the connector).
    """
    from connector.pipeline import run_window
    from connector.sandbox import Sandbox

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    window = last_full_month(today or date.today())
    dataset = load_dataset(DATASET)
    database = directory / "warehouse.db"

    with Sandbox(seed=1, rows_per_day=rows_per_day, pending_polls=1) as sandbox:
        echo(f"Sandbox serving DiVA at {sandbox.base_url}")
        settings = load_settings(
            None,
            base_url=sandbox.base_url,
            app_token=sandbox.app_token,
            access_token=sandbox.access_token,
            program=sandbox.program,
            parquet=str(directory),
            warehouse=f"sqlite:///{database}",
            table=TABLE,
            work_dir=directory / ".work",
            poll_interval_s=0.2,
        )
        summary = run_window(dataset, window, settings)
        expected = sandbox.expected_rows(DATASET, window.start, window.end)

    rows, total = _check_loaded(directory, database, expected)
    echo(
        f"Loaded {DATASET} for {window}: {summary.rows_read:,} rows in "
        f"{summary.seconds:.1f} s."
    )
    echo(
        f"Checked against the sandbox: {rows:,} rows, amounts totalling {total} match."
    )
    echo("")
    parquet_root = directory / "authorizations" / "detail"
    echo(f"Parquet:  {parquet_root}")
    echo(
        f'  {sys.executable} -c "import pandas as pd; print(pd.read_parquet('
        f"'{parquet_root}', dtype_backend='pyarrow').dtypes)\""
    )
    echo(f"SQLite:   {database} (table {TABLE})")
    echo(
        f'  sqlite3 {database} "SELECT network, COUNT(*) FROM {TABLE} GROUP BY network"'
    )


def _check_loaded(
    directory: Path, database: Path, expected: list[dict]
) -> tuple[int, Decimal]:
    """Compare both sinks with the sandbox's rows; return the row count and total."""
    import sqlite3

    from connector.load.parquet import read_parquet_dataset

    want_total = sum(
        (Decimal(row[AMOUNT]) for row in expected if row.get(AMOUNT)), Decimal(0)
    )
    want_keys = sorted(int(row["transaction_token"]) for row in expected)

    table = read_parquet_dataset(str(directory), load_dataset(DATASET))
    parquet_keys = sorted(table.column("transaction_token").to_pylist())
    parquet_total = sum(
        (value for value in table.column(AMOUNT).to_pylist() if value is not None),
        Decimal(0),
    )

    with sqlite3.connect(database) as connection:
        sql_rows = connection.execute(
            f"SELECT transaction_token, {AMOUNT} FROM {TABLE}"
        ).fetchall()
    sql_keys = sorted(int(key) for key, _ in sql_rows)
    sql_total = sum((Decimal(str(v)) for _, v in sql_rows if v is not None), Decimal(0))

    for sink, keys, total in (
        ("Parquet", parquet_keys, parquet_total),
        ("SQLite", sql_keys, sql_total),
    ):
        if keys != want_keys or total != want_total:
            raise DivaError(
                f"{sink} contains {len(keys)} rows totalling {total}, but the sandbox "
                f"served {len(want_keys)} rows totalling {want_total}."
            )
    return len(want_keys), want_total
