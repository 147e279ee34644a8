"""The `diva-connector` command: thin faces over the pipeline.

Exit codes: 0 success, 1 runtime failure (DiVA, data or sink), 2 bad usage
or configuration (including refused credentials), 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from connector import cli_output as output
from connector.errors import ConfigError, DivaError

log = logging.getLogger(__name__)

_SETTINGS_HELP = (
    "Settings come from --config FILE (else ./diva-connector.toml), then DIVA_* "
    "environment variables, then flags."
)


def _handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the connector's errors into a message on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DivaError as err:
            log.debug("Command failed", exc_info=True)
            message = output.mask(str(err))
            click.echo(f"Error: {message}", err=True)
            if kwargs.get("as_json"):
                error = {"ok": False, "error": message, "exit_code": err.exit_code}
                click.echo(json.dumps(error, indent=2))
            sys.exit(err.exit_code)
        except KeyboardInterrupt as interrupt:
            click.echo(
                "Interrupted; committed loads are kept, nothing partial.", err=True
            )
            sys.exit(143 if isinstance(interrupt, _Terminated) else 130)

    return wrapper


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that open loads roll back."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _load_settings(config: Path | None, **flags: Any) -> Any:
    from connector.settings import load_settings

    settings = load_settings(config, **flags)
    output.secrets[:] = settings.secrets()
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log details (DEBUG).")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of log lines on stderr.",
)
@click.version_option(package_name="diva-connector")
def main(verbose: int, quiet: bool, log_format: str) -> None:
    """Extract Marqeta DiVA exports, type every column, load Parquet or SQL.

    \b
    Example:
      export DIVA_APP_TOKEN=... DIVA_ACCESS_TOKEN=... DIVA_PROGRAM=my_program
      diva-connector run authorizations/detail --start 2024-03-01 \\
          --end 2024-03-31 --parquet ./data
    """
    output.configure_logging(verbose, quiet, log_format)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


_config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default: ./diva-connector.toml when present).",
)


def _sink_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--parquet", metavar="DIR", help="Write Parquet files under DIR."),
        click.option(
            "--warehouse",
            metavar="URL",
            help="SQLAlchemy URL, e.g. postgresql://user@host/db or "
            "sqlite:///warehouse.db.",
        ),
        click.option("--table", metavar="NAME", help="Warehouse table to upsert into."),
        click.option(
            "--write",
            type=click.Choice(["upsert", "append", "replace"]),
            help="How rows meet the warehouse table (default upsert).",
        ),
        click.option(
            "--on-bad-rows",
            type=click.Choice(["fail", "quarantine"]),
            help="Stop at the first bad value, or set bad rows aside (default fail).",
        ),
        click.option(
            "--source-timezone",
            metavar="ZONE",
            help="IANA zone of zone-less timestamps in the export (default UTC).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary."),
        _config_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _extract_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--compress",
            type=click.Choice(["gz", "zip"]),
            help="Export format (default gz).",
        ),
        click.option(
            "--max-count", type=int, help="Row cap per export (up to 5,000,000)."
        ),
        click.option(
            "--poll-timeout-s",
            type=float,
            help="Seconds to wait for an export before giving up.",
        ),
        click.option(
            "--max-reexports",
            type=int,
            help="New exports allowed after a file expired (default 2).",
        ),
        click.option(
            "--requests-per-5min",
            type=int,
            help="Request budget shared by the run (default 300).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@click.argument("dataset", required=False)
@click.option(
    "--all",
    "run_every",
    is_flag=True,
    help="Run every dataset listed in the config file.",
)
@click.option(
    "--start",
    metavar="YYYY-MM-DD",
    help="First day (default: the high-water mark less the lookback).",
)
@click.option(
    "--end", metavar="YYYY-MM-DD", help="Last day, included (default: today)."
)
@_extract_options
@click.option(
    "--lookback-days",
    type=int,
    help="Days before the high-water mark to read again (default 3).",
)
@click.option(
    "--fail-on-empty",
    is_flag=True,
    default=None,
    help="Fail when zero rows arrive where earlier runs found some.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be exported and where it would go; do nothing.",
)
@_sink_options
@_handle_errors
def run(
    dataset: str | None,
    run_every: bool,
    start: str | None,
    end: str | None,
    dry_run: bool,
    config: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Export DATASET from DiVA and load it into the sinks.

    DATASET is view/aggregation. Without --start, the run continues from the
    dataset's high-water mark (kept with its destination), reading the last
    --lookback-days again; the first run needs --start or start_date. Both
    dates are included.

    \b
    Examples:
      diva-connector run authorizations/detail --start 2024-03-01 \\
          --end 2024-03-31 --warehouse postgresql://etl@db/warehouse \\
          --table diva_authorizations
      diva-connector run --all --config diva-connector.toml
    """
    from connector.settings import parse_date

    settings = _load_settings(config, **flags)
    first = parse_date(start, "--start") if start else None
    last = parse_date(end, "--end") if end else None
    if run_every == bool(dataset):
        raise ConfigError("Name one DATASET or pass --all, not both or neither.")
    if first and last and last < first:
        raise ConfigError(f"--end {last} is before --start {first}; swap them.")

    if run_every and dry_run:
        _print_every_dry_run(settings, first, last)
        return
    if run_every:
        _run_every(settings, as_json, first, last)
        return

    from connector.datasets import load_dataset
    from connector.incremental import run_incremental

    resolved = load_dataset(dataset)
    if dry_run:
        _print_dry_run(resolved, settings, first, last)
        return
    with output.live_progress(not as_json):
        summary = run_incremental(resolved, settings, start=first, end=last)
    output.print_summary(summary, as_json)


