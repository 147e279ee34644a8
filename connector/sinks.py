"""Opening the sinks a run writes to, and rolling them back together."""

from __future__ import annotations

import logging

from connector.datasets import Dataset
from connector.errors import ConfigError
from connector.load.base import BatchWriter
from connector.settings import Settings

log = logging.getLogger(__name__)


def open_writers(
    settings: Settings, dataset: Dataset, *, missing_columns: tuple[str, ...] = ()
) -> list[BatchWriter]:
    """Open one writer per sink named in the settings.

    `missing_columns` are columns the export's header lacked: the warehouse
    keeps their stored values on rows it updates instead of overwriting
    them with the nulls the file implies. Parquet stores what the export
    contained, so its files carry those nulls.

    Raises:
        ConfigError: No sink is configured, or a warehouse has no table.
    """
    _check_sink_settings(settings)
    # The warehouse is committed first: it is the sink most likely to refuse
    # a load (constraints, lost connections), and the pipeline commits the
    # sinks in list order, so a refusal there leaves Parquet untouched too.
    writers: list[BatchWriter] = []
    if settings.warehouse is not None:
        from connector.load.sql import open_warehouse_writer

        writers.append(
            open_warehouse_writer(
                settings.warehouse.get_secret_value(),
                settings.table,
                dataset,
                mode=settings.write,
                audit_table=settings.audit_table,
                preserve_columns=missing_columns,
            )
        )

    if settings.parquet:
        from connector.load.parquet import open_parquet_writer

        try:
            writers.append(open_parquet_writer(settings.parquet, dataset))
        except ImportError as err:
            abort_all(writers)
            raise ConfigError(
                f"Cannot write Parquet to {settings.parquet}: {err}. Install the "
                "filesystem's package, e.g. pip install 'diva-connector[s3]' for "
                "s3:// or 'diva-connector[gcs]' for gs://."
            ) from err
        except BaseException:
            abort_all(writers)
            raise

    return writers


def check_sinks(settings: Settings, dataset: Dataset) -> None:
    """Check that every sink named in the settings can be opened.

    A run calls it before exporting: an export can take minutes, and a
    wrong warehouse URL, table name or Parquet folder then fails at once.

    Raises:
        ConfigError: No sink is configured, a warehouse has no table, or a
            URL, table name or folder is invalid.
        LoadError: The warehouse cannot be reached.
    """
    _check_sink_settings(settings)
    if settings.warehouse is None and settings.write != "upsert":
        log.warning(
            "write=%s applies to warehouse tables only; the Parquet sink replaces "
            "the window's rows, or upserts by key for a file loaded by hand.",
            settings.write,
        )
    if settings.warehouse is not None:
        from connector.load.sql import check_warehouse

        other_tables = [settings.audit_table, settings.state_table]
        if settings.on_bad_rows == "quarantine":
            other_tables.append(f"{settings.table}_rejects")
        check_warehouse(
            settings.warehouse.get_secret_value(),
            settings.table,
            dataset,
            mode=settings.write,
            other_tables=other_tables,
        )
    if settings.parquet:
        from connector.load.parquet import check_parquet_destination

        check_parquet_destination(settings.parquet, dataset)


def _check_sink_settings(settings: Settings) -> None:
    if settings.table and settings.warehouse is None:
        raise ConfigError(
            f"A table ({settings.table}) was given without a warehouse: add "
            "--warehouse URL (or set DIVA_WAREHOUSE)."
        )
    if settings.warehouse is not None and not settings.table:
        raise ConfigError(
            "A warehouse load needs a table: pass --table NAME or set DIVA_TABLE."
        )
    if settings.warehouse is None and not settings.parquet:
        raise ConfigError(
            "No destination: pass --parquet DIR and/or --warehouse URL --table NAME "
            "(parquet= and warehouse=, table= from Python), or set them in the "
            "config file."
        )


def abort_all(writers: list[BatchWriter]) -> None:
    """Roll back every writer, logging (not raising) a failed rollback."""
    for writer in writers:
        try:
            writer.abort()
        except Exception:
            log.exception("Could not roll back a sink after a failed load.")
