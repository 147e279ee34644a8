"""Fixtures of the transform tests: the fault-case schema and small files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from connector.datasets import Dataset
from connector.transform import ExportReader, TransformOptions, read_export

CASES = Path(__file__).parent.parent / "cases"

#: The header of most fault cases, in file order.
CASE_HEADER = (
    "token,user_token,card_token,transaction_timestamp,amount,currency_code,"
    "state,merchant_name,mcc,network,response_code"
)


@pytest.fixture(scope="session")
def cases_dataset() -> Dataset:
    """The card-transaction test schema that the fault cases use."""
    return Dataset.from_file(CASES / "schema.json")


def read_rows(
    path: Path, dataset: Dataset, **options
) -> tuple[list[dict], ExportReader]:
    """Read every batch of `path` and return its rows and the spent reader."""
    rows = []
    with read_export(path, dataset, TransformOptions(**options)) as reader:
        for batch in reader:
            assert batch.schema == reader.schema
            rows.extend(batch.to_pylist())
    return rows, reader


def read_table(path: Path, dataset: Dataset, **options) -> pa.Table:
    """Read `path` into one table with the reader's schema."""
    with read_export(path, dataset, TransformOptions(**options)) as reader:
        return pa.Table.from_batches(list(reader), schema=reader.schema)


def write_csv(folder: Path, text: str | bytes, name: str = "export.csv") -> Path:
    """Write CSV text (or bytes) to `folder/name`, gzipped when name ends in .gz."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path = folder / name
    path.write_bytes(data)
    return path


def case_row(token: str = "tok-1", **values: str) -> str:
    """Return one CSV record in the `CASE_HEADER` layout with valid defaults."""
    fields = {
        "token": token,
        "user_token": "user-1",
        "card_token": "card-1",
        "transaction_timestamp": "2024-03-05T14:22:31Z",
        "amount": "12.00",
        "currency_code": "USD",
        "state": "COMPLETION",
        "merchant_name": "Harbor Street Books",
        "mcc": "5942",
        "network": "VISA",
        "response_code": "00",
    }
    fields.update(values)
    return ",".join(fields[name] for name in CASE_HEADER.split(","))