def _run_every(settings: Any, as_json: bool, first: Any, last: Any) -> None:
    from connector.incremental import run_all

    with output.live_progress(not as_json):
        outcomes = run_all(settings, start=first, end=last)
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "dataset": o.name,
                        "ok": o.error is None,
                        "summary": o.summary.as_dict() if o.summary else None,
                        "error": output.mask(str(o.error)) if o.error else None,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    else:
        for outcome in outcomes:
            if outcome.summary is not None:
                output.print_summary(outcome.summary, False)
            else:
                click.echo(f"{outcome.name}: FAILED: {output.mask(str(outcome.error))}")
        click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} datasets loaded.")
    if failed:
        sys.exit(1)


def _print_every_dry_run(settings: Any, first: Any, last: Any) -> None:
    from connector.datasets import load_dataset

    if not settings.datasets:
        raise ConfigError(
            "No datasets to run: list them as [[datasets]] entries in the config "
            "file (see config.example.toml)."
        )
    for job in settings.datasets:
        try:
            dataset = load_dataset(job.name)
        except ConfigError as err:
            click.echo(f"{job.name}: would fail: {output.mask(str(err))}")
            continue
        _print_dry_run(dataset, settings.for_job(job), first, last)


def _print_dry_run(dataset: Any, settings: Any, first: Any, last: Any) -> None:
    from urllib.parse import urlencode

    from connector.incremental import incremental_window, today_utc
    from connector.load.state import open_state_stores, read_state
    from connector.redaction import mask_url

    settings.require_credentials()
    state = None if first else read_state(open_state_stores(settings), dataset)
    window = incremental_window(
        state, settings, start=first, end=last, today=today_utc()
    )
    params = {"program": settings.program}
    if dataset.date_column:
        params[dataset.date_column] = window.to_filter()
    if settings.compress == "zip":
        params["compress"] = "zip"
    params["max_count"] = settings.max_count
    url = f"{settings.base_url}/{dataset.path}/csv?{urlencode(params, safe='.,:')}"
    click.echo(f"Would export {dataset.name} for {window}:")
    click.echo(f"  GET {output.mask(mask_url(url))}")
    if settings.parquet:
        click.echo(f"  then write Parquet under {settings.parquet}")
    if settings.warehouse is not None:
        target = output.mask(mask_url(settings.warehouse.get_secret_value()))
        click.echo(f"  then {settings.write} into table {settings.table} at {target}")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, help="view/aggregation the file belongs to.")
