"""Progress counters shared by the stages."""

from __future__ import annotations

import threading
from datetime import date

from connector import progress
from connector.datasets import load_dataset
from connector.pipeline import run_window
from connector.windows import Window


def test_counts_are_dropped_without_tracking():
    progress.count("rows_typed", 5)

    with progress.tracking() as counters:
        assert counters.snapshot()["rows_typed"] == 0


def test_counts_from_many_threads_add_up():
    with progress.tracking() as counters:
        threads = [
            threading.Thread(target=lambda: [progress.count("rows_loaded") for _ in
                                             range(1000)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert counters.snapshot()["rows_loaded"] == 4000


def test_run_counts_every_stage(sandbox, sandbox_settings, tmp_path):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"))
    window = Window(date(2024, 3, 1), date(2024, 3, 2))

    with progress.tracking() as counters:
        run_window(load_dataset("authorizations/detail"), window, settings)

    values = counters.snapshot()
    assert values["exports_requested"] == values["exports_ready"] == 1
    assert values["bytes_downloaded"] > 0
    assert values["rows_typed"] == values["rows_loaded"] == 60
    assert "exports pending 0" in progress.describe(values)
