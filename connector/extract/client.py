"""The HTTP client for DiVA: auth, program, timeouts, retries and budget.

Every request goes through one path: take a slot from the request budget,
send with Basic auth and `program`, classify the response, and let the retry
policy decide what a failure means. Tokens and credentials never appear in
a message or log line of this module: URLs are masked and export tokens are
shortened to a prefix.
"""

from __future__ import annotations

import logging
import threading
import time
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode

import requests

from connector.datasets import Dataset
from connector.errors import ApiError, ConfigError, DownloadError, PermanentApiError
from connector.extract.budget import RequestBudget
from connector.extract.download import (
    PartialDownload,
    export_filename,
    part_path,
    write_response,
)
from connector.extract.integrity import verify_export_file
from connector.extract.responses import check_response, describe_subject
from connector.extract.retry import RetryPolicy
from connector.redaction import mask_text, mask_token, mask_url
from connector.settings import Settings
from connector.windows import Window

log = logging.getLogger(__name__)

#: DiVA's rate limit window, in seconds.
RATE_LIMIT_PERIOD_S = 300.0

#: Headers of poll and download requests. Export files are compressed
#: already, and an identity body keeps byte offsets valid for `Range`.
DOWNLOAD_HEADERS = {"Accept-Encoding": "identity"}


