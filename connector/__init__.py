"""diva-connector: extract, type and load Marqeta DiVA reporting exports.

The public surface::

    import connector

    df = connector.read_dataset("authorizations/detail", "2024-03-01", "2024-03-31",
                                program="my_program")
    summary = connector.run("settlements/detail", "2024-03-01", "2024-03-07",
                            warehouse="postgresql://etl@db/warehouse",
                            table="diva_settlements")
"""

import logging
import os
import sys

if "pyarrow" not in sys.modules:
    # Arrow's allocator (mimalloc) keeps the pages it freed resident unless
    # its arenas commit memory on demand. mimalloc reads this once, when
    # pyarrow loads, so it applies only when the connector is imported
    # first. A value already set in the environment wins.
    os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

from connector.api import (  # noqa: E402 - after the allocator setting
    export_files,
    iter_batches,
    load_file,
    read_dataset,
    run,
    transform_file,
)
from connector.datasets import Dataset, list_datasets, load_dataset
from connector.errors import (
    ApiError,
    AuthError,
    ConfigError,
    DataError,
    DivaError,
    DownloadError,
    ExportError,
    ExportExpiredError,
    ExportTimeoutError,
    LoadError,
    PermanentApiError,
    SchemaError,
    TransientApiError,
    TruncatedExportError,
)
from connector.settings import Settings, load_settings
from connector.summary import RunSummary
from connector.windows import Window

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ApiError",
    "AuthError",
    "ConfigError",
    "DataError",
    "Dataset",
    "DivaError",
    "DownloadError",
    "ExportError",
    "ExportExpiredError",
    "ExportTimeoutError",
    "LoadError",
    "PermanentApiError",
    "RunSummary",
    "SchemaError",
    "Settings",
    "TransientApiError",
    "TruncatedExportError",
    "Window",
    "export_files",
    "iter_batches",
    "list_datasets",
    "load_dataset",
    "load_file",
    "load_settings",
    "read_dataset",
    "run",
    "transform_file",
]
