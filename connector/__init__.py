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

from connector.api import (
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