@_sink_options
@_handle_errors
def load(
    file: Path, dataset: str, config: Path | None, as_json: bool, **flags: Any
) -> None:
    """Type an export FILE already on disk and load it into the sinks.

    \b
    Example:
      diva-connector load ./export.csv.gz --dataset authorizations/detail \\
          --parquet ./data
    """
    from connector.datasets import load_dataset
    from connector.pipeline import load_file

    settings = _load_settings(config, **flags)
    with output.live_progress(not as_json):
        summary = load_file(file, load_dataset(dataset), settings)
    output.print_summary(summary, as_json)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8765, show_default=True, help="Port to listen on.")
@click.option(
    "--seed", default=1, show_default=True, help="Seed of the generated data."
)
@click.option(
    "--rows-per-day", default=200, show_default=True, help="Rows per view and day."
)
@_handle_errors
def sandbox(host: str, port: int, seed: int, rows_per_day: int) -> None:
    """Serve a DiVA-compatible API with deterministic data, until Ctrl-C.

    Credentials: app token sandbox-app, access token sandbox-secret,
    program sandbox.

    \b
    Example:
      diva-connector sandbox --port 8765 &
      DIVA_BASE_URL=http://127.0.0.1:8765/data/v2 DIVA_APP_TOKEN=sandbox-app \\
        DIVA_ACCESS_TOKEN=sandbox-secret DIVA_PROGRAM=sandbox \\
        diva-connector run authorizations/detail --start 2024-03-01 \\
        --end 2024-03-07 --parquet ./data
    """
    from connector.sandbox import run_server

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"--host {host} is not a loopback address; the sandbox "
            "serves loopback only."
        )
    try:
        run_server(host=host, port=port, seed=seed, rows_per_day=rows_per_day)
    except OSError as err:
        raise ConfigError(
            f"Cannot serve on {host}:{port}: {err.strerror or err}. Pick another "
            "--port."
        ) from err


@main.command()
@click.option(
    "--dir",
    "directory",
    default="diva-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the Parquet files and the SQLite database.",
)
@click.option(
    "--rows-per-day",
    default=200,
    show_default=True,
    help="Authorizations per day served by the sandbox.",
)
@_handle_errors
def demo(directory: Path, rows_per_day: int) -> None:
    """Load a month of sandbox authorizations into Parquet and SQLite.

    Starts the sandbox on a free loopback port, runs authorizations/detail
    for the last full calendar month, and checks the loaded rows against
    what the sandbox served.

    \b
    Example:
      diva-connector demo --dir ./diva-demo
    """
    from connector.demo import run_demo

    run_demo(directory, rows_per_day=rows_per_day, echo=click.echo)


