"""Daily runs, backfills and many datasets: windows chosen from state.

- An incremental run continues from the dataset's high-water mark, kept
  with its destination, and re-reads `lookback_days` before it, because
  DiVA's settlement and clearing rows change after the fact.
- A backfill splits a long range into windows and exports several at once
  under the run's shared request budget. It loads them one at a time and
  checkpoints each finished window in the work directory, so a backfill
  started again after an interruption skips what it already loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from connector.datasets import Dataset, load_dataset
from connector.errors import ConfigError, DivaError, EmptyRunError
from connector.load.state import (
    DatasetState,
    open_state_stores,
    read_state,
    write_state,
)
from connector.pipeline import run_window
from connector.settings import Settings
from connector.sinks import check_sinks
from connector.summary import RunSummary
from connector.windows import Window

if TYPE_CHECKING:
    from connector.extract.client import DivaClient

log = logging.getLogger(__name__)


def today_utc() -> date:
    """Return today's date in UTC, the zone DiVA's refresh times are given in."""
    return datetime.now(UTC).date()


def incremental_window(
    state: DatasetState | None,
    settings: Settings,
    *,
    start: date | None,
    end: date | None,
    today: date,
) -> Window:
    """Choose the window of an incremental run.

    An explicit `start` wins; else the run starts `lookback_days` before
    the high-water mark; a first run with neither uses `start_date`.

    Raises:
        ConfigError: A first run has no start date.
    """
    last = end or today
    if start is None and state is not None:
        start = state.high_water - timedelta(days=settings.lookback_days)
    start = start or settings.start_date
    if start is None:
        raise ConfigError(
            "This dataset has no high-water mark yet: pass --start YYYY-MM-DD or set "
            "start_date in the config file for its first run."
        )
    if last < start:
        raise ConfigError(
            f"The window would end ({last}) before it starts ({start}). Pass --start "
            "and --end explicitly to choose the window."
        )
    return Window(start, last)


def run_incremental(
    dataset: Dataset,
    settings: Settings,
    *,
    start: date | None = None,
    end: date | None = None,
    today: date | None = None,
) -> RunSummary:
    """Run the window after the dataset's high-water mark and advance it.

    Raises:
        EmptyRunError: Zero rows where the last run found some, and
            `fail_on_empty` is set (the load itself is committed).
        ConfigError, ExportError, ApiError, DataError, LoadError: As for
            `run_window`.
    """
    settings.require_credentials()
    # The sinks are checked before the state is read from them, so that a wrong
    # warehouse URL is reported as such and not as a failed state read.
    check_sinks(settings, dataset)
    today = today or today_utc()
    stores = open_state_stores(settings)
    state = read_state(stores, dataset)
    window = incremental_window(state, settings, start=start, end=end, today=today)
    log.info("Running %s for %s.", dataset.name, window)

    summary = run_window(dataset, window, settings)

    # An empty run that fails leaves the mark where it was, so the next run
    # reads the same window again and still compares with the last good run.
    _check_not_empty(dataset, window, summary, state, settings)
    # DiVA has no rows after today, so the mark never moves past it: a
    # window ending in the future must not make later runs skip days.
    reached = min(window.end, today)
    high_water = max(reached, state.high_water) if state else reached
    write_state(stores, dataset, DatasetState(high_water, summary.rows_read))
    return summary


def _check_not_empty(
    dataset: Dataset,
    window: Window,
    summary: RunSummary,
    previous: DatasetState | None,
    settings: Settings,
) -> None:
    if summary.rows_read or previous is None or not previous.last_rows:
        return
    message = (
        f"{dataset.name} returned zero rows for {window}, but the previous run read "
        f"{previous.last_rows:,}. Check the program and the date column filter."
    )
    if settings.fail_on_empty:
        raise EmptyRunError(message, dataset=dataset.name, window=window)
    log.warning(message)


@dataclass
class BackfillResult:
    """The windows a backfill loaded and those it found already done."""

    dataset: str
    loaded: list[RunSummary]
    skipped: list[Window]

    @property
    def rows_read(self) -> int:
        """Rows read across every window loaded by this invocation."""
        return sum(summary.rows_read for summary in self.loaded)


def backfill_windows(start: date, end: date, window_days: int) -> list[Window]:
    """Split `start..end` into consecutive windows of `window_days` days."""
    if window_days < 1:
        raise ConfigError(f"--window must be at least 1 day, not {window_days}.")
    windows = []
    first = start
    while first <= end:
        last = min(first + timedelta(days=window_days - 1), end)
        windows.append(Window(first, last))
        first = last + timedelta(days=1)
    return windows


class Checkpoints:
    """Finished windows of one backfill, in a JSON file rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.done: set[str] = set()
        if path.is_file():
            self.done = set(json.loads(path.read_text(encoding="utf-8"))["done"])

    def is_done(self, window: Window) -> bool:
        """Return True when `window` was loaded by this backfill already."""
        return window.to_filter() in self.done

    def mark_done(self, window: Window) -> None:
        """Record `window` as loaded."""
        with self._lock:
            self.done.add(window.to_filter())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"done": sorted(self.done)}, indent=2))
            temporary.replace(self.path)


