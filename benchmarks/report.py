"""Measurements, target checks and the Markdown page that shows them."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata

MIB = 1024 * 1024
MB = 1000 * 1000


@dataclass
class Measurement:
    """One timed step on one export.

    Attributes:
        export_rows: Data rows of the export the step read.
        sink: `parquet`, `postgres` or `mariadb`.
        role: `product`, `floor` or `naive`.
        compression: `gzip` or `zip`, the export file read.
        rows: Rows the step reported as read or written.
        seconds: Wall-clock time of the step alone.
        cpu_seconds: CPU time (user and system, all threads) of the step's
            process; a database server's own work is not in it.
        peak_rss_bytes: Peak resident set size of the step's process.
        error: Why the step failed, or None.
        variant: What sets a second run of the same path apart, e.g. the
            product's fallback; empty for the runs the targets compare.
    """

    export_rows: int
    sink: str
    role: str
    compression: str
    rows: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    error: str | None = None
    variant: str = ""

    @property
    def label(self) -> str:
        """The row label in the results table, e.g. `postgres floor (gzip)`."""
        variant = f", {self.variant}" if self.variant else ""
        return f"{self.sink} {self.role} ({self.compression}{variant})"

    @property
    def rows_per_s(self) -> float:
        """Throughput in rows per second."""
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class Target:
    """A performance target and whether this run met it."""

    name: str
    figure: str
    met: bool | None


def find(
    results: list[Measurement], export_rows: int, sink: str, role: str, compression: str
) -> Measurement | None:
    """Return the successful main measurement matching every field, or None."""
    for item in results:
        if (
            (item.export_rows, item.sink, item.role, item.compression)
            == (export_rows, sink, role, compression)
            and item.error is None
            and not item.variant
        ):
            return item
    return None


def time_ratio(
    results: list[Measurement],
    item: Measurement,
    role: str,
    compression: str | None = None,
) -> float | None:
    """Return `item`'s time divided by that of its `role` run, or None."""
    other = find(
        results, item.export_rows, item.sink, role, compression or item.compression
    )
    if other is None or not other.seconds or item.error is not None:
        return None
    return item.seconds / other.seconds


def describe_machine(server_versions: dict[str, str]) -> list[str]:
    """Return Markdown list lines describing this machine and its software."""
    cpu = "unknown"
    memory = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in info
                if line.startswith("model name")
            )
        with open("/proc/meminfo", encoding="utf-8") as info:
            kib = int(
                next(line.split()[1] for line in info if line.startswith("MemTotal"))
            )
            memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    packages = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in (
            "pyarrow",
            "pandas",
            "numpy",
            "isal",
            "psycopg",
            "PyMySQL",
            "SQLAlchemy",
        )
    )
    lines = [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores",
        f"- Memory: {memory}",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {packages}",
    ]
    lines += [f"- {name}: {version}" for name, version in server_versions.items()]
    return lines


def results_table(results: list[Measurement]) -> list[str]:
    """Return the Markdown table of every measurement."""
    lines = [
        (
            "| export rows | run | rows | seconds | rows/s | CPU s | peak RSS (MB) "
            "| × floor | × naive |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in results:
        if item.error is not None:
            lines.append(
                f"| {item.export_rows:,} | {item.label} | failed: {_cell(item.error)} "
                "| | | | | | |"
            )
            continue
        floor = time_ratio(results, item, "floor") if item.role == "product" else None
        naive = (
            time_ratio(results, item, "naive", "gzip")
            if item.role == "product"
            else None
        )
        lines.append(
            f"| {item.export_rows:,} | {item.label} | {item.rows:,} | {item.seconds:.2f} "
            f"| {item.rows_per_s:,.0f} | {item.cpu_seconds:.2f} "
            f"| {item.peak_rss_bytes / MB:.0f} "
            f"| {_ratio(floor)} | {_ratio(naive)} |"
        )
    return lines


def targets_table(targets: list[Target]) -> list[str]:
    """Return the Markdown table of targets with met / not met."""
    lines = ["| target | this run | result |", "|---|---|---|"]
    for target in targets:
        if target.met is None:
            verdict = "n/a"
        elif target.met:
            verdict = "met"
        else:
            verdict = "**not met**"
        lines.append(f"| {target.name} | {target.figure} | {verdict} |")
    return lines


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")[:160]
