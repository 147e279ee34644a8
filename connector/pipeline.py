"""One window through all three stages: export, type, load.

The pipeline owns the decisions that span stages. The main one is
truncation. DiVA cuts an export off at the row cap without any error, and
only the transform stage can count records. So a file holding exactly the
cap is detected here: its window is split and every part exported again
before anything is committed to a sink.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector import progress
from connector.datasets import Dataset
from connector.errors import ConfigError, DivaError, TruncatedExportError
from connector.load.base import BatchWriter
from connector.settings import Settings
from connector.sinks import abort_all, check_sinks, open_writers
from connector.sizing import plan_windows, reconcile
from connector.summary import RunSummary
from connector.windows import Window, split_window, window_in_utc

if TYPE_CHECKING:
    import pyarrow as pa

    from connector.extract.client import DivaClient

log = logging.getLogger(__name__)


@dataclass
class ExportPart:
    """One downloaded export file and the window it covers."""

    window: Window | None
    path: Path
    token: str | None = None


class _CapReached(Exception):
    def __init__(self, part: ExportPart) -> None:
        self.part = part


def load_parts(
    parts: list[ExportPart],
    dataset: Dataset,
    settings: Settings,
    *,
    window: Window | None,
    max_count: int | None = None,
    column_lookup: Callable[[str], dict | None] | None = None,
) -> RunSummary:
    """Type every part and load it into every sink in one commit.

    Args:
        parts: The export files that together cover `window`.
        dataset: The dataset the files belong to.
        settings: Transform and sink settings.
        window: The window the parts cover, or None for files loaded by hand.
        max_count: The row cap the exports were made with; a part holding
            that many records raises `_CapReached` before any commit.
        column_lookup: Returns DiVA's schema object for a column the schema
            file does not know, or None.

    Raises:
        DataError: A file or value does not match the schema; nothing is
            committed.
        LoadError: A sink failed; every sink is left as it was.
    """
    from connector.transform import TransformOptions, read_export

    options = TransformOptions.from_settings(settings)
    summary = RunSummary(dataset.name, window, exports=len(parts))
    readers = []
    writers: list[BatchWriter] | None = None
    try:
        for part in parts:
            reader = read_export(
                part.path,
                dataset,
                options,
                column_lookup=column_lookup,
                work_dir=settings.work_dir,
            )
            readers.append(reader)
            if writers is None:
                missing = tuple(
                    item.column
                    for item in reader.report.drift
                    if item.kind == "missing"
                )
                writers = open_writers(
                    settings, reader.dataset, missing_columns=missing
                )
            _copy_batches(reader, writers)
            _add_report(summary, reader.report)
            if max_count is not None and reader.report.rows_read >= max_count:
                raise _CapReached(part)
            rejects = reader.rejects()
            if rejects.num_rows:
                for writer in writers:
                    writer.write_rejects(rejects)

        token = parts[0].token if len(parts) == 1 else None
        span = _commit_window(window, dataset, settings)
        summary.sinks = [writer.commit(span, token) for writer in writers]
        progress.count("rows_loaded", summary.sinks[0].rows_written)
    except BaseException:
        abort_all(writers or [])
        raise
    finally:
        for reader in readers:
            reader.close()
    return summary


def _commit_window(
    window: Window | None, dataset: Dataset, settings: Settings
) -> Window | None:
    """Return the window whose rows the sinks replace, in UTC.

    The sinks store timestamps in UTC, while DiVA reads a window in the zone
    of its zone-less timestamps (`source_timezone`). Dates have no zone.
    """
    if window is None or dataset.date_column is None:
        return window
    if dataset.column(dataset.date_column).type.kind != "timestamp":
        return window
    return window_in_utc(window, settings.source_timezone)


def _copy_batches(reader: Any, writers: list[BatchWriter]) -> None:
    for batch in reader:
        for writer in writers:
            writer.write(batch)
        progress.count("rows_typed", batch.num_rows)


def _add_report(summary: RunSummary, report: Any) -> None:
    summary.rows_read += report.rows_read
    summary.rows_rejected += report.rows_rejected
    for item in report.drift:
        line = f"{item.kind}: {item.column}"
        if item.detail:
            line += f" ({item.detail})"
        if line not in summary.drift:
            summary.drift.append(line)


def load_file(path: str | Path, dataset: Dataset, settings: Settings) -> RunSummary:
    """Type an export file already on disk and load it into the sinks.

    Raises:
        ConfigError: The file does not exist.
        DataError: The file does not match the dataset's schema.
        LoadError: A sink failed; every sink is left as it was.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Export file {path} not found.", path=str(path))
    check_sinks(settings, dataset)

    started = time.monotonic()
    summary = load_parts([ExportPart(None, path)], dataset, settings, window=None)
    summary.seconds = time.monotonic() - started
    return summary


