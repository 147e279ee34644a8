"""A DiVA-compatible HTTP server on loopback, serving deterministic data.

The sandbox replaces DiVA's reporting API in tests and demos. It reads
the schema files shipped in `connector.schemas` and nothing else of the
connector, so tests that talk to it check the connector against an
independent implementation of the API.
"""

from connector.sandbox.faults import Faults
from connector.sandbox.server import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_APP_TOKEN,
    DEFAULT_PROGRAM,
    RequestRecord,
    Sandbox,
    run_server,
)

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_APP_TOKEN",
    "DEFAULT_PROGRAM",
    "Faults",
    "RequestRecord",
    "Sandbox",
    "run_server",
]
