"""Sizing windows with DiVA's row count before exporting them.

DiVA's JSON view returns `total`, the rows a filter matches, without
building a file. Asking it first lets a window that would exceed the export
row cap be split before any export is made, and gives a count to reconcile
the rows read with.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from connector.datasets import Dataset
from connector.errors import TruncatedExportError
from connector.summary import RunSummary
from connector.windows import Window, split_window

if TYPE_CHECKING:
    from connector.extract.client import DivaClient

log = logging.getLogger(__name__)


def plan_windows(
    client: DivaClient, dataset: Dataset, window: Window, max_count: int
) -> list[tuple[Window, int | None]]:
    """Split `window` until DiVA's row count of every part is under `max_count`.

    Raises:
        TruncatedExportError: A part that cannot be split has too many rows.
    """
    total = client.count_rows(dataset, window)
    if total is None or total < max_count:
        return [(window, total)]
    halves = split_window(window)
    if not halves:
        raise TruncatedExportError(
            f"{dataset.name} has {total:,} rows for {window}, more than the row "
            f"cap of {max_count:,}, and the window cannot be split further. Raise "
            "max_count (at most 5,000,000) or narrow the filter.",
            dataset=dataset.name,
            window=window,
        )
    log.info(
        "%s has %d rows for %s, over the row cap of %d; exporting it in %d parts.",
        dataset.name,
        total,
        window,
        max_count,
        len(halves),
    )
    planned: list[tuple[Window, int | None]] = []
    for half in halves:
        planned.extend(plan_windows(client, dataset, half, max_count))
    return planned


def reconcile(
    dataset: Dataset,
    window: Window,
    summary: RunSummary,
    planned: list[tuple[Window, int | None]],
) -> None:
    """Warn when the rows read differ from DiVA's count made before the export."""
    totals = [total for _, total in planned]
    if not totals or any(total is None for total in totals):
        return
    expected = sum(totals)
    if summary.rows_read != expected:
        # DiVA refreshes its data during the day, so a count taken moments
        # before the export can differ from it without anything being lost.
        log.warning(
            "%s for %s: read %d rows, but DiVA counted %d just before the export.",
            dataset.name,
            window,
            summary.rows_read,
            expected,
        )
