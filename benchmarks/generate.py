"""Generate realistic `authorizations/detail` exports for the benchmarks.

Rows are built column by column with numpy and pyarrow, in chunks of
`CHUNK_ROWS`, written with `pyarrow.csv.write_csv` (strings quoted, nulls as
empty cells, timestamps as `YYYY-MM-DD HH:MM:SS`) and compressed twice in
the same pass: gzip with isal and zip with zlib. A third file, the `half`
export, contains every other row (the even row numbers) and is what the
warehouse runs pre-load, so that an upsert finds half of its keys already
in the table.

Files are cached in `benchmarks/data/` by row count. A JSON file beside
them records the row count and the exact sum of `transaction_amount`, so a
run can check what the product wrote.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from isal import igzip

from connector.datasets import Dataset, load_dataset

log = logging.getLogger(__name__)

DATASET = "authorizations/detail"
DATA_DIR = Path(__file__).resolve().parent / "data"
CHUNK_ROWS = 250_000

_FIRST_TOKEN = 1_000_000_000_000
_START = np.datetime64("2024-03-01T00:00:00", "s")
_SPAN_S = 30 * 24 * 3600

_TRANSACTION_TYPES = [
    "authorization",
    "authorization.clearing",
    "authorization.reversal",
    "authorization.advice",
    "authorization.incremental",
    "refund.authorization",
    "pindebit",
    "pindebit.atm.withdrawal",
]
_STATES = ["PENDING", "COMPLETION", "DECLINED", "CLEARED"]
_NETWORKS = ["VISA", "MASTERCARD", "DISCOVER", "PULSE"]
_SUB_NETWORKS = ["VISANET", "VISANET_DEBIT", "MAESTRO", "MASTERCARD", "PULSE_DEBIT"]
_CURRENCIES = ["USD", "USD", "USD", "USD", "EUR", "GBP", "CAD", "MXN"]
_POS_MODES = ["CHIP", "CONTACTLESS", "MAG_STRIPE", "MANUAL", "ECOMMERCE"]
_RESPONSE_CODES = ["00", "00", "00", "00", "05", "51", "54", "61", "0A"]
_CATEGORY_CODES = ["0742", "0763", "1520", "4111", "4814", "5411", "5812", "5999"]
_CITIES = [
    "Oakland",
    "San Francisco",
    "New York",
    "Winston-Salem",
    "St. Louis",
    "Coeur d'Alene",
    "London",
    "Toronto",
    "Mexico City",
]
_STATES_OR_REGIONS = ["CA", "NY", "NC", "MO", "ID", "LND", "ON", "CMX"]
_COUNTRIES = ["USA", "USA", "USA", "GBR", "CAN", "MEX"]
_MERCHANT_WORDS = [
    "Joe's",
    "Diner",
    "Coffee",
    "Market",
    "Fuel",
    "Books",
    "Hardware",
    "Pharmacy",
    "Grill",
    "Bakery",
    "Taqueria",
    "Outfitters",
    "Travel",
    "Cinema",
    "Grocer",
]


@dataclass(frozen=True)
class ExportFiles:
    """The cached exports of one row count and what they contain.

    Attributes:
        rows: Data rows in the full exports.
        gzip: The full export, gzip-compressed.
        zip: The full export, as the only member of a zip archive.
        half: The even-numbered rows, gzip-compressed, for pre-loading.
        half_rows: Data rows in `half`.
        amount_sum: Exact sum of `transaction_amount` over the full export.
    """

    rows: int
    gzip: Path
    zip: Path
    half: Path
    half_rows: int
    amount_sum: Decimal


def ensure_exports(rows: int, data_dir: Path = DATA_DIR) -> ExportFiles:
    """Return the exports of `rows` rows, generating them unless cached."""
    stem = data_dir / f"authorizations_detail_{rows}"
    meta_path = stem.with_suffix(".json")
    if meta_path.is_file():
        files = _read_meta(meta_path)
        if files.gzip.is_file() and files.zip.is_file() and files.half.is_file():
            return files

    data_dir.mkdir(parents=True, exist_ok=True)
    log.info("Generating a %d-row export in %s", rows, data_dir)
    files = _write_exports(rows, stem, load_dataset(DATASET))
    meta = {
        "rows": files.rows,
        "half_rows": files.half_rows,
        "amount_sum": str(files.amount_sum),
    }
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return files


def _read_meta(meta_path: Path) -> ExportFiles:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    stem = meta_path.with_suffix("")
    return ExportFiles(
        rows=meta["rows"],
        gzip=stem.with_suffix(".csv.gz"),
        zip=stem.with_suffix(".csv.zip"),
        half=Path(f"{stem}_half.csv.gz"),
        half_rows=meta["half_rows"],
        amount_sum=Decimal(meta["amount_sum"]),
    )


def _write_exports(rows: int, stem: Path, dataset: Dataset) -> ExportFiles:
    gzip_path = stem.with_suffix(".csv.gz")
    zip_path = stem.with_suffix(".csv.zip")
    half_path = Path(f"{stem}_half.csv.gz")
    rng = np.random.default_rng(rows)
    pools = _make_pools(rng)
    amount_sum = Decimal(0)
    half_rows = 0

    with (
        igzip.open(gzip_path, "wb", compresslevel=1) as gzip_out,
        igzip.open(half_path, "wb", compresslevel=1) as half_out,
        zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open(f"{stem.name}.csv", "w", force_zip64=True) as zip_out,
    ):
        for start in range(0, rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, rows - start)
            table = _make_chunk(dataset, start, count, rng, pools)
            text = _to_csv(table, header=start == 0)
            gzip_out.write(text)
            zip_out.write(text)

            even = pa.array(np.arange(start, start + count) % 2 == 0)
            half = table.filter(even)
            half_out.write(_to_csv(half, header=start == 0))
            half_rows += half.num_rows

            chunk_sum = pc.sum(table["transaction_amount"]).as_py()
            amount_sum += chunk_sum or Decimal(0)

    return ExportFiles(rows, gzip_path, zip_path, half_path, half_rows, amount_sum)


def _to_csv(table: pa.Table, *, header: bool) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=header))
    return buffer.getvalue()


def _make_pools(rng: np.random.Generator) -> dict[str, pa.Array]:
    """Build the value pools that token and merchant columns draw from."""
    merchants = []
    for _ in range(5000):
        words = rng.choice(_MERCHANT_WORDS, size=rng.integers(1, 4))
        name = " ".join(words)
        form = rng.integers(0, 10)
        if form == 0:
            name = f"{name}, Inc."
        elif form == 1:
            name = f'The "{name}" Shop'
        elif form == 2:
            name = f"{name} #{rng.integers(1, 999):03d}, {rng.choice(_CITIES)}"
        merchants.append(name)
    return {
        "user": _uuids(50_000, rng),
        "card": _uuids(80_000, rng),
        "business": pa.array([f"biz-{n:06d}" for n in range(2000)]),
        "merchant": pa.array(merchants),
    }


def _uuids(count: int, rng: np.random.Generator) -> pa.Array:
    return pa.array(
        [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(count)]
    )


def _make_chunk(
    dataset: Dataset,
    start: int,
    count: int,
    rng: np.random.Generator,
    pools: dict[str, pa.Array],
) -> pa.Table:
    """Build rows `start` to `start + count` with every column of the schema."""
    columns = _identity_columns(start, count, rng, pools)
    columns |= _amount_columns(count, rng)
    columns |= _merchant_columns(count, rng, pools)
    columns |= _detail_columns(count, rng, columns["transaction_timestamp"])

    missing = [name for name in dataset.column_names if name not in columns]
    if missing:
        raise KeyError(
            f"The generator makes no values for {', '.join(missing)}; add them to "
            "benchmarks/generate.py when the schema of authorizations/detail grows."
        )
    fields = [(name, columns[name]) for name in dataset.column_names]
    return pa.table(dict(fields))


def _identity_columns(
    start: int, count: int, rng: np.random.Generator, pools: dict[str, pa.Array]
) -> dict[str, pa.Array]:
    numbers = np.arange(start, start + count, dtype=np.int64)
    tokens = _FIRST_TOKEN + numbers * 10 + rng.integers(0, 10, count)
    offsets = rng.integers(0, _SPAN_S, count).astype("timedelta64[s]")
    users = _pick(pools["user"], count, rng)
    return {
        "transaction_token": pa.array(tokens),
        "program": _pick(
            pa.array(["acme_debit", "acme_credit", "northwind"]), count, rng
        ),
        "transaction_timestamp": pa.array(_START + offsets),
        "user_token": _with_nulls(users, 0.01, rng),
        "acting_user_token": _with_nulls(users, 0.05, rng),
        "card_token": _with_nulls(_pick(pools["card"], count, rng), 0.01, rng),
        "business_token": _with_nulls(_pick(pools["business"], count, rng), 0.9, rng),
    }


def _amount_columns(count: int, rng: np.random.Generator) -> dict[str, pa.Array]:
    cents = np.round(rng.lognormal(3.3, 1.2, count) * 100).astype(np.int64)
    cents = np.minimum(cents, 10**11)
    cents[rng.random(count) < 0.08] *= -1
    currencies = np.array(_CURRENCIES)[rng.integers(0, len(_CURRENCIES), count)]
    rate_units = np.where(
        currencies == "USD", 10**9, rng.integers(5 * 10**7, 15 * 10**8, count)
    ).astype(np.int64)
    billing = np.round(cents * (rate_units / 1e9)).astype(np.int64)
    amount_nulls = rng.random(count) < 0.01
    return {
        "transaction_amount": _decimals(cents, 14, 2, amount_nulls),
        "transaction_currency_code": pa.array(currencies),
        "billing_amount": _decimals(billing, 14, 2, amount_nulls),
        "billing_currency_code": pa.array(np.full(count, "USD")),
        "conversion_rate": _decimals(rate_units, 18, 9, amount_nulls),
    }


def _merchant_columns(
    count: int, rng: np.random.Generator, pools: dict[str, pa.Array]
) -> dict[str, pa.Array]:
    category = _pick(pa.array(_CATEGORY_CODES), count, rng)
    return {
        "merchant_name": _with_nulls(_pick(pools["merchant"], count, rng), 0.02, rng),
        "merchant_id": _with_nulls(_digits(count, 15, rng), 0.02, rng),
        "merchant_category_code": _with_nulls(category, 0.02, rng),
        "merchant_city": _with_nulls(_pick(pa.array(_CITIES), count, rng), 0.03, rng),
        "merchant_state": _pick(pa.array(_STATES_OR_REGIONS), count, rng),
        "merchant_country": _pick(pa.array(_COUNTRIES), count, rng),
    }


def _detail_columns(
    count: int, rng: np.random.Generator, timestamps: pa.Array
) -> dict[str, pa.Array]:
    seconds = timestamps.to_numpy()
    settle = (seconds + np.timedelta64(1, "D") * rng.integers(1, 4, count)).astype(
        "datetime64[D]"
    )
    loaded = seconds + rng.integers(3600, 3 * 86400, count).astype("timedelta64[s]")
    installments = rng.integers(1, 13, count).astype(np.int32)
    return {
        "transaction_type": _pick(pa.array(_TRANSACTION_TYPES), count, rng),
        "state": _pick(pa.array(_STATES), count, rng),
        "network": _pick(pa.array(_NETWORKS), count, rng),
        "sub_network": _with_nulls(
            _pick(pa.array(_SUB_NETWORKS), count, rng), 0.1, rng
        ),
        "response_code": _with_nulls(
            _pick(pa.array(_RESPONSE_CODES), count, rng), 0.02, rng
        ),
        "approval_code": _with_nulls(_digits(count, 6, rng), 0.1, rng),
        "pos_entry_mode": _pick(pa.array(_POS_MODES), count, rng),
        "card_presence": pa.array(
            rng.random(count) < 0.6, mask=rng.random(count) < 0.05
        ),
        "installment_count": pa.array(installments, mask=rng.random(count) < 0.95),
        "settlement_date": pa.array(settle, mask=rng.random(count) < 0.1),
        "report_load_timestamp": pa.array(loaded, mask=rng.random(count) < 0.02),
    }


def _pick(values: pa.Array, count: int, rng: np.random.Generator) -> pa.Array:
    return values.take(pa.array(rng.integers(0, len(values), count)))


def _with_nulls(values: pa.Array, share: float, rng: np.random.Generator) -> pa.Array:
    nulls = pa.array(rng.random(len(values)) < share)
    return pc.if_else(nulls, pa.scalar(None, values.type), values)


def _digits(count: int, width: int, rng: np.random.Generator) -> pa.Array:
    """Return numeric codes of `width` digits, many with leading zeros."""
    numbers = pa.array(rng.integers(0, 10 ** min(width - 1, 18), count))
    return pc.utf8_lpad(pc.cast(numbers, pa.string()), width, "0")


def _decimals(
    units: np.ndarray, precision: int, scale: int, nulls: np.ndarray
) -> pa.Array:
    """Build decimal128 values from int64 counts of the smallest unit."""
    words = np.stack([units, units >> 63], axis=1).ravel()
    validity = pa.array(~nulls).buffers()[1]
    return pa.Array.from_buffers(
        pa.decimal128(precision, scale),
        len(units),
        [validity, pa.py_buffer(words)],
        null_count=int(nulls.sum()),
    )
