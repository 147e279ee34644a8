"""A DiVA-compatible HTTP server on loopback, serving deterministic data."""
