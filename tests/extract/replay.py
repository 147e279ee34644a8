"""A loopback HTTP server that plays recorded exchanges of DiVA's export cycle.

It reads the `.json` case files of `tests/cases` (see their README): each
scenario is a list of exchanges, a request to expect and the response to give,
served in order. Besides the case file keys (`json`, `body_text`,
`body_ref`, `close_after_bytes`, `chunk_size`, `when_request_has_header`,
`repeat_last`), tests may use two of their own in a response:

- `honour_range`: respond to a `Range: bytes=N-` request with 206 and the rest
  of the body, as a server that supports resuming does.
- `delay_s`: wait this long before responding, to provoke a read timeout.

Every request is recorded, and every way a request differs from the one
expected is listed in `mismatches`, so a test can assert there were none.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

CASES_DIR = Path(__file__).resolve().parents[1] / "cases"

#: DiVA's default compression, which the connector does not send explicitly.
DEFAULT_QUERY = {"compress": "gz"}


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def load_case(name: str) -> dict[str, Any]:
    """Read a case file of `tests/cases` and check its bodies' digests."""
    case = json.loads((CASES_DIR / name).read_text(encoding="utf-8"))
    for body_name, body in case.get("bodies", {}).items():
        data = base64.b64decode(body["base64"])
        assert len(data) == body["length"], body_name
        assert hashlib.sha256(data).hexdigest() == body["sha256"], body_name
    return case


def case_body(case: dict[str, Any], name: str) -> bytes:
    """Return a body of a case file, decoded."""
    return base64.b64decode(case["bodies"][name]["base64"])


class ReplayServer:
    """Serve a list of exchanges on 127.0.0.1, in order, one per request.

    Args:
        exchanges: The exchanges in case-file form.
        bodies: The case's `bodies`, for `body_ref`.
        repeat_last: Repeat the last response for every request beyond the list.
        prefix: The path the base URL ends in, stripped before matching.
    """

    def __init__(
        self,
        exchanges: list[dict[str, Any]],
        bodies: dict[str, Any] | None = None,
        *,
        repeat_last: bool = False,
        prefix: str = "/data/v2",
    ) -> None:
        self.exchanges = exchanges
        self.bodies = {
            name: base64.b64decode(body["base64"])
            for name, body in (bodies or {}).items()
        }
        self.repeat_last = repeat_last
        self.prefix = prefix
        self.requests: list[RecordedRequest] = []
        self.mismatches: list[str] = []
        self._served = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    @classmethod
    def from_case(cls, case_file: str, scenario: str, **options: Any) -> ReplayServer:
        """Build a server for one scenario of a case file."""
        case = load_case(case_file)
        for candidate in case["scenarios"]:
            if candidate["name"] == scenario:
                return cls(
                    candidate["exchanges"],
                    case.get("bodies"),
                    repeat_last=candidate.get("repeat_last", False),
                    **options,
                )
        raise KeyError(f"{case_file} has no scenario {scenario!r}")

    @property
    def base_url(self) -> str:
        """The URL to give the connector as its base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.prefix}"

    @property
    def unserved(self) -> int:
        """How many listed exchanges no request has reached yet."""
        return max(0, len(self.exchanges) - self._served)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def next_exchange(self, request: RecordedRequest) -> dict[str, Any] | None:
        """Record a request and return the exchange that responds to it."""
        with self._lock:
            self.requests.append(request)
            if self._served < len(self.exchanges):
                exchange = self.exchanges[self._served]
                self._served += 1
            elif self.repeat_last and self.exchanges:
                exchange = self.exchanges[-1]
            else:
                self.mismatches.append(f"unexpected request {request.path}")
                return None
            self._check(request, exchange)
            return exchange

    def _check(self, request: RecordedRequest, exchange: dict[str, Any]) -> None:
        expected = exchange["request"]
        number = len(self.requests)
        if request.method != expected.get("method", "GET"):
            self.mismatches.append(f"request {number}: method {request.method}")
        if request.path != expected["path"]:
            self.mismatches.append(
                f"request {number}: path {request.path}, expected {expected['path']}"
            )
        for name, value in expected.get("query", {}).items():
            actual = request.query.get(name)
            if actual is None and DEFAULT_QUERY.get(name) == value:
                continue
            if actual != value:
                self.mismatches.append(
                    f"request {number}: query {name}={actual!r}, expected {value!r}"
                )
        required_headers = exchange["response"].get("when_request_has_header", {})
        for name, value in required_headers.items():
            if request.headers.get(name.lower()) != value:
                self.mismatches.append(
                    f"request {number}: header {name}="
                    f"{request.headers.get(name.lower())!r}, expected {value!r}"
                )

    def body_of(self, response: dict[str, Any]) -> bytes:
        """Return the body bytes a response sends."""
        if "json" in response:
            return json.dumps(response["json"]).encode("utf-8")
        if "body_text" in response:
            return response["body_text"].encode("utf-8")
        if "body_ref" in response:
            return self.bodies[response["body_ref"]]
        if "body_bytes" in response:
            return response["body_bytes"]
        return b""


def _handler_for(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            path = split.path
            if path.startswith(server.prefix):
                path = path[len(server.prefix) :] or "/"
            request = RecordedRequest(
                method="GET",
                path=path,
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                headers={name.lower(): value for name, value in self.headers.items()},
            )
            exchange = server.next_exchange(request)
            if exchange is None:
                self._send_plain(418, b"replay: no exchange left for this request")
                return
            self._answer(exchange["response"], request)

        def _answer(self, response: dict[str, Any], request: RecordedRequest) -> None:
            time.sleep(response.get("delay_s", 0))
            body = server.body_of(response)
            status = response["status"]
            headers = dict(response.get("headers", {}))
            if "json" in response:
                headers.setdefault("Content-Type", "application/json")

            requested = request.headers.get("range", "")
            if response.get("honour_range") and requested.startswith("bytes="):
                start = int(requested[len("bytes=") :].split("-")[0])
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                headers["Content-Length"] = str(len(body) - start)
                status, body = 206, body[start:]

            chunk_size = response.get("chunk_size")
            if chunk_size:
                headers.pop("Content-Length", None)
                headers["Transfer-Encoding"] = "chunked"
            else:
                headers.setdefault("Content-Length", str(len(body)))

            # send_response would add a second Date header beside the case's.
            self.send_response_only(status)
            if "Date" not in headers:
                headers["Date"] = self.date_time_string()
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            cut = response.get("close_after_bytes")
            if chunk_size:
                self._write_chunked(body, chunk_size, cut)
            else:
                self.wfile.write(body if cut is None else body[:cut])
            if cut is not None:
                self._drop_connection()

        def _write_chunked(self, body: bytes, size: int, cut: int | None) -> None:
            sent = 0
            for start in range(0, len(body), size):
                chunk = body[start : start + size]
                self.wfile.write(f"{len(chunk):x}\r\n".encode())
                if cut is not None and sent + len(chunk) > cut:
                    self.wfile.write(chunk[: cut - sent])
                    return
                self.wfile.write(chunk + b"\r\n")
                sent += len(chunk)
            self.wfile.write(b"0\r\n\r\n")

        def _drop_connection(self) -> None:
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _send_plain(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output free of access logs."""

    return Handler
