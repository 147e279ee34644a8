"""Command-line output: log lines, the live progress line and run summaries.

The library only logs through module loggers; this module decides where
those lines go, masks every secret in them, and prints run summaries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import click

#: Secret values masked in every line the command prints or logs.
secrets: list[str] = []


def mask(text: str) -> str:
    """Return `text` with every known secret masked."""
    from connector.redaction import mask_secrets

    return mask_secrets(text, secrets)


@contextlib.contextmanager
def live_progress(enabled: bool) -> Iterator[None]:
    """Show a live progress line on a terminal; do nothing elsewhere."""
    from connector import progress

    if not enabled or not show_progress or not sys.stderr.isatty():
        yield
        return

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    with progress.tracking() as counters:

        class _Line:
            def __rich__(self) -> Text:
                return Text(progress.describe(counters.snapshot()), style="dim")

        with Live(
            _Line(),
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=True,
            redirect_stderr=True,
        ):
            yield


#: False after -q: no progress line, only warnings and errors.
show_progress = True


def configure_logging(verbose: int, quiet: bool, log_format: str) -> None:
    """Send the connector's log lines to stderr, secrets masked."""
    from connector.redaction import SecretsFilter

    global show_progress
    show_progress = not quiet
    level = logging.INFO
    if quiet:
        level = logging.WARNING
    elif verbose:
        level = logging.DEBUG
    handler = _StderrHandler()
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(SecretsFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("connector").setLevel(level)


class _StderrHandler(logging.StreamHandler):
    """Write to whatever `sys.stderr` is at the time of each record.

    The live progress display replaces `sys.stderr` while it runs, so that
    log lines are printed above the progress line instead of through it.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from datetime import UTC, datetime

        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def plural(count: int, noun: str) -> str:
    """Return `count` and `noun`, with an `s` unless the count is one."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def print_summary(summary: Any, as_json: bool) -> None:
    """Print a run's summary, as text lines or as JSON on stdout."""
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    where = f" for {summary.window}" if summary.window else ""
    click.echo(
        f"{summary.dataset}{where}: {plural(summary.rows_read, 'row')} read from "
        f"{plural(summary.exports, 'export file')}."
    )
    if summary.rows_rejected:
        places = [
            place
            for result in summary.sinks
            for place in (
                result.details.get("rejects_file"),
                result.details.get("rejects_table"),
            )
            if place
        ]
        where = f" (set aside in {', '.join(places)})" if places else ""
        click.echo(f"  {plural(summary.rows_rejected, 'row')} rejected{where}.")
    for line in summary.drift:
        click.echo(f"  schema drift: {line}")
    for result in summary.sinks:
        counts = ""
        if result.rows_inserted is not None:
            counts = f" ({result.rows_inserted:,} inserted, {result.rows_updated or 0:,} updated)"
        written = plural(result.rows_written, "row")
        click.echo(f"  {mask(result.sink)}: {written} written{counts}")
    click.echo(f"Done in {summary.seconds:.1f} s.")