def _backfill_key(dataset: Dataset, start: date, end: date, settings: Settings) -> str:
    sinks = f"{settings.parquet}|{settings.table}|{bool(settings.warehouse)}"
    text = f"{dataset.name}|{start}|{end}|{settings.program}|{sinks}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def backfill(
    dataset: Dataset,
    start: date,
    end: date,
    settings: Settings,
    *,
    window_days: int = 7,
    workers: int | None = None,
    client: DivaClient | None = None,
) -> BackfillResult:
    """Load `start..end` window by window, several exports at once.

    Every window is loaded in its own transaction and checkpointed; a
    backfill interrupted and started again with the same arguments skips
    the windows already loaded. When every window is loaded, the
    checkpoint file is removed and the high-water mark advanced.

    All windows share one `client`, and so one request budget; pass your
    own to control waiting (tests do).

    Raises:
        DivaError: The first window that failed, after the windows
            already running have finished; their loads are kept.
    """
    from connector.extract.client import DivaClient

    settings.require_credentials()
    windows = backfill_windows(start, end, window_days)
    key = _backfill_key(dataset, start, end, settings)
    checkpoints = Checkpoints(settings.work_dir / "backfills" / f"{key}.json")
    todo = [window for window in windows if not checkpoints.is_done(window)]
    skipped = [window for window in windows if checkpoints.is_done(window)]
    if skipped:
        log.info(
            "Resuming the backfill of %s: %d of %d windows already loaded.",
            dataset.name,
            len(skipped),
            len(windows),
        )

    client = client or DivaClient(settings)
    load_lock = threading.Lock()

    def run_one(window: Window) -> RunSummary:
        summary = run_window(
            dataset, window, settings, client=client, load_lock=load_lock
        )
        checkpoints.mark_done(window)
        log.info("Loaded %s for %s: %d rows.", dataset.name, window, summary.rows_read)
        return summary

    loaded: list[RunSummary] = []
    failure: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=workers or settings.workers)
    try:
        futures = [pool.submit(run_one, window) for window in todo]
        for future in futures:
            try:
                loaded.append(future.result())
            except DivaError as err:
                failure = failure or err
    except BaseException:
        # Interrupted: windows not started yet are dropped, windows already
        # running finish their load, and the checkpoints keep both apart.
        log.warning("Backfill interrupted; waiting for the windows already running.")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    if failure is not None:
        raise failure

    checkpoints.path.unlink(missing_ok=True)
    stores = open_state_stores(settings)
    state = read_state(stores, dataset)
    reached = min(end, today_utc())
    if state is None or state.high_water < reached:
        rows = loaded[-1].rows_read if loaded else 0
        write_state(stores, dataset, DatasetState(reached, rows))
    return BackfillResult(dataset.name, loaded, skipped)


@dataclass
class JobOutcome:
    """The result of one dataset of `run --all`: a summary or an error."""

    name: str
    summary: RunSummary | None = None
    error: DivaError | None = None


def run_all(
    settings: Settings,
    *,
    start: date | None = None,
    end: date | None = None,
    today: date | None = None,
) -> list[JobOutcome]:
    """Run every dataset listed in the settings, each incrementally.

    `start` and `end` apply to every dataset, as for `run_incremental`.
    One dataset failing does not stop the others; each outcome records what
    happened.

    Raises:
        ConfigError: The settings list no datasets.
    """
    if not settings.datasets:
        raise ConfigError(
            "No datasets to run: list them as [[datasets]] entries in the config "
            "file (see config.example.toml)."
        )
    outcomes = []
    for job in settings.datasets:
        try:
            summary = run_incremental(
                load_dataset(job.name),
                settings.for_job(job),
                start=start,
                end=end,
                today=today,
            )
            outcomes.append(JobOutcome(job.name, summary=summary))
        except DivaError as err:
            log.error("Dataset %s failed: %s", job.name, err)
            outcomes.append(JobOutcome(job.name, error=err))
        except Exception as err:  # one dataset's bug must not stop the others
            log.exception("Dataset %s failed unexpectedly.", job.name)
            outcomes.append(
                JobOutcome(job.name, error=DivaError(f"{type(err).__name__}: {err}"))
            )
    return outcomes
