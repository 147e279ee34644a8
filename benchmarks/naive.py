"""The naive baselines: what a hand-written pandas script would do.

Both read the export with `pandas.read_csv` in chunks of `CHUNK_ROWS` with
inferred types (the file's compression is inferred from its name too). The
Parquet baseline writes one file per chunk with `DataFrame.to_parquet`. The
warehouse baseline appends each chunk to a new table with
`DataFrame.to_sql` and its default insert method. `to_sql` cannot upsert, so
that baseline does less work than the product and the floor.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.warehouse import POSTGRES_URL

CHUNK_ROWS = 100_000


def write_parquet_naive(path: Path, out_dir: Path) -> int:
    """Convert the export at `path` to one Parquet file per chunk; return rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pd.read_csv(path, chunksize=CHUNK_ROWS) as chunks:
        for number, frame in enumerate(chunks):
            frame.to_parquet(out_dir / f"part-{number:05d}.parquet")
            rows += len(frame)
    return rows


def append_postgres_naive(path: Path, table: str) -> int:
    """Append the export at `path` to a new PostgreSQL `table`; return rows."""
    import sqlalchemy as sa

    from connector.load.sql import normalize_url

    engine = sa.create_engine(normalize_url(POSTGRES_URL))
    rows = 0
    try:
        with pd.read_csv(path, chunksize=CHUNK_ROWS) as chunks:
            for frame in chunks:
                frame.to_sql(table, engine, if_exists="append", index=False)
                rows += len(frame)
    finally:
        engine.dispose()
    return rows
