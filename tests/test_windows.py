"""Windows and their splitting when an export reaches the row cap."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from connector.windows import Window, split_window


def test_filter_includes_both_days():
    assert Window(date(2024, 3, 1), date(2024, 3, 31)).to_filter() == (
        "2024-03-01..2024-03-31"
    )


def test_end_before_start_rejected():
    with pytest.raises(ValueError, match="before its start"):
        Window(date(2024, 3, 2), date(2024, 3, 1))


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ((3, 1), (3, 31), [((3, 1), (3, 16)), ((3, 17), (3, 31))]),
        ((3, 1), (3, 2), [((3, 1), (3, 1)), ((3, 2), (3, 2))]),
        ((3, 1), (3, 4), [((3, 1), (3, 2)), ((3, 3), (3, 4))]),
    ],
)
def test_day_windows_halve(start, end, expected):
    halves = split_window(Window(date(2024, *start), date(2024, *end)))

    assert halves == [Window(date(2024, *a), date(2024, *b)) for a, b in expected]


def test_split_parts_cover_window_without_overlap():
    window = Window(date(2024, 1, 1), date(2024, 12, 31))
    pending, days = [window], []
    while pending:
        part = pending.pop()
        halves = split_window(part)
        if part.start == part.end:
            days.append(part.start)
        else:
            pending.extend(halves)

    assert sorted(days) == window.days


def test_single_day_splits_into_hours():
    hours = split_window(Window(date(2024, 3, 1), date(2024, 3, 1)))

    assert len(hours) == 24
    assert hours[0] == Window(datetime(2024, 3, 1, 0), datetime(2024, 3, 1, 0, 59, 59))
    assert hours[-1].end == datetime(2024, 3, 1, 23, 59, 59)
    assert hours[0].to_filter() == "2024-03-01T00:00:00..2024-03-01T00:59:59"


def test_hour_halves_down_to_one_second():
    window = Window(datetime(2024, 3, 1, 5), datetime(2024, 3, 1, 5, 59, 59))
    while True:
        halves = split_window(window)
        if halves is None:
            break
        assert halves[0].start == window.start
        assert halves[-1].end == window.end
        window = halves[0]

    assert window.start == window.end
