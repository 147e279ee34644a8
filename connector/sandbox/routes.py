"""The sandbox's HTTP routes, shaped like DiVA's under `/data/v2`.

| route | response |
|---|---|
| `GET /views` | the views with their date column, endpoint and schema URL |
| `GET /views/{view}/{agg}` | JSON envelope with at most 10,000 records |
| `GET /views/{view}/{agg}/schema` | the view's schema objects |
| `GET /views/{view}/{agg}/csv` | 202 with an export token |
| `GET /download?token=...` | 202 `Pending`, then 200 with the file, then 410 |

Every route needs HTTP Basic auth; all but `/download` need `program`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from connector.sandbox import exports
from connector.sandbox.files import build_archive, format_json, render_csv
from connector.sandbox.query import (
    DEFAULT_EXPORT_ROWS,
    ApiProblem,
    Query,
    parse_query,
)
from connector.sandbox.transfer import send_download

if TYPE_CHECKING:
    from connector.sandbox.catalog import ViewSpec
    from connector.sandbox.server import Sandbox

log = logging.getLogger(__name__)

BASE_PATH = "/data/v2"
#: Hours (UTC) at which DiVA refreshes its data.
REFRESH_HOURS = (0, 8, 16)


class DivaRequestHandler(BaseHTTPRequestHandler):
    """Serve one connection's requests the way DiVA does."""

    protocol_version = "HTTP/1.1"
    server_version = "DiVA-sandbox/1.0"
    #: The status of the response to the current GET, 0 until one is sent.
    status_sent = 0
    #: The path and query parameters of the current GET, for the request log.
    request_record: tuple[str, list[tuple[str, str]]] | None = None

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox that owns this server."""
        return self.server.sandbox  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        """Route a GET request and record it in the sandbox's request log."""
        url = urlsplit(self.path)
        params = parse_qsl(url.query, keep_blank_values=True)
        self.status_sent = 0
        self.request_record = (url.path, params)
        try:
            self._check_auth()
            route, spec = self._resolve(url.path)
            self._inject_faults(route)
            if route != "download":
                self._check_program(params)
            self._dispatch(route, spec, params)
        except ApiProblem as problem:
            log.debug("%s returned %d: %s", url.path, problem.status, problem.message)
            body = {"error_code": problem.code, "message": problem.message}
            self.send_json(problem.status, body, problem.headers)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("Client closed the connection during %s", url.path)
        except Exception:
            # A sandbox bug must reach the client as a 500, not a silent hang-up.
            log.exception("Sandbox failed on %s", url.path)
            body = {
                "error_code": "500000",
                "message": "The sandbox failed; see its log.",
            }
            self.send_json(500, body)
        finally:
            if not self.status_sent:
                # No response was sent, so the request is logged with status 0.
                self.sandbox.record_request("GET", url.path, params, 0)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Log the request with its status, then send the status line.

        The request is logged before any byte of the response leaves, so a
        client that has read a response finds its request in the log.
        """
        if not self.status_sent and self.request_record is not None:
            path, params = self.request_record
            self.sandbox.record_request("GET", path, params, code)
        self.status_sent = code
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        """Send http.server's access log to the module logger, not stderr."""
        log.debug("%s " + format, self.address_string(), *args)

    def send_json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        """Send `payload` as a JSON response."""
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_bytes(status, body, "application/json", headers)

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a whole response body with its Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _check_auth(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        valid = (
            scheme.lower() == "basic"
            and hmac.compare_digest(user.encode(), self.sandbox.app_token.encode())
            and hmac.compare_digest(
                password.encode(), self.sandbox.access_token.encode()
            )
        )
        if not valid:
            raise ApiProblem(
                401,
                "401001",
                "Invalid credentials: check the application and access tokens.",
            )

    def _resolve(self, path: str) -> tuple[str, ViewSpec | None]:
        catalog = self.sandbox.catalog
        rest = (
            path.removeprefix(BASE_PATH).rstrip("/")
            if path.startswith(BASE_PATH)
            else None
        )
        if rest == "/views":
            return "views", None
        if rest == "/download":
            return "download", None
        if rest is not None and rest.startswith("/views/"):
            name = rest.removeprefix("/views/")
            for suffix, route in (("/schema", "schema"), ("/csv", "export")):
                if name.endswith(suffix) and name.removesuffix(suffix) in catalog:
                    return route, catalog[name.removesuffix(suffix)]
            if name in catalog:
                return "json", catalog[name]
            raise ApiProblem(404, "404001", _unknown_view_message(name, catalog))
        raise ApiProblem(404, "404001", f"No such endpoint: {path}.")

    def _inject_faults(self, route: str) -> None:
        faults = self.sandbox.faults
        if (throttle := faults.take("throttle", route)) is not None:
            headers = {}
            if throttle["retry_after"] == "seconds":
                headers["Retry-After"] = str(round(throttle["delay_s"]))
            elif throttle["retry_after"] == "http-date":
                moment = self.sandbox.clock() + throttle["delay_s"]
                headers["Retry-After"] = formatdate(moment, usegmt=True)
            raise ApiProblem(429, "429001", "Rate limit exceeded.", headers)
        if (failure := faults.take("fail", route)) is not None:
            status = failure["status"]
            raise ApiProblem(
                status, f"{status}001", "The sandbox failed this request on purpose."
            )

    def _check_program(self, params: list[tuple[str, str]]) -> None:
        values = [value for name, value in params if name == "program"]
        if not values or not values[-1].strip():
            raise ApiProblem(400, "400001", "The program parameter is required.")
        for program in (part.strip() for part in values[-1].split(",")):
            if program and program not in self.sandbox.programs:
                raise ApiProblem(
                    403, "403003", f"Access to program {program} is forbidden."
                )

    def _dispatch(
        self, route: str, spec: ViewSpec | None, params: list[tuple[str, str]]
    ) -> None:
        if route == "views":
            self.send_json(200, self._list_views())
        elif route == "schema":
            self.send_json(200, [column.schema_object for column in spec.columns])
        elif route == "json":
            self._answer_json(spec, parse_query(spec, params, self.sandbox.today()))
        elif route == "export":
            self._answer_export(spec, parse_query(spec, params, self.sandbox.today()))
        else:
            self._answer_download(params)

    def _list_views(self) -> list[dict[str, Any]]:
        root = f"http://{self.headers.get('Host', 'localhost')}{BASE_PATH}"
        return [
            {
                "view": spec.view,
                "aggregation": spec.aggregation,
                "date_column": spec.date_column,
                "endpoint": f"{root}/views/{name}",
                "schema": f"{root}/views/{name}/schema",
            }
            for name, spec in self.sandbox.catalog.items()
        ]

    def _answer_json(self, spec: ViewSpec, query: Query) -> None:
        rows = self.sandbox.select_rows(spec, query)
        fields = query.fields or spec.column_names
        records = [
            {name: format_json(row[name]) for name in fields}
            for row in rows[: query.count]
        ]
        self.send_json(
            200,
            {
                "total": len(rows),
                "is_more": len(rows) > len(records),
                "count": len(records),
                "info": f"Sandbox data for {spec.name}, seed {self.sandbox.seed}.",
                "start_date": query.first_day.isoformat() if query.first_day else None,
                "end_date": query.last_day.isoformat() if query.last_day else None,
                "last_run_time": self._last_run_time(),
                "schema": [spec.column(name).schema_object for name in fields],
                "records": records,
            },
        )

    def _last_run_time(self) -> str:
        now = datetime.fromtimestamp(self.sandbox.clock(), tz=UTC)
        hour = max(h for h in REFRESH_HOURS if h <= now.hour)
        run = now.replace(hour=hour, minute=0, second=0, microsecond=0)
        return run.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _answer_export(self, spec: ViewSpec, query: Query) -> None:
        sandbox = self.sandbox
        cap = query.max_count or DEFAULT_EXPORT_ROWS
        if sandbox.faults.row_cap is not None:
            cap = min(cap, sandbox.faults.row_cap)
        # NOTE: the whole file is built in memory when the export is requested,
        # which suits test and demo volumes but not millions of rows.
        rows = sandbox.select_rows(spec, query)[:cap]

        fields = query.fields or spec.column_names
        csv_bytes = render_csv(rows, fields, sandbox.timestamp_format)
        member = f"{spec.name.replace('/', '_')}.csv"
        content = build_archive(csv_bytes, query.compress, member)
        export = sandbox.exports.add(
            content,
            query.compress,
            len(rows),
            sandbox.faults.pending_polls,
            sandbox.faults.pending_s,
        )
        log.info(
            "Export %s of %s created with %d rows", export.token, spec.name, len(rows)
        )
        self.send_json(202, {"token": export.token})

    def _answer_download(self, params: list[tuple[str, str]]) -> None:
        token = dict(params).get("token", "")
        if not token:
            raise ApiProblem(400, "400001", "The token parameter is required.")
        state, export = self.sandbox.exports.poll(token)

        if state == exports.UNKNOWN:
            raise ApiProblem(404, "404002", f"Unknown export token {token}.")
        if state == exports.PENDING:
            self.send_bytes(202, b"Pending", "text/plain; charset=utf-8")
            return
        if (
            state == exports.READY
            and self.sandbox.faults.take("expire", "download") is not None
        ):
            self.sandbox.exports.expire(export)
            state = exports.EXPIRED
        if state == exports.EXPIRED:
            raise ApiProblem(
                410, "410001", f"The export {token} has expired; request a new export."
            )
        send_download(self, export, self.sandbox.faults)


def _unknown_view_message(name: str, catalog: dict[str, ViewSpec]) -> str:
    view, _, aggregation = name.partition("/")
    levels = sorted(spec.aggregation for spec in catalog.values() if spec.view == view)
    if levels:
        return (
            f"The view {view} has no aggregation {aggregation or '(none)'}; "
            f"available: {', '.join(levels)}."
        )
    return f"Unknown view {view}; GET {BASE_PATH}/views lists the views."
