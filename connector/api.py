"""The Python API: the pipeline's stages as calls for scripts and notebooks.

The stage calls are named `export_files`, `transform_file` and `load_file`
rather than after the stages, because `connector.extract`,
`connector.transform` and `connector.load` are the stages' packages.

Every call takes the same settings as the command line: a `config` TOML
file, the `DIVA_*` environment, and keyword overrides named like the
settings (`program=`, `parquet=`, `warehouse=`, `table=`, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector import pipeline
from connector.datasets import Dataset, load_dataset
from connector.errors import ConfigError
from connector.pipeline import export_complete_window, iter_window_batches, run_window
from connector.settings import Settings, load_settings, parse_date
from connector.summary import RunSummary
from connector.windows import Window

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def _day(value: date | str, name: str) -> date:
    if isinstance(value, str):
        return parse_date(value, name)
    if isinstance(value, date):
        return value
    raise ConfigError(
        f"Invalid {name} {value!r}: expected a date or a 'YYYY-MM-DD' string."
    )


def _dataset(name: str) -> Dataset:
    if not isinstance(name, str):
        raise ConfigError(
            f"Invalid dataset {name!r}: expected a name such as "
            "'authorizations/detail'."
        )
    return load_dataset(name)


def _window(start: date | str, end: date | str) -> Window:
    first = _day(start, "start")
    last = _day(end, "end")
    if last < first:
        raise ConfigError(f"end {last} is before start {first}; swap them.")
    return Window(first, last)


def _settings(config: str | Path | None, overrides: dict[str, Any]) -> Settings:
    return load_settings(config, **overrides)


def iter_batches(
    dataset: str,
    start: date | str,
    end: date | str,
    *,
    config: str | Path | None = None,
    **settings: Any,
) -> Iterator[pa.RecordBatch]:
    """Export a window of `dataset` and yield typed Arrow record batches.

    Args:
        dataset: `view/aggregation`, e.g. `authorizations/detail`.
        start: First day of the window (a date or `YYYY-MM-DD`).
        end: Last day of the window, included.
        config: TOML settings file; None reads ./diva-connector.toml if present.
        **settings: Overrides of any setting, e.g. `program="my_program"`.

    Raises:
        ConfigError: A setting is missing or invalid.
        ExportError, ApiError, DataError: The export or its typing failed.
    """
    return iter_window_batches(
        _dataset(dataset), _window(start, end), _settings(config, settings)
    )


def read_dataset(
    dataset: str,
    start: date | str,
    end: date | str,
    *,
    config: str | Path | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """Export a window of `dataset` into a pandas DataFrame.

    Columns use Arrow-backed dtypes, so money stays `decimal128`, integers
    keep their nulls, and timestamps are UTC. Arguments and errors are
    those of `iter_batches`.
    """
    import pandas as pd
    import pyarrow as pa

    resolved = _dataset(dataset)
    batches = list(iter_batches(dataset, start, end, config=config, **settings))
    if batches:
        table = pa.Table.from_batches(batches)
    else:
        table = resolved.arrow_schema().empty_table()
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def run(
    dataset: str,
    start: date | str,
    end: date | str,
    *,
    config: str | Path | None = None,
    **settings: Any,
) -> RunSummary:
    """Export a window of `dataset` and load it into the configured sinks.

    Name the sinks with `parquet=` and/or `warehouse=` plus `table=`, or in
    the config file. Returns what each sink received.

    Raises:
        ConfigError: A setting is missing or invalid, or no sink is named.
        ExportError, ApiError, DataError, LoadError: A stage failed; no
            sink keeps a partial load.
    """
    return run_window(
        _dataset(dataset), _window(start, end), _settings(config, settings)
    )


def load_file(
    path: str | Path,
    dataset: str,
    *,
    config: str | Path | None = None,
    **settings: Any,
) -> RunSummary:
    """Type an export file already on disk and load it into the sinks.

    Raises:
        ConfigError, DataError, LoadError: As for `run`.
    """
    return pipeline.load_file(path, _dataset(dataset), _settings(config, settings))


def export_files(
    dataset: str,
    start: date | str,
    end: date | str,
    *,
    config: str | Path | None = None,
    **settings: Any,
) -> list[Path]:
    """Export a window of `dataset` from DiVA and return the files on disk.

    The files are checked whole and each has fewer rows than the row cap
    (a window that reaches it is split and exported in parts). They stay in
    the run directory (`work_dir`) until you remove them. Pass each to
    `transform_file` or `load_file`.

    Raises:
        ConfigError: A setting is missing or invalid.
        ExportError, ApiError: The export cycle failed.
    """
    parts = export_complete_window(
        _dataset(dataset), _window(start, end), _settings(config, settings)
    )
    return [part.path for part in parts]


def transform_file(
    path: str | Path,
    dataset: str,
    *,
    config: str | Path | None = None,
    **settings: Any,
) -> Iterator[pa.RecordBatch]:
    """Yield the typed record batches of an export file on disk.

    Raises:
        DataError: The file or one of its values does not match the schema
            (with `on_bad_rows="quarantine"` bad rows are dropped instead).
    """
    from connector.transform import TransformOptions, read_export

    options = TransformOptions.from_settings(_settings(config, settings))
    with read_export(Path(path), _dataset(dataset), options) as reader:
        yield from reader