class DivaClient:
    """A client for DiVA's views, schemas and export cycle.

    One client may be shared by the threads of a backfill, which then share
    its request budget.

    Args:
        settings: Connection, retry and budget settings; the credentials and
            the program must be set.
        sleep: Waits the given seconds; tests pass a fake.
        clock: Returns monotonic seconds; tests pass a fake.
        session: The `requests` session to send with; a new one by default.
        budget: A request budget shared with other clients of the same run;
            a new one from `requests_per_5min` by default.

    Raises:
        ConfigError: A token or the program is missing.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        settings.require_credentials()
        self.settings = settings
        self.sleep = sleep
        self.clock = clock

        app = settings.app_token.get_secret_value()
        access = settings.access_token.get_secret_value()
        self._auth = (app, access)
        basic = b64encode(f"{app}:{access}".encode()).decode("ascii")
        self.secrets = [*settings.secrets(), basic]

        self.retry = RetryPolicy.from_settings(
            settings, sleep=sleep, clock=clock, secrets=self.secrets
        )
        self.budget = budget or RequestBudget(
            settings.requests_per_5min, RATE_LIMIT_PERIOD_S, sleep=sleep, clock=clock
        )
        self._session = session or requests.Session()
        self._owns_session = session is None
        self._ready: dict[str, requests.Response] = {}
        self._ready_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close held download responses, and the session if this client made it."""
        with self._ready_lock:
            held_responses = list(self._ready.values())
            self._ready.clear()
        for response in held_responses:
            response.close()
        if self._owns_session:
            self._session.close()

    # Views and schemas

    def get_json(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        action: str | None = None,
        dataset: str | None = None,
    ) -> Any:
        """Send a GET to `path` below the base URL and return the decoded JSON.

        Raises:
            ApiError: DiVA returned an error, or a body that is not
                JSON; the retryable kinds only after the retries ran out.
        """
        action = action or f"GET {path}"
        response = self._get(path, params or {}, action=action, dataset=dataset)
        try:
            return response.json()
        except ValueError as err:
            snippet = mask_text(response.text[:200], self.secrets)
            raise ApiError(
                f"{describe_subject(action, dataset)} returned a body that is not "
                f"JSON: {snippet!r}. Check that base_url points at DiVA's /v2 root.",
                status=response.status_code,
                dataset=dataset,
            ) from err

    def fetch_schema(self, dataset_name: str) -> list[dict[str, Any]]:
        """Fetch the live schema of a dataset (`view/aggregation`).

        Raises:
            ApiError: DiVA refused the request or returned no column list.
        """
        body = self.get_json(
            f"views/{dataset_name.strip('/')}/schema",
            action="Schema request",
            dataset=dataset_name,
        )
        if not isinstance(body, list) or not all(isinstance(c, dict) for c in body):
            raise ApiError(
                f"Schema request for {dataset_name} returned {type(body).__name__}, "
                "not a list of column objects.",
                dataset=dataset_name,
            )
        return body

    def list_views(self) -> list[dict[str, Any]]:
        """List DiVA's views with their date column, endpoint and schema URL.

        Raises:
            ApiError: DiVA refused the request or returned no view list.
        """
        body = self.get_json("views", action="View list request")
        if isinstance(body, dict):
            body = body.get("views", body.get("records"))
        if not isinstance(body, list):
            raise ApiError("View list request returned no list of views.")
        return body

    def count_rows(self, dataset: Dataset, window: Window | None) -> int | None:
        """Return how many rows of `dataset` fall in `window`, or None if unknown.

        Reads `total` from the JSON view, asking for a single record.
        """
        params = {**self._window_params(dataset, window), "count": 1}
        body = self.get_json(
            dataset.path, params, action="Row count request", dataset=dataset.name
        )
        total = body.get("total") if isinstance(body, dict) else None
        if isinstance(total, bool) or not isinstance(total, int):
            log.warning(
                "Row count of %s for %s is unknown: the response has no integer "
                "'total'.",
                dataset.name,
                window,
            )
            return None
        return total

    # The export cycle

    def request_export(
        self,
        dataset: Dataset,
        window: Window | None,
        *,
        compress: str = "gz",
        max_count: int | None = None,
    ) -> str:
        """Ask DiVA to export `window` of `dataset` to a file; return its token.

        Args:
            dataset: The dataset to export.
            window: The range of the dataset's date column; ignored for
                datasets without a date column.
            compress: `gz` (DiVA's default) or `zip`.
            max_count: Row cap of the export; DiVA's default when None.

        Raises:
            ConfigError: `compress` is neither `gz` nor `zip`.
            ApiError: DiVA refused the request or returned no token.
        """
        if compress not in ("gz", "zip"):
            raise ConfigError(f"Invalid compress {compress!r}: expected gz or zip.")
        params: dict[str, Any] = self._window_params(dataset, window)
        # gzip is DiVA's default, and only `compress=zip` is documented.
        if compress == "zip":
            params["compress"] = "zip"
        if max_count is not None:
            params["max_count"] = max_count

        body = self.get_json(
            f"{dataset.path}/csv", params, action="Export request", dataset=dataset.name
        )
        token = body.get("token") if isinstance(body, dict) else None
        if not _is_token(token):
            raise ApiError(
                f"Export request for {dataset.name} returned no usable token "
                f"(got {type(token).__name__}); DiVA's export API may have changed.",
                dataset=dataset.name,
            )
        log.info(
            "Export of %s for %s requested: token %s.",
            dataset.name,
            window or "the default range",
            mask_token(token),
        )
        return token

    def poll_export(self, token: str, *, dataset: str | None = None) -> bool:
        """Ask once whether an export file is ready.

        DiVA sends the file itself as the response to the poll that finds it
        ready, so that response is kept open for `download_export`.

        Returns:
            True when the file is ready, False while DiVA returns `Pending`.

        Raises:
            ExportGoneError: DiVA returned 410 because the file expired.
            ApiError: Any other failure, after the retries.
        """
        self._release(token)
        response = self._get(
            "download",
            {"token": token},
            action="Download poll",
            dataset=dataset,
            stream=True,
            token=token,
            headers=DOWNLOAD_HEADERS,
        )
        if response.status_code != 200:
            response.close()
            log.debug(
                "Export %s is pending (%d).", mask_token(token), response.status_code
            )
            return False

        with self._ready_lock:
            self._ready[token] = response
        log.info("Export %s is ready.", mask_token(token))
        return True

    def download_export(
        self,
        token: str,
        dest_dir: Path,
        *,
        filename: str | None = None,
        dataset: str | None = None,
    ) -> Path:
        """Download an export file into `dest_dir` and verify it.

        The body is streamed to `<filename>.part` and renamed only after it
        passed `verify_export_file`. An interrupted transfer or a file that
        fails the check is fetched again within the retry policy, resuming
        with `Range` when the server supports it.

        Args:
            token: The export token.
            dest_dir: The folder to write to; created when missing.
            filename: The final file name; by default a digest of the token
                plus the token's extensions.
            dataset: The `view/aggregation`, for messages.

        Returns:
            The path of the verified file.

        Raises:
            ExportGoneError: DiVA returned 410 because the file expired.
            DownloadError: The file stayed incomplete or corrupt.
            ApiError: Any other failure, after the retries.
        """
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / (filename or export_filename(token))
        download = PartialDownload(part_path(target))
        download.discard()

        try:
            self.retry.call(
                lambda: self._download_once(token, download, dataset),
                action=f"Download of export {mask_token(token)}",
                dataset=dataset,
            )
        except BaseException:
            download.discard()
            raise

        download.part.replace(target)
        log.info(
            "Export %s downloaded to %s (%d bytes).",
            mask_token(token),
            target,
            target.stat().st_size,
        )
        return target

    # Internals

    def _download_once(
        self, token: str, download: PartialDownload, dataset: str | None
    ) -> None:
        response = self._release(token, close=False)
        offset = 0
        if response is None:
            offset = download.offset()
            response = self._request_download(token, offset, download, dataset)
        with response:
            if response.status_code not in (200, 206):
                raise DownloadError(
                    f"Download of export {mask_token(token)} returned "
                    f"{response.status_code} instead of the file.",
                    token=mask_token(token),
                )
            write_response(response, download, offset)

        try:
            verify_export_file(download.part)
        except DownloadError:
            download.discard()
            raise

    def _request_download(
        self,
        token: str,
        offset: int,
        download: PartialDownload,
        dataset: str | None,
    ) -> requests.Response:
        headers = dict(DOWNLOAD_HEADERS)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            return self._send(
                "download",
                {"token": token},
                action="Download",
                dataset=dataset,
                stream=True,
                token=token,
                headers=headers,
            )
        except PermanentApiError as err:
            if not offset or err.status != 416:
                raise
            # The bytes kept do not fit the file the server has now, so the
            # next attempt fetches it whole.
            download.discard()
            raise DownloadError(
                f"Download of export {mask_token(token)} could not resume at byte "
                f"{offset} (416 Range Not Satisfiable); fetching it again whole.",
                token=mask_token(token),
            ) from err

    def _get(
        self,
        path: str,
        params: dict[str, Any],
        *,
        action: str,
        dataset: str | None,
        stream: bool = False,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        return self.retry.call(
            lambda: self._send(
                path,
                params,
                action=action,
                dataset=dataset,
                stream=stream,
                token=token,
                headers=headers,
            ),
            action=action,
            dataset=dataset,
        )

    def _send(
        self,
        path: str,
        params: dict[str, Any],
        *,
        action: str,
        dataset: str | None,
        stream: bool = False,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        self.budget.acquire()
        url = f"{self.settings.base_url}/{path}"
        query = {"program": self.settings.program, **params}
        log.debug("GET %s", mask_url(f"{url}?{urlencode(query)}"))

        timeout = self.settings.request_timeout_s
        response = self._session.get(
            url,
            params=query,
            auth=self._auth,
            headers=headers,
            timeout=(timeout, timeout),
            stream=stream,
        )
        try:
            check_response(
                response,
                action=action,
                dataset=dataset,
                secrets=self.secrets,
                token=token,
            )
        except BaseException:
            response.close()
            raise
        return response

    def _release(self, token: str, *, close: bool = True) -> requests.Response | None:
        with self._ready_lock:
            response = self._ready.pop(token, None)
        if response is not None and close:
            response.close()
            return None
        return response

    def _window_params(self, dataset: Dataset, window: Window | None) -> dict[str, Any]:
        if dataset.date_column is None or window is None:
            return {}
        return {dataset.date_column: window.to_filter()}


def _is_token(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 1000
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )
