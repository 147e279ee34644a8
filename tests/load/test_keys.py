"""The repeat check of single integer keys: bitmap, kept keys and the switch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from connector.datasets import Dataset
from connector.load import keys as keys_module
from connector.load.keys import KeyTracker, integer_values


def _dataset(key=("id",)) -> Dataset:
    return Dataset.from_dict(
        {
            "view": "tests",
            "aggregation": "keys",
            "key": list(key),
            "date_column": None,
            "columns": [
                {"field": "id", "type": "bigint"},
                {"field": "label", "type": "varchar(8)"},
            ],
        }
    )


def _tracker(arrow_type=pa.int64(), key=("id",)) -> KeyTracker:
    schema = pa.schema([("id", arrow_type), ("label", pa.string())])
    return KeyTracker(_dataset(key), schema)


def _array(values, arrow_type=pa.int64()) -> pa.Array:
    return pa.array(values, arrow_type)


def _distinct(batches, arrow_type=pa.int64()) -> bool:
    tracker = _tracker(arrow_type)
    for values in batches:
        tracker.add_values(_array(values, arrow_type))
    return tracker.all_distinct()


def test_rising_keys_without_repeat():
    batches = [range(start, start + 1000) for start in range(0, 50_000, 1000)]
    assert _distinct(batches)


def test_repeat_inside_one_batch():
    assert not _distinct([[5, 9, 5]])


def test_repeat_across_batches():
    assert not _distinct([[1, 2, 3], [10, 11], [4, 2]])


def test_neighbours_in_one_byte_are_all_marked():
    # 0..7 share one bitmap byte; each must be marked, not only the last.
    assert not _distinct([list(range(8)), [3]])


def test_falling_keys_grow_the_bitmap_downwards():
    batches = [range(start, start + 500) for start in range(100_000, 0, -500)]
    assert _distinct(batches)
    assert not _distinct([*batches, [100_250]])


def test_negative_keys():
    assert _distinct([[-5, -1, 0, 3], [-100, 7]])
    assert not _distinct([[-5, -1], [-100, -5]])


def test_keys_falling_to_int64_minimum():
    lowest = -(2**63)
    batches = [range(lowest + start, lowest + start + 500) for start in (1500, 1000, 0)]
    assert _distinct(batches)
    assert not _distinct([*batches, [lowest]])


def test_sparse_keys_are_kept_and_sorted():
    rng = np.random.default_rng(3)
    values = rng.choice(2**62, size=20_000, replace=False)
    batches = np.array_split(values, 7)
    assert _distinct(batches)
    assert not _distinct([*batches, [int(values[123])]])


def test_switch_from_bitmap_keeps_earlier_keys(monkeypatch):
    monkeypatch.setattr(keys_module, "_BITMAP_FLOOR", 1024)
    monkeypatch.setattr(keys_module, "_UNPACK_BYTES", 16)
    dense = [range(0, 600), range(600, 1000)]
    far = [10**15, 10**15 + 1]
    assert _distinct([*dense, far])
    # The repeat of a key first marked in the bitmap is still found.
    assert not _distinct([*dense, far, [999]])


def test_matches_a_set_on_random_loads(monkeypatch):
    monkeypatch.setattr(keys_module, "_BITMAP_FLOOR", 4096)
    rng = np.random.default_rng(11)
    for trial in range(40):
        spread = int(rng.choice([50, 5_000, 10**7, 2**40]))
        batches = [
            rng.integers(-spread, spread, size=int(rng.integers(1, 300)))
            for _ in range(int(rng.integers(1, 12)))
        ]
        flat = np.concatenate(batches)
        expected = len(set(flat.tolist())) == len(flat)
        assert _distinct(batches) is expected, trial


@pytest.mark.parametrize("arrow_type", [pa.int16(), pa.int32(), pa.uint32()])
def test_narrow_integer_types(arrow_type):
    assert _distinct([[1, 2, 300], [7]], arrow_type)
    assert not _distinct([[1, 2, 300], [300]], arrow_type)


def test_unsigned_64_bit_keys():
    big = [2**64 - 1, 2**63, 5]
    assert _distinct([big], pa.uint64())
    assert not _distinct([big, [2**63]], pa.uint64())


def test_sliced_arrays_read_their_own_values():
    values = _array(list(range(100)))
    assert list(integer_values(values.slice(10, 5))) == [10, 11, 12, 13, 14]
    tracker = _tracker()
    tracker.add_values(values.slice(0, 50))
    tracker.add_values(values.slice(50))
    assert tracker.all_distinct()


def test_null_key_stops_tracking():
    tracker = _tracker()
    tracker.add_values(_array([1, None, 3]))
    assert tracker.key is None
    assert not tracker.all_distinct()


def test_untracked_keys_are_never_called_distinct():
    text = KeyTracker(
        _dataset(), pa.schema([("id", pa.string()), ("label", pa.string())])
    )
    composite = _tracker(key=("id", "label"))
    assert text.key is None
    assert not text.all_distinct()
    assert composite.key is None
    assert not composite.all_distinct()


def test_no_keys_are_distinct():
    assert _tracker().all_distinct()
