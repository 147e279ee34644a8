"""The product's public entry point, as a user calls it.

Each function loads one export file with `connector.pipeline.load_file`
and the settings that `load_settings` builds from the same overrides as the
command line's `--parquet DIR` or `--warehouse URL --table NAME`.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.generate import DATASET
from connector.datasets import load_dataset
from connector.pipeline import load_file
from connector.settings import load_settings


def write_parquet(path: Path, out_dir: Path) -> int:
    """Load the export at `path` into Parquet below `out_dir`; return rows read."""
    settings = load_settings(None, parquet=str(out_dir))
    summary = load_file(path, load_dataset(DATASET), settings)
    return summary.rows_read


def upsert_warehouse(path: Path, url: str, table: str) -> int:
    """Upsert the export at `path` into `table` at `url`; return rows read."""
    settings = load_settings(None, warehouse=url, table=table)
    summary = load_file(path, load_dataset(DATASET), settings)
    return summary.rows_read


def preload_modules(*, warehouse: bool) -> None:
    """Import the stages `load_file` imports lazily, so timing leaves them out.

    Only the sink of the run is imported: a Parquet load never imports the
    warehouse modules, nor a warehouse load the Parquet ones, and unused
    modules would add to the run's peak memory.
    """
    import connector.transform  # noqa: F401

    if warehouse:
        import connector.load.sql  # noqa: F401
    else:
        import connector.load.parquet  # noqa: F401
