"""Realistic column values, chosen by DiVA type and by hints in column names.

Every value fits its declared type: strings are cut to the declared length,
decimals stay inside their precision and carry exactly their scale, integers
stay inside their range. The pools hold the values that break naive CSV and
type handling: names with commas, double quotes, line breaks and non-ASCII
letters, and codes with leading zeros.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache

from connector.sandbox.catalog import ColumnSpec

NETWORKS = ("VISA", "MASTERCARD", "DISCOVER", "PULSE")
SUB_NETWORKS = ("VISANET", "MAESTRO", "MASTERCARD_CREDIT", "PULSE_PIN")
STATES = ("PENDING", "COMPLETION", "CLEARED", "DECLINED", "REVERSED")
CURRENCIES = ("USD", "EUR", "GBP", "CAD", "JPY", "PLN")
COUNTRIES = ("USA", "CAN", "GBR", "DEU", "FRA", "JPN", "POL", "BRA")
REGIONS = ("CA", "NY", "TX", "WA", "IL", "ON", "QC", "BY")
CITIES = ("New York", "Zürich", "Łódź", "東京", "São Paulo", "Montréal", "Oakland")
MCCS = ("0742", "0763", "5411", "5812", "5999", "4829", "6011")
RESPONSE_CODES = ("00", "00", "00", "05", "51", "14", "54")
TRANSACTION_TYPES = (
    "authorization",
    "authorization.clearing",
    "authorization.reversal",
    "refund",
    "pindebit",
)
ENTRY_MODES = ("CHIP", "CONTACTLESS", "MAGSTRIPE", "MANUAL", "ECOMMERCE")
CARD_TYPES = ("PHYSICAL", "VIRTUAL")
USER_TYPES = ("INDIVIDUAL", "BUSINESS")
STATUSES = ("ACTIVE", "SUSPENDED", "TERMINATED", "UNACTIVATED")
DECLINE_TYPES = ("INSUFFICIENT_FUNDS", "INVALID_CVV", "EXPIRED_CARD", "VELOCITY")
DECLINING_ENTITIES = ("ISSUER", "NETWORK", "GATEWAY")
FUNDING_SOURCE_TYPES = ("PROGRAM", "ACH", "PAYMENT_CARD")
OTHER_TYPES = ("STANDARD", "PREMIUM", "OTHER")
CHARGEBACK_STATES = ("INITIATED", "REPRESENTMENT", "PREARBITRATION", "CASE_WON")
MERCHANT_NAMES = (
    "Corner Grocery",
    "ACME, Inc.",
    'The "Best" Bakery',
    "Café Zürich",
    "Łódź Books",
    "東京ラーメン",
    "Two Line\nMarket",
    "Müller & Söhne GmbH",
    'Crème, "Le Petit" Café\r\nParis',
    "O'Hare Parking",
)
PERSON_NAMES = ("Zoë", "Łukasz", "O'Brien", "Müller", "山田", "Ana María", "Lee")
MEMOS = (
    "monthly top-up",
    "refund, partial",
    'note with "quotes"',
    "first line\nsecond line",
    "naïve café",
)

#: Size of the shared pools of user, card and business tokens, so that rows
#: of different views refer to the same cardholders.
TOKEN_POOL_SIZE = 200

_INT_LIMITS = {"int16": 2**15 - 1, "int32": 2**31 - 1, "int64": 2**63 - 1}
_AMOUNT_WORDS = (
    "amount",
    "balance",
    "fee",
    "total",
    "value",
    "price",
    "net",
    "credit",
    "debit",
    "deposit",
)


@dataclass(frozen=True)
class RowContext:
    """The inputs a row's values depend on, besides the random generator."""

    seed: int
    day: date
    moment: datetime
    program: str
    negative: bool


def string_pool(column: ColumnSpec) -> tuple[str, ...] | None:
    """Return the finite set of values a string column draws from, if any."""
    name = column.name.lower()
    if column.enum_values:
        return column.enum_values
    hints = (
        ("sub_network", SUB_NETWORKS),
        ("network", NETWORKS),
        ("chargeback_state", CHARGEBACK_STATES),
        ("currency", CURRENCIES),
        ("country", COUNTRIES),
        ("city", CITIES),
        ("category_code", MCCS),
        ("mcc", MCCS),
        ("response_code", RESPONSE_CODES),
        ("transaction_type", TRANSACTION_TYPES),
        ("entry_mode", ENTRY_MODES),
        ("card_type", CARD_TYPES),
        ("user_type", USER_TYPES),
        ("status", STATUSES),
        ("decline_type", DECLINE_TYPES),
        ("declining_entity", DECLINING_ENTITIES),
        ("funding_source_type", FUNDING_SOURCE_TYPES),
    )
    for hint, pool in hints:
        if hint in name:
            return pool
    if name.endswith("_state"):
        return REGIONS
    if name == "state" or name.endswith("state"):
        return STATES
    if name.endswith("_type"):
        return OTHER_TYPES
    return None


