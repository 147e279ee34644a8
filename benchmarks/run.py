"""Benchmark the product against the physical floor and a naive baseline.

Usage: `python -m benchmarks.run [--rows 1000000,5000000] [--quick]
[--output BENCHMARKS.md] [--skip-postgres] [--skip-mariadb]`.

For each row count, the exports are generated (or taken from the cache in
`benchmarks/data/`), then every step runs in its own process, one after the
other, on the same files: the product, the floor and the naive baseline for
Parquet, then for PostgreSQL and MariaDB. The page written to `--output`
holds the machine, the command, the results and the targets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks import warehouse
from benchmarks.generate import DATA_DIR, DATASET, ExportFiles, ensure_exports
from benchmarks.page import product_version, write_page
from benchmarks.report import Measurement

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
QUICK_ROWS = 20_000
_WAREHOUSE_URLS = {"postgres": warehouse.POSTGRES_URL, "mariadb": warehouse.MARIADB_URL}


class Suite:
    """The steps of one invocation, sharing its options and table names."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:8]
        self.results: list[Measurement] = []
        self.skipped: list[str] = []

    def step(self, spec: dict[str, Any], item: Measurement | None) -> Measurement:
        """Run one worker step; record it in `results` unless `item` is None."""
        measured = self.measure(spec, item or Measurement(0, "", "prepare", ""))
        if item is not None:
            self._log(item)
            self.results.append(item)
        return measured

    def measure(self, spec: dict[str, Any], measured: Measurement) -> Measurement:
        """Run one worker step and fill `measured` with its figures or error."""
        command = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
        try:
            done = subprocess.run(
                command,
                check=False,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=self.args.timeout_s,
            )
        except subprocess.TimeoutExpired:
            measured.error = f"timed out after {self.args.timeout_s:.0f} s"
        else:
            if done.returncode == 0:
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                measured.rows = figures["rows"]
                measured.seconds = figures["seconds"]
                measured.cpu_seconds = figures["cpu_seconds"]
                measured.peak_rss_bytes = figures["peak_rss_bytes"]
            else:
                measured.error = _last_error(done.stderr)
        if measured.error:
            log.error("Step %s failed: %s", spec["step"], measured.error)
        return measured

    def _log(self, item: Measurement) -> None:
        log.info(
            "%s rows, %s: %.2f s, %d MB",
            f"{item.export_rows:,}",
            item.label,
            item.seconds,
            item.peak_rss_bytes // 1_000_000,
        )

    def run_parquet(self, files: ExportFiles, out: Path) -> None:
        """Run the product, floor A and the naive baseline into Parquet.

        The steps run `--repeat` times in turn, so that a slow spell of the
        machine falls on every path alike. Each keeps its fastest time and
        its highest peak RSS.
        """
        steps: list[tuple[Measurement, dict[str, Any]]] = []
        for compression, path in (("gzip", files.gzip), ("zip", files.zip)):
            target = out / f"product-{compression}"
            steps.append(
                (
                    Measurement(files.rows, "parquet", "product", compression),
                    {"step": "product-parquet", "path": str(path), "out": str(target)},
                )
            )
        for compression, path in (("gzip", files.gzip), ("zip", files.zip)):
            steps.append(
                (
                    Measurement(files.rows, "parquet", "floor", compression),
                    {
                        "step": "floor-parquet",
                        "path": str(path),
                        "out": str(out / f"floor-{compression}"),
                    },
                )
            )
        if not self.args.skip_naive:
            steps.append(
                (
                    Measurement(files.rows, "parquet", "naive", "gzip"),
                    {
                        "step": "naive-parquet",
                        "path": str(files.gzip),
                        "out": str(out / "naive"),
                    },
                )
            )
        for turn in range(self.args.repeat):
            for item, spec in steps:
                if item.error is None:
                    self._measure_again(item, spec, files, first=turn == 0)
        for item, _ in steps:
            self._log(item)
            self.results.append(item)

    def _measure_again(
        self,
        item: Measurement,
        spec: dict[str, Any],
        files: ExportFiles,
        *,
        first: bool,
    ) -> None:
        """Measure a Parquet step again, keeping the fastest time and highest RSS."""
        if item.role == "product":
            # The product adds to what a folder holds, so each turn starts empty.
            shutil.rmtree(spec["out"], ignore_errors=True)
        measured = self.measure(spec, replace(item))
        if measured.error is None and item.role == "product":
            measured.error = _check_parquet(Path(spec["out"]), files)
        if measured.error is not None:
            item.error = measured.error
            return
        peak = max(item.peak_rss_bytes, measured.peak_rss_bytes)
        if first or measured.seconds < item.seconds:
            item.rows = measured.rows
            item.seconds = measured.seconds
            item.cpu_seconds = measured.cpu_seconds
        item.peak_rss_bytes = peak

    def run_warehouse(self, files: ExportFiles, system: str) -> None:
        """Run the product and the floor upserts (and the naive append) into `system`."""
        prefix = f"bench_{self.run_id}_{files.rows}_{system}"
        tables = [f"{prefix}_product", f"{prefix}_floor", f"{prefix}_naive"]
        try:
            self._product_upsert(files, system, tables[0], _WAREHOUSE_URLS[system])
            if system == "mariadb" and not self.args.skip_fallback:
                tables.append(f"{prefix}_fallback")
                self._product_upsert(
                    files,
                    system,
                    tables[-1],
                    warehouse.MARIADB_DEFAULT_URL,
                    variant="no local_infile",
                )
            self._floor_upsert(files, system, tables[1])
            if system == "postgres" and not self.args.skip_naive:
                item = Measurement(files.rows, system, "naive", "gzip")
                spec = {
                    "step": "naive-postgres",
                    "path": str(files.gzip),
                    "table": tables[2],
                }
                self.step(spec, item)
        finally:
            warehouse.drop_tables(system, tables)

    def _product_upsert(
        self, files: ExportFiles, system: str, table: str, url: str, variant: str = ""
    ) -> None:
        spec = {"step": "product-warehouse", "url": url, "table": table}
        prepared = self.step({**spec, "path": str(files.half)}, None)
        item = Measurement(files.rows, system, "product", "gzip", variant=variant)
        if prepared.error:
            item.error = f"pre-load of half the rows failed: {prepared.error}"
            self.results.append(item)
            return
        self.step({**spec, "path": str(files.gzip)}, item)
        if item.error is None:
            item.error = _check_table(system, table, files.rows)

    def _floor_upsert(self, files: ExportFiles, system: str, table: str) -> None:
        spec = {"step": "floor-warehouse", "system": system, "table": table}
        prepared = self.step({**spec, "path": str(files.half), "create": True}, None)
        item = Measurement(files.rows, system, "floor", "gzip")
        if prepared.error:
            item.error = f"pre-load of half the rows failed: {prepared.error}"
            self.results.append(item)
            return
        self.step({**spec, "path": str(files.gzip)}, item)
        if item.error is None:
            item.error = _check_table(system, table, files.rows)


