"""Classify DiVA's HTTP responses: success, retry, expired export, or failure.

DiVA's error bodies are not documented. A JSON object with a `message` is
common, and error codes are six digits: the HTTP status followed by three
more (`403003`). Bodies of any other shape are shown as text, shortened.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from http import HTTPStatus

import requests

from connector.errors import (
    AuthError,
    ExportExpiredError,
    PermanentApiError,
    TransientApiError,
)
from connector.redaction import mask_text, mask_token

#: Characters of a response body kept in an error message.
MAX_BODY_CHARS = 300

#: Meaning of each 403 sub-code, from DiVA's documentation.
FORBIDDEN_CODES = {
    "403001": "a requested field is not permitted for these credentials",
    "403002": "a filter is not permitted for these credentials",
    "403003": "the program is forbidden for these credentials; check DIVA_PROGRAM",
}


class RetryableResponseError(TransientApiError):
    """A 429 or 5xx response, which the retry policy may try again.

    Attributes:
        status: The HTTP status code.
        code: DiVA's six-digit error code, when the body has one.
        detail: DiVA's message, masked and shortened.
        retry_after_s: Seconds the server asked to wait, or None.
    """

    detail: str = ""
    retry_after_s: float | None = None


class ExportGoneError(ExportExpiredError):
    """DiVA returned 410 Gone because the export file expired; it must be
    requested again. The export state machine catches it and exports anew."""

    token: str | None = None
    """The expired export token, masked."""


def check_response(
    response: requests.Response,
    *,
    action: str,
    dataset: str | None,
    secrets: list[str],
    token: str | None = None,
) -> None:
    """Raise the connector's error for a failed response; return on success.

    Args:
        response: The response; its body is read only when the status is an
            error, so a streamed download stays unread on success.
        action: What was requested, for messages (e.g. `Export request`).
        dataset: The `view/aggregation`, when the request was for one.
        secrets: Values to mask in messages.
        token: The export token the request was about, shown masked.

    Raises:
        RetryableResponseError: 429 or 5xx.
        ExportGoneError: 410.
        AuthError: 401 or 403.
        PermanentApiError: Any other 4xx status.
    """
    status = response.status_code
    if status < 400:
        return

    detail, code = diva_message(response, secrets)
    reason = _reason(status)
    subject = describe_subject(action, dataset)
    if token is not None:
        subject = f"{subject} of export {mask_token(token)}"
    context = {"status": status, "dataset": dataset, "code": code}

    if status == 429 or status >= 500:
        raise RetryableResponseError(
            f"{subject} failed: DiVA returned {status} {reason}: {detail}",
            detail=detail,
            retry_after_s=parse_retry_after(response),
            **context,
        )
    if status == 410:
        raise ExportGoneError(
            f"{subject} failed: DiVA returned 410 Gone ({detail}); the export "
            "file expired and must be requested again.",
            token=mask_token(token),
            **context,
        )
    if status in (401, 403):
        raise AuthError(_auth_message(subject, status, code, detail), **context)
    if status == 404:
        raise PermanentApiError(
            f"{subject} failed: DiVA returned 404 Not Found ({detail}); check the "
            "dataset name (view/aggregation) and the base URL.",
            **context,
        )
    raise PermanentApiError(
        f"{subject} failed: DiVA returned {status} {reason}: {detail}. DiVA will "
        "not accept this request as sent; check the filters and settings.",
        **context,
    )


def describe_subject(action: str, dataset: str | None) -> str:
    """Return `action for dataset`, or `action` alone when there is no dataset."""
    return f"{action} for {dataset}" if dataset else action


def diva_message(
    response: requests.Response, secrets: list[str]
) -> tuple[str, str | None]:
    """Return DiVA's error message, masked and shortened, and its error code."""
    text = response.content.decode("utf-8", errors="replace").strip()
    message, code = text, None
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("error") or text)
        raw_code = body.get("error_code") or body.get("code")
        code = str(raw_code) if raw_code is not None else None

    message = mask_text(" ".join(message.split()), secrets) or "(empty body)"
    if len(message) > MAX_BODY_CHARS:
        message = message[:MAX_BODY_CHARS] + "…"
    return message, code


def parse_retry_after(response: requests.Response) -> float | None:
    """Return the wait a `Retry-After` header requests, in seconds, or None.

    The header contains either seconds or an HTTP date. A date is measured
    against the response's own `Date` header when present, so that a clock
    difference between DiVA and this machine does not change the wait, and
    against this machine's clock otherwise. A date in the past means no wait.
    """
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)

    try:
        target = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    try:
        now = parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError, IndexError):
        now = time.time()
    return max(0.0, target - now)


def _auth_message(subject: str, status: int, code: str | None, detail: str) -> str:
    if status == 401:
        return (
            f"{subject} failed: DiVA refused the credentials (401 Unauthorized: "
            f"{detail}); check DIVA_APP_TOKEN and DIVA_ACCESS_TOKEN."
        )
    meaning = FORBIDDEN_CODES.get(code or "", "the credentials may not read this data")
    shown_code = f" {code}" if code else ""
    return (
        f"{subject} failed: DiVA returned 403 Forbidden{shown_code}: {meaning} "
        f"({detail}). Ask the program's administrator for access or change the "
        "request."
    )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"
