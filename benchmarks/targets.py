"""The performance targets of the product and how this run compares.

Time targets are checked at every export size. Memory targets are checked
on the largest export of the run (5,000,000 rows by default), and memory
growth compares the largest export with the smallest: the peak RSS of the
largest may be at most 25% above that of the smallest.
"""

from __future__ import annotations

from benchmarks.report import MB, Measurement, Target, find, time_ratio

# Decimal megabytes, as the limits are stated: 200 MB is about 191 MiB.
PARQUET_MAX_RSS_BYTES = 500 * MB
WAREHOUSE_MAX_RSS_BYTES = 200 * MB
MAX_RSS_GROWTH = 1.25

_TIME_TARGETS = [
    # (sink, compared role, compression of the compared run, maximum ratio, label)
    ("parquet", "floor", None, 1.0, "Parquet ≤ 1.0 × floor A (aim 0.8 ×)"),
    ("parquet", "naive", "gzip", 0.7, "Parquet ≤ 0.7 × naive pandas"),
    ("postgres", "floor", None, 1.2, "PostgreSQL upsert ≤ 1.2 × floor B"),
    ("postgres", "naive", "gzip", 0.33, "PostgreSQL upsert ≤ 0.33 × naive to_sql"),
    ("mariadb", "floor", None, 1.3, "MariaDB upsert ≤ 1.3 × its floor"),
]


def check_targets(results: list[Measurement]) -> list[Target]:
    """Return every target with the figure of this run and whether it is met."""
    sizes = sorted({item.export_rows for item in results})
    targets: list[Target] = []
    for sink, role, compression, limit, label in _TIME_TARGETS:
        for item in _products(results, sink):
            ratio = time_ratio(results, item, role, compression)
            if item.error is not None:
                targets.append(
                    Target(f"{label}, {item.export_rows:,} rows", "run failed", False)
                )
            elif ratio is not None:
                targets.append(
                    Target(
                        f"{label}, {item.export_rows:,} rows, {item.compression}",
                        f"{ratio:.2f} ×",
                        ratio <= limit,
                    )
                )
    if sizes:
        targets += _memory_targets(results, sizes[0], sizes[-1])
    return targets


def _memory_targets(
    results: list[Measurement], smallest: int, largest: int
) -> list[Target]:
    targets = []
    for sink in ("parquet", "postgres", "mariadb"):
        limit = PARQUET_MAX_RSS_BYTES if sink == "parquet" else WAREHOUSE_MAX_RSS_BYTES
        for compression in ("gzip", "zip"):
            big = find(results, largest, sink, "product", compression)
            if big is None:
                continue
            targets.append(
                Target(
                    f"{sink} peak RSS < {limit // MB} MB, {largest:,} rows, "
                    f"{compression}",
                    f"{big.peak_rss_bytes / MB:.0f} MB",
                    big.peak_rss_bytes < limit,
                )
            )
            small = find(results, smallest, sink, "product", compression)
            if small is not None and smallest != largest:
                growth = big.peak_rss_bytes / small.peak_rss_bytes
                targets.append(
                    Target(
                        f"{sink} peak RSS at {largest:,} rows ≤ 1.25 × at "
                        f"{smallest:,} rows, {compression}",
                        f"{growth:.2f} ×",
                        growth <= MAX_RSS_GROWTH,
                    )
                )
    return targets


def _products(results: list[Measurement], sink: str) -> list[Measurement]:
    return [
        item
        for item in results
        if item.sink == sink and item.role == "product" and not item.variant
    ]