def _check_parquet(out: Path, files: ExportFiles) -> str | None:
    """Return why the product's Parquet output differs from the export, or None."""
    rows, amount = read_parquet_totals(out)
    if rows != files.rows or amount != files.amount_sum:
        return (
            f"output holds {rows} rows summing to {amount}, expected {files.rows} rows "
            f"summing to {files.amount_sum}"
        )
    return None


def read_parquet_totals(out: Path) -> tuple[int, Decimal]:
    """Return the row count and exact `transaction_amount` sum below `out`."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from connector.datasets import load_dataset
    from connector.load.parquet import dataset_root

    root = dataset_root(str(out), load_dataset(DATASET))
    table = ds.dataset(root, format="parquet").to_table(columns=["transaction_amount"])
    amount = pc.sum(table["transaction_amount"]).as_py() or Decimal(0)
    return table.num_rows, amount


def _check_table(system: str, table: str, expected: int) -> str | None:
    rows = warehouse.count_rows(system, table)
    return None if rows == expected else f"table holds {rows} rows, expected {expected}"


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "the worker exited without a message"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--rows",
        default="1000000,5000000",
        help="comma-separated export sizes, in rows",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"one small export of {QUICK_ROWS:,} rows"
    )
    parser.add_argument(
        "--output", default="BENCHMARKS.md", help="Markdown page to write"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="cache of generated exports"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="outputs of the Parquet runs (default: DATA_DIR/runs)",
    )
    parser.add_argument(
        "--skip-postgres", action="store_true", help="skip the PostgreSQL runs"
    )
    parser.add_argument(
        "--skip-mariadb", action="store_true", help="skip the MariaDB runs"
    )
    parser.add_argument(
        "--skip-fallback",
        action="store_true",
        help="skip the MariaDB run of the product without local_infile",
    )
    parser.add_argument(
        "--skip-naive", action="store_true", help="skip the pandas baselines"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each Parquet step, of which the fastest counts (default: 3)",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=3600.0,
        help="time limit of one step, in seconds",
    )
    args = parser.parse_args(argv)
    args.row_counts = (
        [QUICK_ROWS] if args.quick else [int(n) for n in args.rows.split(",")]
    )
    args.work_dir = args.work_dir or args.data_dir / "runs"
    return args


def _systems(args: argparse.Namespace, suite: Suite) -> list[str]:
    """Return the reachable warehouses; with CI=true an unreachable one is an error."""
    systems = []
    for system, skip in (
        ("postgres", args.skip_postgres),
        ("mariadb", args.skip_mariadb),
    ):
        if skip:
            suite.skipped.append(f"{system}: skipped by --skip-{system}")
            continue
        problem = warehouse.reachable(system)
        if problem and os.environ.get("CI") == "true":
            raise SystemExit(
                f"{system} is not reachable and CI=true requires it: {problem}"
            )
        if problem:
            suite.skipped.append(f"{system}: not reachable ({problem})")
            continue
        systems.append(system)
    return systems


def main(argv: list[str] | None = None) -> int:
    """Generate the exports, run every step and write the page."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    suite = Suite(args)
    systems = _systems(args, suite)
    load_at_start = os.getloadavg()[0]
    version_at_start = product_version()
    for rows in args.row_counts:
        files = ensure_exports(rows, args.data_dir)
        out = args.work_dir / str(rows)
        shutil.rmtree(out, ignore_errors=True)
        suite.run_parquet(files, out)
        for system in systems:
            suite.run_warehouse(files, system)

    command = "python -m benchmarks.run " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    load = f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    version = f"Product measured: {version_at_start}."
    if product_version() != version_at_start:
        version = (
            f"Product measured: {version_at_start} at the start and "
            f"{product_version()} at the end; the product changed during the run."
        )
    write_page(
        Path(args.output), suite.results, suite.skipped, command.strip(), load, version
    )
    log.info("Wrote %s", args.output)
    return 1 if any(item.error for item in suite.results) else 0


if __name__ == "__main__":
    sys.exit(main())
