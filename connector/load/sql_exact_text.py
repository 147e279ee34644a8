"""Exact text forms of decimals, timestamps and dates for staging.

Money and timestamps reach the database as text (`25.00`,
`2024-03-05 10:00:00.000001`), never as floats.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _exact_text(
    array: pa.Array, *, timestamp_format: str | None = None, text_dates: bool = False
) -> pa.Array:
    """Return decimals (and optionally timestamps and dates) as exact text."""
    if pa.types.is_decimal(array.type):
        return canonical_decimal_text(array)
    if timestamp_format and pa.types.is_timestamp(array.type):
        # Arrow's %S prints the seconds with the unit's fraction: 00.000001.
        return pc.strftime(array, format=timestamp_format)
    if text_dates and pa.types.is_date(array.type):
        return pc.cast(array, pa.string())
    return array


def canonical_decimal_text(array: pa.Array) -> pa.Array:
    """Return decimals as fixed-point text with the type's scale, e.g. `-0.000000001`.

    Arrow writes values below 1e-6 in scientific notation (`-1E-9`); those
    few are rewritten through `Decimal`, the rest stay vectorised.
    """
    text = pc.cast(array, pa.string())
    scientific = pc.match_substring(text, "E")
    # `any` skips nulls and returns null when every value is null.
    if not pc.any(scientific).as_py():
        return text

    # Null as false without fill_null, whose scalar would import pandas.
    scientific = pc.and_kleene(scientific, pc.is_valid(scientific))
    quantum = Decimal(1).scaleb(-array.type.scale)
    positions = pc.indices_nonzero(scientific).to_pylist()
    fixed = [format(array[i].as_py().quantize(quantum), "f") for i in positions]
    return pc.replace_with_mask(text, scientific, _text_array(fixed))


def _text_array(values: list[str]) -> pa.Array:
    # Built from buffers: pa.array() would make pyarrow import pandas.
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(value) for value in encoded], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)
