"""Masking of secrets in log records, error messages and URLs.

Three kinds of value must never reach a log line or an error message in clear.
They are the Basic auth tokens (and any password in a warehouse URL),
credentials written into a URL, and DiVA export tokens, which name a
downloadable file.

Export tokens are shortened to a recognisable prefix so that a user can still
tell two exports apart: `3f9c2a7e5b1d4c08.csv.gz` becomes `3f9c2a….csv.gz`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"

#: Characters of an export token kept in clear when it is masked.
TOKEN_PREFIX_CHARS = 6

_TOKEN_EXTENSION = re.compile(r"((?:\.[A-Za-z0-9]{1,8}){1,3})$")
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]*:[^/\s@]*@"
)
_TOKEN_QUERY = re.compile(r"(?P<name>(?<!\w)token=)(?P<value>[^&#\s'\")]+)")
_TOKEN_JSON = re.compile(r'(?P<name>"token"\s*:\s*")(?P<value>[^"]+)')
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:access_token|app_token|password|secret)=)[^&#\s'\")]+",
    re.IGNORECASE,
)


def mask_token(token: object) -> str:
    """Shorten an export token to its first characters and its extensions.

    `3f9c2a7e5b1d4c08.csv.gz` becomes `3f9c2a….csv.gz`. A token too short to
    keep a prefix without giving most of it away is shown as `…` plus its
    extensions. Non-string values (None) are shown as `(none)`.
    """
    if not isinstance(token, str) or not token:
        return "(none)"
    if "…" in token:
        return token

    match = _TOKEN_EXTENSION.search(token)
    extension = match.group(1) if match else ""
    stem = token[: len(token) - len(extension)]
    if len(stem) <= 2 * TOKEN_PREFIX_CHARS:
        return f"…{extension}"
    return f"{stem[:TOKEN_PREFIX_CHARS]}…{extension}"


def mask_url(url: str) -> str:
    """Mask the credentials and the export token in a URL.

    User name and password written into the URL become `***`. A `token=`
    value, or a JSON `"token"` member, is shortened with `mask_token`. Query
    values named like a credential (`access_token`, `password`, ...) become
    `***`. The rest of the URL is kept, so the masked form still shows which
    endpoint failed.
    """
    masked = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}:{MASK}@", url)
    masked = _SECRET_QUERY.sub(lambda m: f"{m.group('name')}{MASK}", masked)
    for pattern in (_TOKEN_QUERY, _TOKEN_JSON):
        masked = pattern.sub(
            lambda m: f"{m.group('name')}{mask_token(m.group('value'))}", masked
        )
    return masked


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in `text` with `***`.

    Secrets are also matched in their URL-encoded forms, since a password
    may appear inside a URL. Longer secrets are replaced first so that a
    secret containing another one is masked whole.
    """
    variants: set[str] = set()
    for secret in secrets:
        if secret:
            variants.update({secret, quote(secret, safe=""), quote_plus(secret)})

    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, MASK)
    return text


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask secrets, URL credentials and `token=` query values in free text."""
    return mask_url(mask_secrets(text, secrets))


def scrub_exception(err: BaseException, secrets: Iterable[str] = ()) -> None:
    """Mask the arguments of an exception and of every exception it chains.

    Exceptions raised by `requests` and `urllib3` carry the request URL, and
    with it the export token, in their message. A traceback prints the whole
    chain, so each linked exception is masked in place before it is chained
    to one of the connector's errors.
    """
    secrets = list(secrets)
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(_scrub_argument(arg, secrets) for arg in current.args)
        stack.extend((current.__cause__, current.__context__))


def _scrub_argument(arg: object, secrets: list[str]) -> object:
    if isinstance(arg, (int, float, bool)) or arg is None:
        return arg
    text = str(arg)
    masked = mask_text(text, secrets)
    return arg if masked == text else masked


class SecretsFilter(logging.Filter):
    """A logging filter that masks secrets and export tokens in every record.

    The message is rendered with its arguments, masked, and stored back as a
    plain message, so every formatter downstream gets only the masked text.
    An attached traceback is rendered and masked as well. Install it on the
    handlers, not on a logger: a logger's filters do not see records that
    propagate up from child loggers such as `urllib3`, which logs request
    URLs at DEBUG level.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # A list is kept by reference and read at every record, so secrets
        # added to it after the filter was installed are masked as well.
        self.secrets = secrets if isinstance(secrets, list) else list(secrets)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; always keep it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg} {record.args}"
        record.msg = mask_text(message, self.secrets)
        record.args = None

        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info, self.secrets)
        return True
