"""Windows: the inclusive ranges of a date column that one export covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


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


def window_in_utc(window: Window, zone: str) -> Window:
    """Return the instants of `window`, read in `zone`, as a UTC window.

    DiVA filters a window in the zone of its zone-less timestamps, so the
    local day 2024-03-05 in America/Bogota runs from 05:00 UTC that day to
    04:59:59 UTC the next. The result has aware UTC datetimes and, like any
    datetime window, includes its last second. A window in UTC is returned
    as it is.
    """
    if zone == "UTC":
        return window
    tz = ZoneInfo(zone)
    if window.is_days:
        start = datetime.combine(window.start, time(), tz)
        after = datetime.combine(window.end + timedelta(days=1), time(), tz)
        end = after.astimezone(UTC) - timedelta(seconds=1)
        return Window(start.astimezone(UTC), end)
    return Window(_in_utc(window.start, tz), _in_utc(window.end, tz))


def _in_utc(value: datetime, tz: ZoneInfo) -> datetime:
    local = value if value.tzinfo is not None else value.replace(tzinfo=tz)
    return local.astimezone(UTC)


def _format(value: date | datetime) -> str:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
