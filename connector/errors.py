"""The connector's one error tree, sorted by what the caller should do.

- `ConfigError`: fix the settings or the command line (exit code 2).
- `ApiError` and its children: DiVA refused or failed a request.
  `TransientApiError` is retried first and raised only when retries run out;
  `PermanentApiError` is raised at once.
- `ExportError` and its children: the export cycle could not deliver a whole
  file (expired too often, timed out, truncated at the row cap, broken
  download).
- `DataError` and its children: a file or a value does not match the
  dataset's schema.
- `LoadError`: a sink could not store the rows; the sink is left as it was.

Every error carries its context as attributes so that the command line and
tests can inspect it without parsing the message.
"""

from __future__ import annotations

from typing import Any


class DivaError(Exception):
    """Root of every error raised by the connector."""

    exit_code = 1

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        for name, value in context.items():
            setattr(self, name, value)


class ConfigError(DivaError, ValueError):
    """A setting or command-line value is missing or invalid."""

    exit_code = 2


class ApiError(DivaError):
    """DiVA returned an error for a request.

    Attributes:
        status: HTTP status code, or None when no response arrived.
        dataset: The `view/aggregation` the request was for, when known.
        code: DiVA's six-digit error code from the body, when present.
    """

    status: int | None = None
    dataset: str | None = None
    code: str | None = None


class TransientApiError(ApiError):
    """A rate limit, server error or network fault that outlasted the retries."""


class PermanentApiError(ApiError):
    """A request DiVA will never accept as sent (400, 404)."""


class AuthError(PermanentApiError, ConfigError):
    """DiVA refused the credentials or the program (401, 403)."""

    exit_code = 2


class ExportError(DivaError):
    """The export cycle could not deliver a complete file."""


class ExportExpiredError(ExportError):
    """The export file expired (410) more often than the re-export limit allows."""


class ExportTimeoutError(ExportError):
    """The export stayed `Pending` past the poll deadline."""


class TruncatedExportError(ExportError):
    """A window has more rows than one export can carry, even after splitting."""


class DownloadError(ExportError):
    """A downloaded file is incomplete or corrupt."""


class DataError(DivaError, ValueError):
    """A file or value does not match the dataset's schema.

    Attributes:
        path: The file being read, when known.
        line: 1-based line number, counting the header as line 1.
        column: The column name.
        value: The offending text, shortened for display.
    """

    path: str | None = None
    line: int | None = None
    column: str | None = None
    value: str | None = None


class SchemaError(DataError):
    """A schema file or a CSV header is invalid (unknown dataset, duplicate
    column, required column missing)."""


class LoadError(DivaError):
    """A sink could not store the rows; it was left as it was before the load."""


class EmptyRunError(DivaError):
    """A run found zero rows where earlier runs found some (`fail_on_empty`)."""
