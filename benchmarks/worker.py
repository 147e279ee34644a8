"""Run one benchmark step in this process and print its measurements.

`python -m benchmarks.worker '<json spec>'` imports what the step needs,
times the step alone (imports excluded) and prints one JSON line with
`rows`, `seconds` and `peak_rss_bytes`. Each step runs in a fresh process,
so the peak resident set size (`ru_maxrss`) is that of this step only.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _import_product() -> Any:
    # A load script imports the connector before anything loads pyarrow, so
    # that the connector's allocator setting applies (see connector/__init__).
    import connector  # noqa: F401
    from benchmarks import product

    return product


def _product_parquet(spec: dict[str, Any]) -> int:
    product = _import_product()

    product.preload_modules(warehouse=False)
    return _timed(
        spec, lambda: product.write_parquet(Path(spec["path"]), Path(spec["out"]))
    )


def _product_warehouse(spec: dict[str, Any]) -> int:
    product = _import_product()

    product.preload_modules(warehouse=True)
    return _timed(
        spec,
        lambda: product.upsert_warehouse(
            Path(spec["path"]), spec["url"], spec["table"]
        ),
    )


def _floor_parquet(spec: dict[str, Any]) -> int:
    from benchmarks import floors
    from benchmarks.generate import DATASET
    from connector.datasets import load_dataset

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(DATASET)
    return _timed(
        spec,
        lambda: floors.write_parquet_floor(
            Path(spec["path"]), out / "floor.parquet", dataset
        ),
    )


def _floor_warehouse(spec: dict[str, Any]) -> int:
    from benchmarks import floors, warehouse
    from benchmarks.generate import DATASET
    from connector.datasets import load_dataset

    dataset = load_dataset(DATASET)
    system = spec["system"]
    upsert = (
        floors.upsert_postgres_floor
        if system == "postgres"
        else floors.upsert_mariadb_floor
    )
    if spec.get("create"):
        connection = (
            warehouse.connect_postgres()
            if system == "postgres"
            else warehouse.connect_mariadb()
        )
        with connection.cursor() as cursor:
            warehouse.create_table(cursor, spec["table"], dataset, system)
        connection.commit()
        connection.close()
    return _timed(spec, lambda: upsert(Path(spec["path"]), spec["table"], dataset))


def _naive_parquet(spec: dict[str, Any]) -> int:
    from benchmarks import naive

    return _timed(
        spec, lambda: naive.write_parquet_naive(Path(spec["path"]), Path(spec["out"]))
    )


def _naive_postgres(spec: dict[str, Any]) -> int:
    from benchmarks import naive

    return _timed(
        spec, lambda: naive.append_postgres_naive(Path(spec["path"]), spec["table"])
    )


STEPS: dict[str, Callable[[dict[str, Any]], int]] = {
    "product-parquet": _product_parquet,
    "product-warehouse": _product_warehouse,
    "floor-parquet": _floor_parquet,
    "floor-warehouse": _floor_warehouse,
    "naive-parquet": _naive_parquet,
    "naive-postgres": _naive_postgres,
}


def _timed(spec: dict[str, Any], step: Callable[[], int]) -> int:
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    rows = step()
    spec["seconds"] = time.perf_counter() - started
    spec["cpu_seconds"] = _cpu_seconds() - cpu_started
    return rows


def _cpu_seconds() -> float:
    """Return the user plus system CPU time of every thread of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes() -> int:
    """Return the peak resident set size of this process, in bytes.

    `ru_maxrss` survives `exec`: a child started by a parent holding 700 MB
    reports at least 700 MB, whatever it uses itself. The kernel's `VmHWM`
    belongs to the address space, which `exec` replaces, so it is read
    first; `ru_maxrss` (in KiB on Linux) is the fallback where /proc is
    missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> int:
    """Run the step described by the JSON spec in `argv[0]`; print its figures."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(argv[0])
    rows = STEPS[spec["step"]](spec)
    result = {
        "rows": rows,
        "seconds": spec["seconds"],
        "cpu_seconds": spec["cpu_seconds"],
        "peak_rss_bytes": peak_rss_bytes(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
