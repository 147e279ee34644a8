"""Tell whether the integer key of a load repeats, without keeping every key.

A load whose dataset has a single integer key marks each key value in a
bitmap over the range of values seen, so that a repeat shows at once and
memory is one bit per number in the range. Keys spread too thinly for a
bitmap (the range more than 64 times the count) are kept instead, 8 bytes
each, and sorted once at the end. A warehouse load tracks the keys of its
batches. A Parquet load reads them back from its staged files at commit,
when its row buffers are gone. A load without repeated keys then skips the
sink's own duplicate search: ranking every row by key and date in Parquet,
or a `SELECT DISTINCT` over a staging table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from connector.datasets import Dataset

#: A bitmap may cover this many numbers whatever the count of keys (8 MiB).
_BITMAP_FLOOR = 1 << 26
#: Beyond the floor, a bitmap may cover this many numbers per key seen: one
#: bit each costs 8 bytes a key at most, as much as keeping the key.
_NUMBERS_PER_KEY = 64
#: Bitmap bytes turned back into key values at a time.
_UNPACK_BYTES = 1 << 20
_INT64_MIN = -(2**63)


class KeyTracker:
    """Collect the key values of a load's batches to find repeats."""

    def __init__(self, dataset: Dataset, schema: pa.Schema) -> None:
        key = dataset.key
        self._name = key[0] if len(key) == 1 else None
        self._seen: _SeenIntegers | None = None
        if self._name is not None and pa.types.is_integer(
            schema.field(self._name).type
        ):
            self._seen = _SeenIntegers()

    @property
    def key(self) -> str | None:
        """The key column, or None when the keys are not tracked."""
        return self._name if self._seen is not None else None

    def add(self, batch: pa.RecordBatch) -> None:
        """Note the key values of `batch`. A null key stops the tracking."""
        if self._seen is not None:
            self.add_values(batch.column(self._name))

    def add_values(self, keys: pa.Array) -> None:
        """Note key values. A null stops the tracking."""
        if self._seen is None:
            return
        if keys.null_count:
            self._seen = None
        else:
            self._seen.add(integer_values(keys))

    def all_distinct(self) -> bool:
        """Tell whether the keys seen are known to be all different.

        False means that a key repeats, or that the keys were not tracked
        (no key, a composite or non-integer key, or a null key value).
        """
        seen, self._seen = self._seen, None
        return seen is not None and seen.all_distinct()


def integer_values(array: pa.Array) -> np.ndarray:
    """Return the values of an integer array without nulls as a numpy view."""
    kind = "i" if pa.types.is_signed_integer(array.type) else "u"
    dtype = np.dtype(f"{kind}{array.type.bit_width // 8}")
    # Read from the buffer: to_numpy() would make pyarrow import pandas.
    values = np.frombuffer(array.buffers()[1], dtype=dtype)
    return values[array.offset : array.offset + len(array)]


class _SeenIntegers:
    """Integers noted so far: a bitmap while the range is dense enough."""

    def __init__(self) -> None:
        self._count = 0
        self._repeat = False
        self._low = 0
        self._bits: np.ndarray | None = np.zeros(0, dtype=np.uint8)
        self._chunks: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        if self._repeat or not len(values):
            return
        self._count += len(values)
        if self._bits is not None and values.dtype != np.uint64:
            low, high = int(values.min()), int(values.max())
            if self._cover(low, high):
                self._mark(values.astype(np.int64) - self._low)
                return
        if self._bits is not None:
            self._chunks = self._unpack()
            self._bits = None
        self._chunks.append(values)

    def all_distinct(self) -> bool:
        if self._repeat or self._bits is not None:
            return not self._repeat
        values = np.empty(sum(len(chunk) for chunk in self._chunks), np.int64)
        position = 0
        # Copying chunk by chunk frees each chunk, so the keys are in memory once.
        while self._chunks:
            chunk = self._chunks.pop()
            values[position : position + len(chunk)] = chunk
            position += len(chunk)
        values.sort()
        return not bool(np.any(values[1:] == values[:-1]))

    def _cover(self, low: int, high: int) -> bool:
        """Widen the bitmap to cover `low` to `high`. Return False if too wide."""
        bits = self._bits
        if not len(bits):
            self._low = low
        end = self._low + 8 * len(bits)
        if low >= self._low and high < end:
            return True
        new_low, new_end = min(low, self._low), max(high + 1, end)
        limit = max(_BITMAP_FLOOR, _NUMBERS_PER_KEY * self._count)
        if new_end - new_low > limit:
            return False
        # Room for as many numbers again on the growing side keeps the
        # copies few when keys rise or fall through the file.
        spare = min(new_end - new_low, limit - (new_end - new_low))
        if low < self._low:
            # The bitmap's start must stay a valid int64 for the offsets.
            new_low = max(new_low - spare, _INT64_MIN)
        else:
            new_end += spare
        new_low -= new_low % 8
        grown = np.zeros((new_end - new_low + 7) // 8, dtype=np.uint8)
        start = (self._low - new_low) // 8
        grown[start : start + len(bits)] = bits
        self._bits, self._low = grown, new_low
        return True

    def _mark(self, offsets: np.ndarray) -> None:
        offsets.sort()
        if np.any(offsets[1:] == offsets[:-1]):
            self._repeat = True
            return
        byte = offsets >> 3
        bit = np.left_shift(1, offsets & 7).astype(np.uint8)
        if np.any(self._bits[byte] & bit):
            self._repeat = True
            return
        # Offsets sharing a byte are combined first: a plain `|=` through
        # repeated indices would keep only one of them.
        starts = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
        self._bits[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)

    def _unpack(self) -> list[np.ndarray]:
        """Return the numbers marked in the bitmap, a slice at a time."""
        chunks = []
        for start in range(0, len(self._bits), _UNPACK_BYTES):
            part = self._bits[start : start + _UNPACK_BYTES]
            marked = np.flatnonzero(np.unpackbits(part, bitorder="little"))
            if len(marked):
                chunks.append(marked + (self._low + 8 * start))
        return chunks