def run_window(
    dataset: Dataset,
    window: Window,
    settings: Settings,
    *,
    client: DivaClient | None = None,
    load_lock: AbstractContextManager | None = None,
) -> RunSummary:
    """Export one window from DiVA, type it and load it into the sinks.

    A part whose file contains exactly the row cap is split and exported
    again until every part is under the cap. Only then are the sinks
    committed. Concurrent callers pass a shared `load_lock`, so that
    exports overlap while loads into the same sinks take turns.

    Raises:
        TruncatedExportError: A part cannot be split further and still
            reaches the cap.
        ExportError, ApiError: The export cycle failed.
        DataError, LoadError: As for `load_parts`.
    """
    from connector.extract.rundir import RunDirectory

    started = time.monotonic()
    settings.require_credentials()
    check_sinks(settings, dataset)
    if dataset.date_column is None:
        log.warning(
            "%s has no date column, so the window %s is not sent: the export contains "
            "every row DiVA serves for it.",
            dataset.name,
            window,
        )
    client = client or _make_client(settings)
    run_dir = RunDirectory.open(settings.work_dir, _run_key(dataset, window, settings))
    lookup = _column_lookup(client, dataset)

    planned = [(window, None)]
    if settings.size_windows and dataset.date_column is not None:
        planned = plan_windows(client, dataset, window, settings.max_count)
    parts = [_export(client, dataset, part, settings, run_dir) for part, _ in planned]
    while True:
        try:
            with load_lock or nullcontext():
                summary = load_parts(
                    parts,
                    dataset,
                    settings,
                    window=window,
                    max_count=settings.max_count,
                    column_lookup=lookup,
                )
            break
        except _CapReached as reached:
            parts = _split_part(parts, reached.part, client, dataset, settings, run_dir)

    run_dir.close()
    if not settings.keep_files:
        _remove_files(parts)
    reconcile(dataset, window, summary, planned)
    summary.seconds = time.monotonic() - started
    return summary


def _split_part(
    parts: list[ExportPart],
    full: ExportPart,
    client: DivaClient,
    dataset: Dataset,
    settings: Settings,
    run_dir: Any,
) -> list[ExportPart]:
    halves = split_window(full.window) if full.window is not None else None
    if not halves or dataset.date_column is None:
        raise TruncatedExportError(
            f"The export of {dataset.name} for {full.window} contains "
            f"{settings.max_count:,} rows, the row cap, so it is probably cut off, "
            "and the window cannot be split further. Raise max_count (at most "
            "5,000,000) or narrow the filter.",
            dataset=dataset.name,
            window=full.window,
        )
    log.warning(
        "Export of %s for %s reached the row cap of %d rows; splitting it into %d "
        "windows.",
        dataset.name,
        full.window,
        settings.max_count,
        len(halves),
    )
    index = parts.index(full)
    new_parts = [_export(client, dataset, half, settings, run_dir) for half in halves]
    return parts[:index] + new_parts + parts[index + 1 :]


def _export(
    client: DivaClient,
    dataset: Dataset,
    window: Window,
    settings: Settings,
    run_dir: Any,
) -> ExportPart:
    from connector.extract.export import export_window

    progress.count("exports_requested")
    exported = export_window(
        client,
        dataset,
        window,
        run_dir,
        compress=settings.compress,
        max_count=settings.max_count,
        poll_interval_s=settings.poll_interval_s,
        poll_max_interval_s=settings.poll_max_interval_s,
        poll_timeout_s=settings.poll_timeout_s,
        max_reexports=settings.max_reexports,
    )
    path = Path(exported.path)
    progress.count("exports_ready")
    progress.count("bytes_downloaded", path.stat().st_size)
    return ExportPart(window, path, exported.token)


