"""The transform stage: decompress an export and type every column with Arrow.

`read_export` opens a downloaded export (gzip, zip or plain CSV), checks its
header against the dataset schema and yields record batches whose columns
have the schema's exact Arrow types. `count_records` counts data records
without typing them.
"""

from connector.transform.csv import count_records
from connector.transform.drift import DriftItem
from connector.transform.options import TransformOptions
from connector.transform.read import ExportReader, TransformReport, read_export

__all__ = [
    "DriftItem",
    "ExportReader",
    "TransformOptions",
    "TransformReport",
    "count_records",
    "read_export",
]