@cache
def pool_token(seed: int, family: str, index: int) -> str:
    """Return the UUID-like token number `index` of a shared token family."""
    bits = random.Random(f"{seed}|{family}|{index}").getrandbits(128)
    return str(uuid.UUID(int=bits, version=4))


def unique_token(seed: int, view: str, day: date, index: int) -> str:
    """Return a UUID-like token unique to one row of one view."""
    bits = random.Random(f"{seed}|{view}|{day.isoformat()}|{index}|key").getrandbits(
        128
    )
    return str(uuid.UUID(int=bits, version=4))


def fit_length(text: str, column: ColumnSpec) -> str:
    """Cut `text` to the column's declared maximum length in characters."""
    if column.max_length is not None:
        return text[: column.max_length]
    return text


def make_string(column: ColumnSpec, rng: random.Random, context: RowContext) -> str:
    """Return a string value for a column that is not a key."""
    name = column.name.lower()
    if name == "program":
        return fit_length(context.program, column)

    if (pool := string_pool(column)) is not None:
        value = rng.choice(pool)
        if "country" in name and column.max_length == 2:
            value = value[:2]
        return fit_length(value, column)

    if name.endswith("_token"):
        family = name.removesuffix("_token").removeprefix("acting_")
        return fit_length(
            pool_token(context.seed, family, rng.randrange(TOKEN_POOL_SIZE)), column
        )
    if "merchant_name" in name or name.endswith("_name") and "merchant" in name:
        return fit_length(rng.choice(MERCHANT_NAMES), column)
    if name.endswith("_name"):
        return fit_length(rng.choice(PERSON_NAMES), column)
    if "email" in name:
        return fit_length(f"holder{rng.randrange(10_000):04d}@example.com", column)
    return fit_length(_make_code_or_text(name, column, rng), column)


def _make_code_or_text(name: str, column: ColumnSpec, rng: random.Random) -> str:
    width = min(column.max_length or 10, 10)
    if name == "last_four":
        width = 4
    elif "zip" in name or "postal" in name:
        width = min(width, 5)
    if (
        name.endswith(("_id", "_code", "_number", "last_four", "zip"))
        or "postal" in name
    ):
        return str(rng.randrange(10**width)).zfill(width)
    if column.max_length is None or column.max_length >= 40:
        return rng.choice(MEMOS)
    return f"{name[:8].upper()}-{rng.randrange(1000):03d}"


def make_decimal(
    column: ColumnSpec, rng: random.Random, context: RowContext
) -> Decimal:
    """Return a decimal with exactly the column's scale, inside its precision."""
    scale = column.scale or 0
    max_units = 10 ** (column.precision or 18) - 1
    name = column.name.lower()

    if "rate" in name:
        units = int(rng.uniform(0.5, 1.5) * 10**scale)
    elif column.schema_object.get("units") or any(w in name for w in _AMOUNT_WORDS):
        units = int(rng.lognormvariate(3.0, 1.3) * 10**scale) + 1
        if context.negative:
            units = -units
    else:
        units = int(rng.uniform(0, 10_000) * 10**scale)

    units = max(-max_units, min(max_units, units))
    return Decimal(units).scaleb(-scale)


def make_integer(column: ColumnSpec, rng: random.Random) -> int:
    """Return an integer inside the column's range."""
    name = column.name.lower()
    if column.kind == "int64" and name.endswith("_token"):
        return rng.randrange(10**11, 10**12)
    if "installment" in name:
        return rng.randint(1, 12)
    if "count" in name or column.kind == "int16":
        return rng.randint(0, min(500, _INT_LIMITS[column.kind]))
    return rng.randint(0, 100_000)


def make_date(column: ColumnSpec, rng: random.Random, context: RowContext) -> date:
    """Return a date close to the row's day, or a plausible one by its name."""
    name = column.name.lower()
    if "birth" in name:
        return date(1950, 1, 1) + timedelta(days=rng.randrange(20_000))
    if "expir" in name:
        return context.day + timedelta(days=rng.randint(365, 5 * 365))
    return context.day + timedelta(days=rng.randint(0, 3))


def make_value(column: ColumnSpec, rng: random.Random, context: RowContext) -> object:
    """Return a value for a column that is neither a key nor the date column."""
    match column.kind:
        case "decimal":
            return make_decimal(column, rng, context)
        case "int16" | "int32" | "int64":
            return make_integer(column, rng)
        case "date":
            return make_date(column, rng, context)
        case "timestamp":
            return context.moment + timedelta(seconds=rng.randint(0, 3 * 86_400))
        case "bool":
            return rng.random() < 0.5
        case _:
            return make_string(column, rng, context)