@main.command()
@click.argument("dataset")
@click.option("--start", required=True, metavar="YYYY-MM-DD", help="First day.")
@click.option("--end", required=True, metavar="YYYY-MM-DD", help="Last day (included).")
@click.option(
    "--window",
    "window_size",
    default="7d",
    show_default=True,
    metavar="Nd",
    help="Days per export window, e.g. 7d or 1d.",
)
@click.option("--workers", type=int, help="Windows exported at once (default 2).")
@_extract_options
@_sink_options
@_handle_errors
def backfill(
    dataset: str,
    start: str,
    end: str,
    window_size: str,
    workers: int | None,
    config: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Load a long range window by window, several exports at once.

    Each window is loaded in its own transaction and checkpointed; run the
    same command again after an interruption and it resumes where it
    stopped.

    \b
    Example:
      diva-connector backfill settlements/detail --start 2023-01-01 \\
          --end 2023-12-31 --window 7d --workers 3 --parquet ./data
    """
    from connector.datasets import load_dataset
    from connector.incremental import backfill as run_backfill
    from connector.settings import parse_date

    settings = _load_settings(config, workers=workers, **flags)
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    if last < first:
        raise ConfigError(f"--end {last} is before --start {first}; swap them.")
    days = _parse_days(window_size)
    with output.live_progress(not as_json):
        result = run_backfill(
            load_dataset(dataset), first, last, settings, window_days=days
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dataset": result.dataset,
                    "windows_loaded": [s.as_dict() for s in result.loaded],
                    "windows_skipped": [w.to_filter() for w in result.skipped],
                    "rows_read": result.rows_read,
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"{result.dataset}: {output.plural(len(result.loaded), 'window')} loaded, "
        f"{len(result.skipped):,} already done, {output.plural(result.rows_read, 'row')} "
        "read."
    )


def _parse_days(text: str) -> int:
    value = text.strip().lower().removesuffix("d")
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            f"Invalid --window {text!r}: expected a number of days such as 7d."
        )
    return int(value)


@main.command()
@click.option(
    "--dataset",
    default="authorizations/detail",
    show_default=True,
    help="Dataset to read one row of.",
)
@_config_option
@_handle_errors
def check(dataset: str, config: Path | None) -> None:
    """Check the credentials and program against DiVA.

    \b
    Example:
      DIVA_APP_TOKEN=... DIVA_ACCESS_TOKEN=... DIVA_PROGRAM=my_program \\
          diva-connector check
    """
    from connector.datasets import load_dataset
    from connector.extract.client import DivaClient

    settings = _load_settings(config)
    settings.require_credentials()
    resolved = load_dataset(dataset)
    client = DivaClient(settings)
    views = client.list_views()
    click.echo(f"Credentials accepted by {settings.base_url}: {len(views)} views.")
    client.get_json(resolved.path, {"count": 1})
    click.echo(f"Program {settings.program} can read {resolved.name}.")


@main.group()
def schemas() -> None:
    """Inspect and refresh the schema files of the datasets."""


@schemas.command("pull")
@click.argument("names", nargs=-1, metavar="[DATASET]...")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the refreshed files under DIR instead of in place.",
)
@_config_option
@_handle_errors
def schemas_pull(
    names: tuple[str, ...], directory: Path | None, config: Path | None
) -> None:
    """Refresh schema files from DiVA's schema endpoint and print the changes.

    Without DATASET, every dataset is refreshed. The files are rewritten in
    place, inside the installed package, unless --dir names another folder.

    \b
    Example:
      diva-connector schemas pull authorizations/detail --dir ./schemas-live
    """
    from connector.datasets import list_datasets, load_dataset, schemas_root
    from connector.extract.client import DivaClient
    from connector.schema_refresh import describe_change, refresh_schema_file

    settings = _load_settings(config)
    settings.require_credentials()
    client = DivaClient(settings)
    for name in names or list_datasets():
        dataset = load_dataset(name)
        path = schemas_root() / f"{dataset.name}.json"
        if directory is not None:
            target = directory / f"{dataset.name}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            path = target
        change = refresh_schema_file(path, client.fetch_schema(dataset.name))
        click.echo(describe_change(dataset.name, change))
    load_dataset.cache_clear()


@main.command("datasets")
@_handle_errors
def datasets_command() -> None:
    """List the datasets with their key and date column.

    \b
    Example:
      diva-connector datasets
    """
    from connector.datasets import list_datasets, load_dataset

    for name in list_datasets():
        dataset = load_dataset(name)
        key = ", ".join(dataset.key) or "-"
        click.echo(f"{name:<45} key: {key:<40} date: {dataset.date_column or '-'}")


if __name__ == "__main__":  # pragma: no cover
    main()
