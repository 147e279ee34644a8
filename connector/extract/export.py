"""The export cycle of one window: request, poll, download, and re-export.

```
request_export ─► poll (Pending … ready) ─► download ─► verified file
       ▲                 │ 410                  │ 410
       └─────────────────┴──────────────────────┘  at most max_reexports times
```

DiVA expires an export file 60 minutes after making it and returns 410
from then on, so the only way on is a new export. Tokens and files are recorded
in the run directory, so a restarted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from connector.datasets import Dataset
from connector.errors import DownloadError, ExportExpiredError, ExportTimeoutError
from connector.extract.client import DivaClient
from connector.extract.download import token_extensions
from connector.extract.integrity import verify_export_file
from connector.extract.responses import ExportGoneError
from connector.extract.rundir import RunDirectory
from connector.redaction import mask_token
from connector.windows import Window

log = logging.getLogger(__name__)

#: Seconds DiVA keeps a finished export file before it returns 410.
EXPORT_EXPIRY_S = 3600.0
#: Factor by which the wait between two polls grows.
POLL_BACKOFF = 1.5
#: Relative random spread of each poll wait, so parallel windows drift apart.
POLL_JITTER = 0.1

_jitter = random.Random()


@dataclass(frozen=True)
class ExportedFile:
    """A verified export file on disk.

    Attributes:
        path: The file, named after the dataset and window, with the token's
            extensions (`.csv.gz`, `.csv.zip`, `.csv`).
        token: DiVA's export token, left out of the repr; mask it with
            `mask_token` before showing it.
        window: The window exported, None for datasets without a date column.
        compress: `gz` or `zip`, as requested.
        max_count: The row cap requested, None for DiVA's default.
    """

    path: Path
    token: str = field(repr=False)
    window: Window | None
    compress: str
    max_count: int | None


def export_window(
    client: DivaClient,
    dataset: Dataset,
    window: Window | None,
    run_dir: RunDirectory,
    *,
    compress: str,
    max_count: int | None,
    poll_interval_s: float,
    poll_max_interval_s: float,
    poll_timeout_s: float,
    max_reexports: int,
) -> ExportedFile:
    """Export one window of a dataset to a verified file in the run directory.

    A file or token recorded by an earlier attempt of the same run is reused.
    Whether the window was already loaded is the caller's question
    (`run_dir.finished`): this function always delivers a file.

    Raises:
        ExportExpiredError: The file expired (410) after `max_reexports` new
            exports; the message names every token tried, masked.
        ExportTimeoutError: An export stayed `Pending` for `poll_timeout_s`.
        DownloadError: The file stayed incomplete or corrupt.
        ApiError: DiVA refused a request, or failed it past the retries.
    """
    reused = _reuse_file(run_dir, window, compress, max_count)
    if reused is not None:
        return reused

    token, resumed = _resume_or_request(
        client,
        dataset,
        window,
        run_dir,
        compress=compress,
        max_count=max_count,
        max_age_s=poll_timeout_s + EXPORT_EXPIRY_S,
    )
    expired: list[str] = []
    while True:
        try:
            wait_for_export(
                client,
                token,
                dataset=dataset,
                window=window,
                poll_interval_s=poll_interval_s,
                poll_max_interval_s=poll_max_interval_s,
                poll_timeout_s=poll_timeout_s,
            )
            path = client.download_export(
                token,
                run_dir.path,
                filename=window_filename(dataset, window, token),
                dataset=dataset.name,
            )
        except ExportGoneError as err:
            run_dir.forget_export(window)
            if not resumed:
                expired.append(token)
            _check_reexports(dataset, window, token, expired, max_reexports, err)
            token = _request(client, dataset, window, run_dir, compress, max_count)
            resumed = False
            continue

        run_dir.record_file(window, path, token)
        return ExportedFile(path, token, window, compress, max_count)


def wait_for_export(
    client: DivaClient,
    token: str,
    *,
    dataset: Dataset,
    window: Window | None,
    poll_interval_s: float,
    poll_max_interval_s: float,
    poll_timeout_s: float,
) -> None:
    """Poll an export until DiVA has the file ready.

    The wait between polls starts at `poll_interval_s`, grows by half each
    time up to `poll_max_interval_s`, and varies by up to 10% at random.

    Raises:
        ExportTimeoutError: Still pending after `poll_timeout_s` seconds.
        ExportGoneError: DiVA returned 410.
    """
    started = client.clock()
    interval = poll_interval_s
    while not client.poll_export(token, dataset=dataset.name):
        waited = client.clock() - started
        if waited >= poll_timeout_s:
            raise ExportTimeoutError(
                f"Export of {dataset.name} for {window or 'the default range'} "
                f"(token {mask_token(token)}) was still pending after {waited:.0f} s. "
                "Raise poll_timeout_s, or export smaller windows.",
                dataset=dataset.name,
                window=window,
                token=mask_token(token),
                waited_s=waited,
            )

        spread = 1 + POLL_JITTER * (2 * _jitter.random() - 1)
        pause = min(interval * spread, poll_max_interval_s, poll_timeout_s - waited)
        log.debug(
            "Export %s pending; polling again in %.1f s.", mask_token(token), pause
        )
        client.sleep(pause)
        interval = min(interval * POLL_BACKOFF, poll_max_interval_s)


def window_filename(dataset: Dataset, window: Window | None, token: str) -> str:
    """Return the file name of a window's export, with the token's extensions."""
    span = window.to_filter().replace(":", "") if window is not None else "all"
    name = dataset.name.replace("/", "-")
    return f"{name}_{span}{token_extensions(token)}"


def _reuse_file(
    run_dir: RunDirectory, window: Window | None, compress: str, max_count: int | None
) -> ExportedFile | None:
    path = run_dir.recorded_file(window)
    export = run_dir.recorded_export(window)
    if path is None or export is None:
        return None
    try:
        verify_export_file(path)
    except DownloadError as err:
        log.warning("Recorded file %s is unusable (%s); exporting again.", path, err)
        return None
    log.info("Reusing %s, downloaded earlier in this run.", path)
    return ExportedFile(path, export.token, window, compress, max_count)


def _resume_or_request(
    client: DivaClient,
    dataset: Dataset,
    window: Window | None,
    run_dir: RunDirectory,
    *,
    compress: str,
    max_count: int | None,
    max_age_s: float,
) -> tuple[str, bool]:
    recorded = run_dir.recorded_export(window)
    # A token older than the poll deadline plus DiVA's expiry has expired for
    # sure, so polling it would only cost a request and a 410.
    if (
        recorded is not None
        and recorded.compress == compress
        and recorded.max_count == max_count
        and run_dir.now() - recorded.requested_at <= max_age_s
    ):
        log.info(
            "Resuming export %s of %s for %s, requested earlier in this run.",
            mask_token(recorded.token),
            dataset.name,
            window or "the default range",
        )
        return recorded.token, True
    return _request(client, dataset, window, run_dir, compress, max_count), False


def _request(
    client: DivaClient,
    dataset: Dataset,
    window: Window | None,
    run_dir: RunDirectory,
    compress: str,
    max_count: int | None,
) -> str:
    token = client.request_export(
        dataset, window, compress=compress, max_count=max_count
    )
    run_dir.record_token(window, token, compress=compress, max_count=max_count)
    return token


def _check_reexports(
    dataset: Dataset,
    window: Window | None,
    token: str,
    expired: list[str],
    max_reexports: int,
    err: ExportGoneError,
) -> None:
    masked_tokens = ", ".join(mask_token(token) for token in expired)
    if len(expired) > max_reexports:
        raise ExportExpiredError(
            f"Export of {dataset.name} for {window or 'the default range'} expired "
            f"before it could be downloaded: DiVA returned 410 Gone for "
            f"{len(expired)} export(s) ({masked_tokens}), and "
            f"max_reexports={max_reexports} "
            "allows no more. Check that nothing delays the download, or raise "
            "max_reexports.",
            status=410,
            dataset=dataset.name,
            window=window,
            tokens=[mask_token(token) for token in expired],
        ) from err
    log.warning(
        "Export %s of %s for %s expired (410); requesting a new export "
        "(%d of at most %d).",
        mask_token(token),
        dataset.name,
        window or "the default range",
        max(len(expired), 1),
        max_reexports,
    )
