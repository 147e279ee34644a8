"""Windows: the inclusive ranges of a date column that one export covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta


@dataclass(frozen=True, order=True)
class Window:
    """An inclusive range on a dataset's date column.

    `start` and `end` are both dates (whole days) or both datetimes (used
    when a single day has more rows than one export can carry and the
    window is split into hours). Both ends are included, as in DiVA's
    `column=START..END` filter.
    """

    start: date | datetime
    end: date | datetime

    def __post_init__(self) -> None:
        if isinstance(self.start, datetime) != isinstance(self.end, datetime):
            raise TypeError("Window start and end must both be dates or datetimes.")
        if self.end < self.start:
            raise ValueError(f"Window end {self.end} is before its start {self.start}.")

    @property
    def is_days(self) -> bool:
        """True when the window is made of whole days."""
        return not isinstance(self.start, datetime)

    @property
    def days(self) -> list[date]:
        """Every calendar day the window touches, in order."""
        first = self.start if self.is_days else self.start.date()
        last = self.end if self.is_days else self.end.date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def to_filter(self) -> str:
        """Return the `START..END` value of DiVA's range filter."""
        return f"{_format(self.start)}..{_format(self.end)}"

    def __str__(self) -> str:
        return self.to_filter()


def _format(value: date | datetime) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    return value.isoformat()


def split_window(window: Window) -> list[Window] | None:
    """Split a window in two halves, for exports that hit the row cap.

    Day windows are halved down to single days; a single day becomes 24
    hour windows; an hour window is halved down to one second. Returns None
    when the window cannot be split further.
    """
    if window.is_days:
        span = (window.end - window.start).days
        if span >= 1:
            middle = window.start + timedelta(days=span // 2)
            return [
                Window(window.start, middle),
                Window(middle + timedelta(days=1), window.end),
            ]
        day = datetime.combine(window.start, datetime.min.time())
        return [
            Window(day + timedelta(hours=h), day + timedelta(hours=h + 1, seconds=-1))
            for h in range(24)
        ]

    seconds = int((window.end - window.start).total_seconds())
    if seconds < 1:
        return None
    middle = window.start + timedelta(seconds=seconds // 2)
    return [
        Window(window.start, middle),
        Window(middle + timedelta(seconds=1), window.end),
    ]
