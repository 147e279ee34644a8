"""Write the benchmark page: machine, command, method, results and targets.

Everything above the `ANALYSIS_MARK` line is generated. Whatever follows the
mark in an existing page (the hand-written analysis of a run: profiles,
where the time goes) is carried over when the page is written again.
"""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import warehouse
from benchmarks.report import (
    Measurement,
    describe_machine,
    results_table,
    targets_table,
)
from benchmarks.targets import check_targets

log = logging.getLogger(__name__)

ANALYSIS_MARK = (
    "<!-- Hand-written analysis below; kept when the page is regenerated. -->"
)

_METHOD = """\
Each export is a generated `authorizations/detail` file (29 columns, about
380 bytes a row: unique bigint tokens, timestamps over 30 days, amounts with
cents and negatives, nulls, merchant names with commas and quotes, codes
with leading zeros), compressed as gzip (isal, level 1) and as zip (zlib,
level 1). Every run is a separate process started one after the other, so
the peak RSS is that run's own (the kernel's high-water mark, in MB of
1,000,000 bytes); the time is that of the load alone, without interpreter
start-up and imports. The Parquet runs are repeated (`--repeat`, 3 by
default) in turn, product, floor and naive alternating, and each shows its
fastest time and its highest peak RSS. Each warehouse run is made once.

- **parquet product**: `connector.pipeline.load_file(path, dataset,
  load_settings(None, parquet=DIR))`.
- **parquet floor** (floor A): isal's gzip reader (zlib's `zipfile` for zip)
  feeding `pyarrow.csv.open_csv` with an explicit type for every column,
  into one `pyarrow.parquet.ParquetWriter` with zstd. pyarrow parses
  `YYYY-MM-DD HH:MM:SS` only into a zone-less timestamp, so timestamps are
  parsed that way and cast to `timestamp[us, UTC]` (a relabelling, no copy).
- **parquet naive**: `pandas.read_csv` in chunks of 100,000 rows with inferred
  types, one `to_parquet` file per chunk.
- **postgres/mariadb product**: `load_file` with `load_settings(None,
  warehouse=URL, table=NAME)` into a table the product pre-loaded with the
  even-numbered half of the rows (not timed), so half the keys are updated
  and half inserted.
- **postgres floor** (floor B): `COPY ... FROM STDIN` of the CSV, decompressed
  on the fly by isal, into a temporary table, then one
  `INSERT ... SELECT ... ON CONFLICT DO UPDATE` into a table of the same
  types pre-loaded with the same half.
- **mariadb floor**: `LOAD DATA LOCAL INFILE` from a named pipe that a thread
  fills with the decompressed CSV, into a temporary table, then one
  `INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`, into a half-full table.
- **postgres naive**: `pandas.read_csv` chunks appended with `to_sql` (default
  method) to a new table. It cannot upsert, so it does less work than the
  product.

`× floor` is the product's time divided by the floor's on the same export
and compression; `× naive` divides by the naive run's time on the gzip
export. The product's Parquet output is checked after each run (row count
and exact sum of `transaction_amount`), and every warehouse table must hold
every row of the export; a run that fails a check is shown as failed.
"""


def write_page(
    path: Path,
    results: list[Measurement],
    skipped: list[str],
    command: str,
    load: str,
    version: str,
) -> None:
    """Write the page to `path`, keeping the analysis of an existing page.

    Args:
        path: The Markdown file to write.
        results: Every measurement, in the order of the results table.
        skipped: One line per path that was not run, with the reason.
        command: The command line that produced the results.
        load: The machine's 1-minute load average during the run, as text;
            other processes running at the same time slow the runs down.
        version: The product's version sentence, from `product_version`.
    """
    analysis = ""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if ANALYSIS_MARK in text:
            analysis = text.split(ANALYSIS_MARK, 1)[1].strip()

    lines = ["# Benchmarks", ""]
    lines += [f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with:", ""]
    lines += ["```", command, "```", "", version, "", "## Machine", ""]
    lines += describe_machine(_server_versions(skipped))
    lines += [f"- Load average (1 minute): {load}"]
    lines += ["", "## Method", "", _METHOD.rstrip(), "", "## Results", ""]
    lines += results_table(results)
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    lines += ["", "## Targets", ""]
    lines += targets_table(check_targets(results))
    lines += ["", ANALYSIS_MARK, ""]
    if analysis:
        lines += [analysis, ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def product_version() -> str:
    """Return the product's git commit, noting uncommitted edits in `connector/`."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "connector"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        log.warning("Could not read the product's git commit: %s", err)
        return "unknown (not a git checkout)"
    edits = " plus uncommitted edits in `connector/`" if dirty else ""
    return f"commit `{commit}`{edits}"


def _server_versions(skipped: list[str]) -> dict[str, str]:
    versions = {}
    queries = {
        "PostgreSQL": ("postgres", "SHOW server_version"),
        "MariaDB": ("mariadb", "SELECT version()"),
    }
    for name, (system, query) in queries.items():
        if any(line.startswith(system) for line in skipped):
            continue
        try:
            connect = (
                warehouse.connect_postgres
                if system == "postgres"
                else warehouse.connect_mariadb
            )
            connection = connect()
            with connection.cursor() as cursor:
                cursor.execute(query)
                versions[name] = str(cursor.fetchone()[0])
            connection.close()
        except warehouse.driver_errors() as err:
            log.warning("Could not read the %s version: %s", name, err)
    return versions
