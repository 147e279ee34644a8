"""The physical floors: the least work each load can be done with.

- Parquet: isal's gzip decompression feeding `pyarrow.csv.open_csv` with an
  explicit Arrow type for every column, into one `ParquetWriter` (zstd).
  pyarrow's CSV reader parses `YYYY-MM-DD HH:MM:SS` itself, but only into a
  zone-less timestamp: it rejects a value without an offset for
  `timestamp[us, tz=UTC]`. So timestamps are read zone-less and then cast
  to UTC, which only relabels the type and copies no data.
- PostgreSQL: `COPY ... FROM STDIN` of the decompressed CSV into a staging
  table, then one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.
- MariaDB: `LOAD DATA LOCAL INFILE` into a staging table, then one
  `INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`. The file it reads is a
  named pipe that a thread fills with the decompressed CSV, so nothing is
  decompressed to disk first.

Each function also serves to pre-load a table: an upsert into an empty table
inserts every row.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip

from benchmarks.warehouse import connect_mariadb, connect_postgres
from connector.datasets import Dataset

BLOCK_BYTES = 8 * 1024 * 1024
_COPY_BYTES = 1024 * 1024


@contextmanager
def open_csv_stream(path: Path) -> Iterator[IO[bytes]]:
    """Open the CSV inside a `.csv.gz` (isal) or `.csv.zip` (zlib) export."""
    if path.suffix == ".zip":
        with (
            zipfile.ZipFile(path) as archive,
            archive.open(archive.namelist()[0]) as stream,
        ):
            yield stream
    else:
        with igzip.open(path, "rb") as stream:
            yield stream


def write_parquet_floor(path: Path, out_path: Path, dataset: Dataset) -> int:
    """Convert the export at `path` to one Parquet file; return the rows written."""
    schema = dataset.arrow_schema()
    parse_types = {
        field.name: pa.timestamp("us")
        if pa.types.is_timestamp(field.type)
        else field.type
        for field in schema
    }
    convert = pacsv.ConvertOptions(
        column_types=parse_types,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    rows = 0
    with open_csv_stream(path) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            convert_options=convert,
        )
        with pq.ParquetWriter(out_path, schema, compression="zstd") as writer:
            for batch in reader:
                columns = [
                    batch.column(field.name).cast(field.type) for field in schema
                ]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                rows += batch.num_rows
    return rows


def upsert_postgres_floor(path: Path, table: str, dataset: Dataset) -> int:
    """COPY the export into a staging table and upsert it into `table`.

    Returns:
        The rows inserted or updated.
    """
    columns = ", ".join(dataset.column_names)
    updates = ", ".join(
        f"{name} = EXCLUDED.{name}"
        for name in dataset.column_names
        if name not in dataset.key
    )
    with connect_postgres() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE stage (LIKE {table}) ON COMMIT DROP")
        copy_sql = f"COPY stage ({columns}) FROM STDIN (FORMAT csv, HEADER true)"
        with cursor.copy(copy_sql) as copy, open_csv_stream(path) as stream:
            while block := stream.read(_COPY_BYTES):
                copy.write(block)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM stage "
            f"ON CONFLICT ({', '.join(dataset.key)}) DO UPDATE SET {updates}"
        )
        return cursor.rowcount


def upsert_mariadb_floor(path: Path, table: str, dataset: Dataset) -> int:
    """LOAD DATA the export into a staging table and upsert it into `table`.

    Returns:
        The rows in the staging table.
    """
    columns = ", ".join(dataset.column_names)
    updates = ", ".join(
        f"{name} = VALUES({name})"
        for name in dataset.column_names
        if name not in dataset.key
    )
    connection = connect_mariadb()
    try:
        with connection.cursor() as cursor, _decompressed_pipe(path) as pipe:
            cursor.execute(f"CREATE TEMPORARY TABLE stage LIKE {table}")
            cursor.execute(_load_data_sql(pipe, dataset))
            cursor.execute("SELECT count(*) FROM stage")
            rows = int(cursor.fetchone()[0])
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM stage "
                f"ON DUPLICATE KEY UPDATE {updates}"
            )
            cursor.execute("DROP TEMPORARY TABLE stage")
        connection.commit()
    finally:
        connection.close()
    return rows


def _load_data_sql(pipe: Path, dataset: Dataset) -> str:
    """Build the LOAD DATA statement; empty cells become NULL, as in DiVA's CSV."""
    variables = ", ".join(f"@v{index}" for index in range(len(dataset.columns)))
    assignments = []
    for index, column in enumerate(dataset.columns):
        value = f"NULLIF(@v{index}, '')"
        if column.type.kind == "bool":
            value = f"CASE {value} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"
        assignments.append(f"{column.name} = {value}")
    return (
        f"LOAD DATA LOCAL INFILE '{pipe}' INTO TABLE stage CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
        "LINES TERMINATED BY '\\n' IGNORE 1 LINES "
        f"({variables}) SET {', '.join(assignments)}"
    )


@contextmanager
def _decompressed_pipe(path: Path) -> Iterator[Path]:
    """Yield a named pipe that a daemon thread fills with the export's CSV."""
    folder = Path(tempfile.mkdtemp(prefix="bench-pipe-"))
    pipe = folder / "export.csv"
    os.mkfifo(pipe)

    def fill() -> None:
        with open(pipe, "wb") as sink, open_csv_stream(path) as stream:
            shutil.copyfileobj(stream, sink, _COPY_BYTES)

    # A daemon thread, because if LOAD DATA fails before opening the pipe,
    # the writer blocks in open() forever and must not keep the process alive.
    threading.Thread(target=fill, daemon=True).start()
    try:
        yield pipe
    finally:
        shutil.rmtree(folder, ignore_errors=True)
