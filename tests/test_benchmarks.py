"""Run the benchmark on a small export and check its page and the product's output.

Timing targets are not asserted: they depend on the machine and its load.
With CI=true the PostgreSQL and MariaDB runs must be in the table; elsewhere
they are skipped when their server is unreachable.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from benchmarks import run, warehouse
from benchmarks.generate import ensure_exports

_PARQUET_RUNS = [
    "parquet product (gzip)",
    "parquet product (zip)",
    "parquet floor (gzip)",
    "parquet floor (zip)",
    "parquet naive (gzip)",
]
_WAREHOUSE_RUNS = {
    "postgres": [
        "postgres product (gzip)",
        "postgres floor (gzip)",
        "postgres naive (gzip)",
    ],
    "mariadb": [
        "mariadb product (gzip)",
        "mariadb product (gzip, no local_infile)",
        "mariadb floor (gzip)",
    ],
}
_NUMBER = re.compile(r"^[\d,]+(\.\d+)?$")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("bench")
    output = folder / "BENCHMARKS.md"
    exit_code = run.main(
        [
            "--quick",
            "--output",
            str(output),
            "--data-dir",
            str(folder / "data"),
            "--timeout-s",
            "120",
            "--repeat",
            "2",
        ]
    )
    return {
        "folder": folder,
        "page": output.read_text(encoding="utf-8"),
        "exit": exit_code,
    }


def _result_rows(page: str) -> dict[str, list[str]]:
    section = page.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] not in ("export rows", "---:"):
            rows[cells[1]] = cells
    return rows


def _expected_runs() -> list[str]:
    expected = list(_PARQUET_RUNS)
    for system, labels in _WAREHOUSE_RUNS.items():
        if os.environ.get("CI") == "true" or warehouse.reachable(system) is None:
            expected += labels
    return expected


def _csv_totals(path: Path) -> tuple[list[int], Decimal]:
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            include_columns=["transaction_token", "transaction_amount"],
            column_types={"transaction_amount": pa.decimal128(14, 2)},
        ),
    )
    tokens = sorted(table["transaction_token"].to_pylist())
    return tokens, pc.sum(table["transaction_amount"]).as_py()


def test_quick_run_completes(quick_run):
    assert quick_run["exit"] == 0
    assert "## Targets" in quick_run["page"]


def test_quick_run_lists_every_run(quick_run):
    rows = _result_rows(quick_run["page"])

    assert sorted(rows) == sorted(_expected_runs())


def test_quick_run_rows_have_numbers(quick_run):
    rows = _result_rows(quick_run["page"])

    for label, cells in rows.items():
        figures = cells[2:7]  # rows, seconds, rows/s, CPU seconds, peak RSS
        assert all(_NUMBER.match(cell) for cell in figures), (label, figures)
        assert cells[2] == "20,000", label


@pytest.mark.parametrize("compression", ["gzip", "zip"])
def test_product_parquet_holds_generated_rows(quick_run, compression):
    files = ensure_exports(run.QUICK_ROWS, quick_run["folder"] / "data")
    out = (
        quick_run["folder"]
        / "data"
        / "runs"
        / str(run.QUICK_ROWS)
        / f"product-{compression}"
    )
    tokens, amount = _csv_totals(files.gzip)

    rows, written_amount = run.read_parquet_totals(out)

    assert rows == len(tokens) == run.QUICK_ROWS
    assert written_amount == amount
    assert isinstance(written_amount, Decimal)


def test_product_parquet_holds_each_token_once(quick_run):
    import pyarrow.dataset as ds

    files = ensure_exports(run.QUICK_ROWS, quick_run["folder"] / "data")
    out = quick_run["folder"] / "data" / "runs" / str(run.QUICK_ROWS) / "product-gzip"
    expected, _ = _csv_totals(files.gzip)

    written = ds.dataset(out, format="parquet").to_table(columns=["transaction_token"])

    assert sorted(written["transaction_token"].to_pylist()) == expected


def test_repeat_keeps_fastest_time_and_highest_rss(monkeypatch, tmp_path):
    suite = run.Suite(run.parse_args(["--quick", "--data-dir", str(tmp_path)]))
    figures = iter([(3.0, 30.0, 100), (2.0, 20.0, 90), (2.5, 25.0, 120)])

    def measure(spec, measured):
        measured.seconds, measured.cpu_seconds, measured.peak_rss_bytes = next(figures)
        measured.rows = 5
        return measured

    monkeypatch.setattr(suite, "measure", measure)
    item = run.Measurement(5, "parquet", "floor", "gzip")
    for turn in range(3):
        suite._measure_again(item, {"out": str(tmp_path)}, None, first=turn == 0)

    assert item.seconds == 2.0
    assert item.cpu_seconds == 20.0
    assert item.peak_rss_bytes == 120
    assert item.error is None
