"""Tell whether the integer key of a load repeats, by sorting its values.

A warehouse load whose dataset has a single integer key keeps the key
values of its batches (8 bytes a row) and sorts them once at the end. A
Parquet load reads them back from its staged files at commit, when its row
buffers are gone. A load without repeated keys then skips the sink's own
duplicate search: ranking every row by key and date in Parquet, or a
`SELECT DISTINCT` over a staging table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from connector.datasets import Dataset


class KeyTracker:
    """Collect the key values of a load's batches to find repeats."""

    def __init__(self, dataset: Dataset, schema: pa.Schema) -> None:
        key = dataset.key
        self._name = key[0] if len(key) == 1 else None
        self._chunks: list[pa.Array] | None = None
        if self._name is not None and pa.types.is_integer(
            schema.field(self._name).type
        ):
            self._chunks = []

    @property
    def key(self) -> str | None:
        """The key column, or None when the keys are not tracked."""
        return self._name if self._chunks is not None else None

    def add(self, batch: pa.RecordBatch) -> None:
        """Keep the key values of `batch`. A null key stops the tracking."""
        if self._chunks is not None:
            self.add_values(batch.column(self._name))

    def add_values(self, keys: pa.Array) -> None:
        """Keep key values. A null stops the tracking."""
        if self._chunks is None:
            return
        if keys.null_count:
            self._chunks = None
        else:
            self._chunks.append(keys)

    def all_distinct(self) -> bool:
        """Tell whether the keys seen are known to be all different.

        False means that a key repeats, or that the keys were not tracked
        (no key, a composite or non-integer key, or a null key value).
        """
        if self._chunks is None:
            return False
        chunks, self._chunks = self._chunks, None
        if not chunks:
            return True
        values = np.concatenate([chunk.to_numpy() for chunk in chunks])
        del chunks
        values.sort()
        return not bool(np.any(values[1:] == values[:-1]))
