"""The sandbox server object and the blocking entry point of the command line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import ThreadingHTTPServer
from threading import Lock, Thread
from typing import Any, Self

from connector.sandbox.catalog import ViewSpec, load_catalog
from connector.sandbox.data import DataGenerator, Row
from connector.sandbox.exports import ExportStore
from connector.sandbox.faults import Faults
from connector.sandbox.files import TIMESTAMP_FORMATS, format_text
from connector.sandbox.query import Query, sort_rows
from connector.sandbox.routes import BASE_PATH, DivaRequestHandler

log = logging.getLogger(__name__)

DEFAULT_APP_TOKEN = "sandbox-app"
DEFAULT_ACCESS_TOKEN = "sandbox-secret"
DEFAULT_PROGRAM = "sandbox"
DEFAULT_PORT = 8765
DEFAULT_ROWS_PER_DAY = 200


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox served; credentials are never recorded."""

    method: str
    path: str
    params: dict[str, str]
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sandbox: Sandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this from inside its `except` block.
        log.debug("Error while serving %s", client_address, exc_info=True)  # noqa: LOG014


class Sandbox:
    """A DiVA-compatible server on loopback, serving deterministic data.

    Use it as a context manager, or call `start` and `stop`. The same seed and
    options always serve the same rows and the same export bytes.

    Args:
        seed: Seed of the data generator.
        rows_per_day: Rows per day of a detail view.
        app_token: Expected HTTP Basic user name.
        access_token: Expected HTTP Basic password.
        program: Program name(s) the credentials may read, comma-separated.
        pending_polls: Download polls that return `Pending` before a file is ready.
        expiry_s: Seconds an export file stays downloadable after completion.
        row_cap: Maximum rows of an export, below DiVA's own limits.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.
        pending_s: Seconds an export stays `Pending`, besides the polls.
        revision: Data revision; above 0 every tenth row has new values.
        today: The day the data ends before; defaults to the UTC date.
        timestamp_format: `plain` or `iso` timestamps in CSV files.
        faults: Fault settings and armed faults, see `Faults.configure`.
        clock: Returns the current time in seconds; for expiry and pending.
    """

    def __init__(
        self,
        seed: int = 1,
        rows_per_day: int = 40,
        app_token: str = DEFAULT_APP_TOKEN,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        program: str | Iterable[str] = DEFAULT_PROGRAM,
        pending_polls: int = 1,
        expiry_s: float = 3600.0,
        row_cap: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        pending_s: float = 0.0,
        revision: int = 0,
        today: date | None = None,
        timestamp_format: str = "plain",
        faults: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if timestamp_format not in TIMESTAMP_FORMATS:
            raise ValueError(
                f"Invalid timestamp_format {timestamp_format!r}: use one of {TIMESTAMP_FORMATS}."
            )
        self.seed = seed
        self.app_token = app_token
        self.access_token = access_token
        self.program = program if isinstance(program, str) else ",".join(program)
        self.programs = tuple(p.strip() for p in self.program.split(",") if p.strip())
        self.host = host
        self.port = port
        self.timestamp_format = timestamp_format
        self.clock = clock
        self.fixed_today = today

        self.faults = Faults(pending_polls=pending_polls, row_cap=row_cap)
        self.faults.pending_s = pending_s
        self.faults.configure(faults or {})
        self.generator = DataGenerator(seed, rows_per_day, self.programs)
        self.generator.revision = revision
        self.exports = ExportStore(clock, expiry_s)
        self.requests: list[RequestRecord] = []
        self._requests_lock = Lock()
        self._server: _Server | None = None
        self._thread: Thread | None = None

    @property
    def catalog(self) -> dict[str, ViewSpec]:
        """The served views, by `view/aggregation` name."""
        return load_catalog()

    @property
    def base_url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:54321/data/v2`."""
        return f"http://{self.host}:{self.port}{BASE_PATH}"

    @property
    def revision(self) -> int:
        """The data revision; changing it changes every tenth row."""
        return self.generator.revision

    @revision.setter
    def revision(self, value: int) -> None:
        self.generator.revision = value

    @property
    def row_cap(self) -> int | None:
        """Maximum rows of an export, the same switch as `faults.row_cap`."""
        return self.faults.row_cap

    @row_cap.setter
    def row_cap(self, value: int | None) -> None:
        self.faults.row_cap = value

    @property
    def pending_polls(self) -> int:
        """Polls that return `Pending`; the same switch as `faults.pending_polls`."""
        return self.faults.pending_polls

    @pending_polls.setter
    def pending_polls(self, value: int) -> None:
        self.faults.pending_polls = value

    @property
    def expiry_s(self) -> float:
        """Seconds an export file stays downloadable after completion."""
        return self.exports.expiry_s

    @expiry_s.setter
    def expiry_s(self, value: float) -> None:
        self.exports.expiry_s = value

    def start(self) -> Sandbox:
        """Start serving in a background thread and return self."""
        self._server = _Server((self.host, self.port), DivaRequestHandler)
        self._server.sandbox = self
        self.port = self._server.server_address[1]
        # A short poll interval makes `stop` quick, which keeps tests fast.
        self._thread = Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="diva-sandbox",
            daemon=True,
        )
        self._thread.start()
        log.debug("Sandbox serving at %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
            log.info("Sandbox at %s stopped", self.base_url)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def today(self) -> date:
        """Return the current day; the served data ends the day before."""
        if self.fixed_today is not None:
            return self.fixed_today
        return datetime.fromtimestamp(self.clock(), tz=UTC).date()

    def select_rows(self, spec: ViewSpec, query: Query) -> list[Row]:
        """Return the rows of `spec` that match `query`, in its requested order."""
        has_program = spec.column("program") is not None
        rows = [
            row
            for row in self.generator.rows_for_days(
                spec, query.first_day, query.last_day
            )
            if (not has_program or row["program"] in query.programs)
            and all(condition.matches(row) for condition in query.conditions)
        ]
        if query.sort:
            sort_rows(rows, query.sort)
        return rows

    def expected_rows(
        self, dataset_name: str, start: date, end: date
    ) -> list[dict[str, str | None]]:
        """Return the rows an export of `start..end` (days, inclusive) holds.

        Values are the CSV cell texts, None for empty cells, in export order.
        A view without a date column returns all its rows.

        Raises:
            KeyError: No schema file describes `dataset_name`.
        """
        spec = self.catalog.get(dataset_name.strip("/"))
        if spec is None:
            raise KeyError(
                f"Unknown dataset {dataset_name!r}; known: {', '.join(self.catalog)}."
            )
        last = min(end, self.today() - timedelta(days=1))
        return [
            {
                name: format_text(row[name], self.timestamp_format)
                for name in spec.column_names
            }
            for row in self.generator.rows_for_days(spec, start, last)
        ]

    def record_request(
        self, method: str, path: str, params: list[tuple[str, str]], status: int
    ) -> None:
        """Append one served request to `requests`."""
        with self._requests_lock:
            self.requests.append(RequestRecord(method, path, dict(params), status))


def run_server(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    seed: int = 1,
    rows_per_day: int = DEFAULT_ROWS_PER_DAY,
    app_token: str = DEFAULT_APP_TOKEN,
    access_token: str = DEFAULT_ACCESS_TOKEN,
    program: str = DEFAULT_PROGRAM,
    **options: Any,
) -> None:
    """Serve the sandbox until interrupted (Ctrl-C), logging its URL.

    Args:
        host: Address to listen on.
        port: Port to listen on.
        seed: Seed of the data generator.
        rows_per_day: Rows per day of a detail view.
        app_token: Expected HTTP Basic user name.
        access_token: Expected HTTP Basic password.
        program: Program name(s) the credentials may read, comma-separated.
        **options: Further `Sandbox` options, e.g. `pending_polls` or `faults`.
    """
    sandbox = Sandbox(
        seed=seed,
        rows_per_day=rows_per_day,
        app_token=app_token,
        access_token=access_token,
        program=program,
        host=host,
        port=port,
        **options,
    )
    with sandbox:
        log.info(
            "DiVA sandbox ready at %s (program %s)", sandbox.base_url, sandbox.program
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("Stopping the sandbox")