def _make_client(settings: Settings) -> DivaClient:
    from connector.extract.client import DivaClient

    return DivaClient(settings)


def _column_lookup(
    client: DivaClient, dataset: Dataset
) -> Callable[[str], dict | None]:
    """Return a lookup of DiVA's schema objects, fetched once and only if needed."""
    cache: dict[str, dict] | None = None

    def lookup(name: str) -> dict | None:
        nonlocal cache
        if cache is None:
            try:
                cache = {obj["field"]: obj for obj in client.fetch_schema(dataset.name)}
            except DivaError as err:  # the lookup only refines a fallback type
                log.warning(
                    "Could not fetch the schema of %s from DiVA (%s); new columns "
                    "are kept as strings.",
                    dataset.name,
                    err,
                )
                cache = {}
        return cache.get(name)

    return lookup


def _run_key(dataset: Dataset, window: Window, settings: Settings) -> str:
    # The sinks are part of the key: two runs of one window into different
    # destinations at the same time must not share export files.
    warehouse = settings.warehouse.get_secret_value() if settings.warehouse else ""
    text = "|".join(
        [
            dataset.name,
            window.to_filter(),
            settings.program or "",
            settings.compress,
            str(settings.max_count),
            settings.base_url,
            settings.parquet or "",
            warehouse,
            settings.table or "",
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _remove_files(parts: list[ExportPart]) -> None:
    for part in parts:
        try:
            part.path.unlink(missing_ok=True)
        except OSError as err:
            log.warning("Could not remove export file %s: %s", part.path, err)


def export_complete_window(
    dataset: Dataset,
    window: Window,
    settings: Settings,
    *,
    client: DivaClient | None = None,
) -> list[ExportPart]:
    """Export one window as files that each hold fewer rows than the cap.

    Every file is counted as it arrives; one holding the row cap is
    probably cut off, so its window is split and exported again. The
    files stay on disk for the caller, in the run directory.

    Raises:
        TruncatedExportError: A part that cannot be split reaches the cap.
        ExportError, ApiError: The export cycle failed.
    """
    from connector.extract.rundir import RunDirectory
    from connector.transform import TransformOptions, count_records

    settings.require_credentials()
    client = client or _make_client(settings)
    options = TransformOptions.from_settings(settings)
    run_dir = RunDirectory.open(settings.work_dir, _run_key(dataset, window, settings))

    parts: list[ExportPart] = []
    pending = [window]
    while pending:
        part = _export(client, dataset, pending.pop(0), settings, run_dir)
        if count_records(part.path, options) < settings.max_count:
            parts.append(part)
            continue
        halves = split_window(part.window) if dataset.date_column else None
        if not halves:
            raise TruncatedExportError(
                f"The export of {dataset.name} for {part.window} reaches the row "
                f"cap of {settings.max_count:,} rows and cannot be split further. "
                "Raise max_count (at most 5,000,000) or narrow the filter.",
                dataset=dataset.name,
                window=part.window,
            )
        _remove_files([part])
        pending[:0] = halves
    run_dir.close()
    return parts


def iter_window_batches(
    dataset: Dataset,
    window: Window,
    settings: Settings,
    *,
    client: DivaClient | None = None,
) -> Iterator[pa.RecordBatch]:
    """Export one window and yield its typed record batches.

    Every export file is counted before its first batch is yielded, so a
    file cut off at the row cap is split and exported again instead of
    being passed on short.

    Raises:
        TruncatedExportError, ExportError, ApiError, DataError: As for
            `run_window`.
    """
    from connector.transform import TransformOptions, read_export

    client = client or _make_client(settings)
    parts = export_complete_window(dataset, window, settings, client=client)
    options = TransformOptions.from_settings(settings)
    lookup = _column_lookup(client, dataset)
    for part in parts:
        with read_export(part.path, dataset, options, column_lookup=lookup) as reader:
            yield from reader
        if not settings.keep_files:
            _remove_files([part])


def clear_work_dir(settings: Settings) -> None:
    """Remove the run directory and every file kept in it."""
    shutil.rmtree(settings.work_dir, ignore_errors=True)
