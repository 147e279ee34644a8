"""A load runs without importing pandas.

pyarrow imports pandas, when it is installed, on the first `pa.array`,
`pa.scalar` or `to_numpy` call, and with its dataset module, which adds
about 35 MB to the load client's memory and 0.2 s to its run. The load
runs in a fresh interpreter so that nothing imported by other tests counts.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from benchmarks.generate import ensure_exports
from tests.conftest import MARIADB_URL, POSTGRES_URL, _require_database

_LOAD_TWICE = """
import json, sys
import connector

path, sink = sys.argv[1], json.loads(sys.argv[2])
first = connector.load_file(path, "authorizations/detail", **sink)
second = connector.load_file(path, "authorizations/detail", **sink)
print(json.dumps({
    "pandas": "pandas" in sys.modules,
    "rows": [first.rows_read, second.rows_read],
}))
"""


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def load_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    if request.param == "postgresql":
        return _require_database(POSTGRES_URL)
    # The named-pipe staging path, which the opt-in enables.
    return _require_database(MARIADB_URL) + "?local_infile=1"


def _with_zero_rates(export, tmp_path):
    # Arrow prints a zero of scale 9 as 0E-9, which staging rewrites as text.
    text = gzip.decompress(export.read_bytes())
    text = text.replace(b",1.000000000,", b",0.000000000,")
    path = tmp_path / "zero_rates.csv.gz"
    path.write_bytes(gzip.compress(text))
    return path


def _load_twice(export, sink: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_TWICE, str(export), json.dumps(sink)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_warehouse_load_leaves_pandas_unimported(load_url, table_name, tmp_path):
    export = _with_zero_rates(ensure_exports(2_000, tmp_path).gzip, tmp_path)
    try:
        result = _load_twice(export, {"warehouse": load_url, "table": table_name})
        assert result["rows"] == [2_000, 2_000]
        assert result["pandas"] is False
    finally:
        if not load_url.startswith("sqlite"):
            from benchmarks.warehouse import drop_tables

            system = "postgres" if load_url.startswith("postgresql") else "mariadb"
            drop_tables(system, [table_name])



def test_parquet_load_leaves_pandas_unimported(tmp_path):
    # The first load checks its keys for repeats at commit. The second load
    # of the same file upserts by key, so it reads the keys already there.
    export = ensure_exports(2_000, tmp_path).gzip

    result = _load_twice(export, {"parquet": str(tmp_path / "lake")})

    assert result["rows"] == [2_000, 2_000]
    assert result["pandas"] is False
