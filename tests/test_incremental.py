"""Incremental state, lookback, backfill resumption and run --all."""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.datasets import load_dataset
from connector.errors import ConfigError, EmptyRunError, TransientApiError
from connector.incremental import backfill, backfill_windows, run_all, run_incremental
from connector.load.parquet import read_parquet_dataset
from connector.load.state import FileStateStore, SqlStateStore
from connector.windows import Window

DATASET = "authorizations/detail"


def export_filters(sandbox):
    """Return the date filters of the exports the sandbox received, in order."""
    return [
        entry.params["transaction_timestamp"]
        for entry in sandbox.requests
        if entry.path.endswith("/csv")
    ]


def test_first_run_needs_a_start(sandbox_settings, tmp_path):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"))

    with pytest.raises(ConfigError, match="--start"):
        run_incremental(load_dataset(DATASET), settings, today=date(2024, 3, 10))


def test_next_run_rereads_lookback_from_high_water(sandbox, sandbox_settings, tmp_path):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"), lookback_days=3)
    dataset = load_dataset(DATASET)

    run_incremental(dataset, settings, start=date(2024, 3, 1), end=date(2024, 3, 5))
    run_incremental(dataset, settings, today=date(2024, 3, 8))

    assert export_filters(sandbox) == [
        "2024-03-01..2024-03-05",
        "2024-03-02..2024-03-08",
    ]
    state = FileStateStore(str(tmp_path / "lake")).get(dataset)
    assert state.high_water == date(2024, 3, 8)
    loaded = read_parquet_dataset(str(tmp_path / "lake"), dataset)
    assert loaded.num_rows == 8 * 30


def test_state_table_in_warehouse(sandbox, sandbox_settings, warehouse_url, table_name):
    state_table = f"{table_name}_state"
    settings = sandbox_settings(
        warehouse=warehouse_url, table=table_name, state_table=state_table,
        audit_table=f"{table_name}_audit",
    )
    dataset = load_dataset(DATASET)

    run_incremental(dataset, settings, start=date(2024, 3, 1), end=date(2024, 3, 2))

    store = SqlStateStore(warehouse_url, state_table, table_name)
    try:
        state = store.get(dataset)
        assert state.high_water == date(2024, 3, 2)
        assert state.last_rows == 60
    finally:
        with store.engine.begin() as connection:
            import sqlalchemy

            for name in (table_name, state_table, f"{table_name}_audit",
                         f"{table_name}_rejects"):
                connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {name}"))
        store.close()


def test_state_is_kept_per_target_table(sandbox_settings, sqlite_url, table_name):
    dataset = load_dataset(DATASET)
    first = sandbox_settings(warehouse=sqlite_url, table=table_name)
    run_incremental(dataset, first, start=date(2024, 3, 1), end=date(2024, 3, 2))
    other = sandbox_settings(warehouse=sqlite_url, table=f"{table_name}_other")

    with pytest.raises(ConfigError, match="--start"):
        run_incremental(dataset, other, today=date(2024, 3, 5))


def test_future_end_does_not_move_mark_past_today(sandbox_settings, tmp_path):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"))
    dataset = load_dataset(DATASET)

    run_incremental(dataset, settings, start=date(2024, 3, 1), end=date(2030, 1, 1),
                    today=date(2024, 3, 3))

    state = FileStateStore(str(tmp_path / "lake")).get(dataset)
    assert state.high_water == date(2024, 3, 3)


def test_failed_empty_run_keeps_mark(sandbox, sandbox_settings, tmp_path):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"), fail_on_empty=True)
    dataset = load_dataset(DATASET)
    run_incremental(dataset, settings, start=date(2024, 3, 1), end=date(2024, 3, 1))
    future = sandbox.today() + timedelta(days=1)

    with pytest.raises(EmptyRunError):
        run_incremental(dataset, settings, start=future, end=future, today=future)

    state = FileStateStore(str(tmp_path / "lake")).get(dataset)
    assert state.high_water == date(2024, 3, 1)
    assert state.last_rows == 30


def test_unreachable_state_warehouse_is_load_error(sandbox_settings):
    from connector.errors import LoadError

    settings = sandbox_settings(
        warehouse="postgresql://nobody:pw-secret@127.0.0.1:1/none", table="t"
    )

    with pytest.raises(LoadError) as caught:
        run_incremental(load_dataset(DATASET), settings, start=date(2024, 3, 1),
                        end=date(2024, 3, 1))

    assert "pw-secret" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


def test_zero_rows_after_full_runs_warns(sandbox, sandbox_settings, tmp_path, caplog):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"))
    dataset = load_dataset(DATASET)
    future = sandbox.today() + timedelta(days=1)
    run_incremental(dataset, settings, start=date(2024, 3, 1), end=date(2024, 3, 1))

    with caplog.at_level(logging.WARNING, logger="connector"):
        summary = run_incremental(dataset, settings, start=future, end=future)

    assert summary.rows_read == 0
    assert "zero rows" in caplog.text


def test_fail_on_empty_raises(sandbox, sandbox_settings, tmp_path):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"), fail_on_empty=True)
    dataset = load_dataset(DATASET)
    future = sandbox.today() + timedelta(days=1)
    run_incremental(dataset, settings, start=date(2024, 3, 1), end=date(2024, 3, 1))

    with pytest.raises(EmptyRunError, match="zero rows"):
        run_incremental(dataset, settings, start=future, end=future)


def test_backfill_windows_cover_range():
    windows = backfill_windows(date(2024, 1, 1), date(2024, 1, 17), 7)

    assert windows == [
        Window(date(2024, 1, 1), date(2024, 1, 7)),
        Window(date(2024, 1, 8), date(2024, 1, 14)),
        Window(date(2024, 1, 15), date(2024, 1, 17)),
    ]


def test_backfill_resumes_after_failed_window(sandbox, sandbox_settings, tmp_path):
    settings = sandbox_settings(parquet=str(tmp_path / "lake"), retry_max_attempts=1)
    dataset = load_dataset(DATASET)
    sandbox.faults.fail(503, route="export")

    with pytest.raises(TransientApiError):
        backfill(dataset, date(2024, 3, 1), date(2024, 3, 4), settings,
                 window_days=1, workers=2)
    exports_before = len(export_filters(sandbox))

    result = backfill(dataset, date(2024, 3, 1), date(2024, 3, 4), settings,
                      window_days=1, workers=2)

    assert len(result.skipped) == 3
    assert len(result.loaded) == 1
    assert len(export_filters(sandbox)) == exports_before + 1
    loaded = read_parquet_dataset(str(tmp_path / "lake"), dataset)
    assert loaded.num_rows == 4 * 30
    assert len(set(loaded.column("transaction_token").to_pylist())) == 4 * 30


class FakeTime:
    """A clock that advances only when something sleeps, shared by threads."""

    def __init__(self):
        import threading

        self.now = 0.0
        self.sleeps = []
        self._lock = threading.Lock()

    def clock(self):
        with self._lock:
            return self.now

    def sleep(self, seconds):
        import time

        with self._lock:
            self.sleeps.append(seconds)
            # At least a millisecond: a sleep shorter than the float step of
            # a large `now` would leave the clock where it was, forever.
            self.now += max(seconds, 0.001)
        # Let other threads run, or polling threads that never really sleep
        # can starve the sandbox thread that builds the export.
        time.sleep(0.001)


def test_backfill_workers_share_request_budget(sandbox, sandbox_settings, tmp_path):
    from connector.extract.budget import RequestBudget
    from connector.extract.client import DivaClient

    settings = sandbox_settings(parquet=str(tmp_path / "lake"))
    dataset = load_dataset(DATASET)
    fake = FakeTime()
    budget = RequestBudget(5, 300.0, sleep=fake.sleep, clock=fake.clock)
    client = DivaClient(settings, sleep=fake.sleep, clock=fake.clock, budget=budget)

    result = backfill(dataset, date(2024, 3, 1), date(2024, 3, 8), settings,
                      window_days=2, workers=3, client=client)

    assert len(result.loaded) == 4
    assert result.rows_read == 8 * 30
    assert len(export_filters(sandbox)) == 4
    requests_sent = len(sandbox.requests)
    assert requests_sent > 5
    # Every request of every worker went through the one budget of 5 per
    # 300 s, so the run had to wait about 300 s per 5 requests beyond the
    # first five.
    waited = sum(s for s in fake.sleeps if s >= 1.0)
    assert waited >= 300.0 * ((requests_sent - 1) // 5) * 0.9


def test_run_all_reports_each_dataset(sandbox, sandbox_settings, tmp_path):
    settings = sandbox_settings(
        parquet=str(tmp_path / "lake"),
        start_date=date(2024, 3, 1),
        datasets=[{"name": DATASET}, {"name": "nosuch/detail"},
                  {"name": "cards/detail",
                   "warehouse": "postgresql://nobody@127.0.0.1:1/none", "table": "t"},
                  {"name": "settlements/detail"}],
    )

    outcomes = run_all(settings, today=date(2024, 3, 2))

    assert [o.name for o in outcomes] == [
        DATASET, "nosuch/detail", "cards/detail", "settlements/detail"
    ]
    assert outcomes[0].summary.rows_read == 60
    assert outcomes[1].error is not None
    assert outcomes[2].error is not None
    assert outcomes[3].summary is not None


def _all_config(sandbox, tmp_path) -> None:
    (tmp_path / "diva-connector.toml").write_text(
        f'base_url = "{sandbox.base_url}"\n'
        f'app_token = "{sandbox.app_token}"\n'
        f'access_token = "{sandbox.access_token}"\n'
        f'program = "{sandbox.program}"\n'
        'poll_interval_s = 0.01\n'
        f'work_dir = "{tmp_path / "work"}"\n'
        f'parquet = "{tmp_path / "lake"}"\n'
        'start_date = 2024-03-01\n'
        '[[datasets]]\nname = "authorizations/detail"\n'
        '[[datasets]]\nname = "nosuch/detail"\n'
    )


def test_run_all_exit_code_and_json(sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _all_config(sandbox, tmp_path)

    result = CliRunner().invoke(main, ["run", "--all", "--json", "--end", "2024-03-01"])

    assert result.exit_code == 1
    outcomes = json.loads(result.stdout)
    assert outcomes[0]["ok"] is True
    assert outcomes[1]["ok"] is False
    assert "nosuch/detail" in outcomes[1]["error"]


def test_run_all_uses_start_and_end(sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _all_config(sandbox, tmp_path)

    result = CliRunner().invoke(
        main, ["run", "--all", "--start", "2024-03-02", "--end", "2024-03-03"]
    )

    assert result.exit_code == 1, result.output
    assert export_filters(sandbox) == ["2024-03-02..2024-03-03"]


def test_run_all_dry_run_exports_nothing(sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _all_config(sandbox, tmp_path)

    result = CliRunner().invoke(
        main, ["run", "--all", "--start", "2024-03-02", "--end", "2024-03-03", "--dry-run"]
    )

    assert result.exit_code == 0, result.output
    assert "transaction_timestamp=2024-03-02..2024-03-03" in result.output
    assert "nosuch/detail: would fail" in result.output
    assert export_filters(sandbox) == []
    assert not (tmp_path / "lake").exists()


def test_dry_run_masks_secrets_and_exports_nothing(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("DIVA_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("DIVA_APP_TOKEN", sandbox.app_token)
    monkeypatch.setenv("DIVA_ACCESS_TOKEN", sandbox.access_token)
    monkeypatch.setenv("DIVA_PROGRAM", sandbox.program)
    warehouse = "postgresql://etl:hunter2-pass@127.0.0.1/warehouse"

    result = CliRunner().invoke(
        main,
        ["run", DATASET, "--start", "2024-03-01", "--end", "2024-03-02", "--dry-run",
         "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 0, result.output
    assert "transaction_timestamp=2024-03-01..2024-03-02" in result.output
    assert sandbox.access_token not in result.output
    assert export_filters(sandbox) == []

    result = CliRunner().invoke(
        main,
        ["run", DATASET, "--start", "2024-03-01", "--end", "2024-03-02", "--dry-run",
         "--warehouse", warehouse, "--table", "t"],
    )
    assert result.exit_code == 0, result.output
    assert "upsert into table t" in result.output
    assert "hunter2-pass" not in result.output


@pytest.mark.parametrize(("signal_name", "exit_code"), [("SIGINT", 130),
                                                        ("SIGTERM", 143)])
def test_interrupted_backfill_stops_and_resumes(sandbox, tmp_path, signal_name,
                                                exit_code):
    import os
    import signal
    import subprocess
    import sys
    import time

    sandbox.faults.pending_s = 0.6
    env = {
        **os.environ,
        "DIVA_BASE_URL": sandbox.base_url,
        "DIVA_APP_TOKEN": sandbox.app_token,
        "DIVA_ACCESS_TOKEN": sandbox.access_token,
        "DIVA_PROGRAM": sandbox.program,
        "DIVA_POLL_INTERVAL_S": "0.05",
        "DIVA_WORK_DIR": str(tmp_path / "work"),
    }
    command = [
        sys.executable, "-m", "connector.cli", "backfill", DATASET,
        "--start", "2024-03-01", "--end", "2024-03-08", "--window", "1d",
        "--workers", "2", "--parquet", str(tmp_path / "lake"),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    # Signal once the backfill has started, not while Python is starting.
    first_lines = []
    for line in process.stderr:
        first_lines.append(line)
        if "requested" in line:
            break
    time.sleep(0.2)
    process.send_signal(getattr(signal, signal_name))
    _, rest = process.communicate(timeout=60)
    stderr = "".join(first_lines) + rest

    assert process.returncode == exit_code, stderr
    assert len(export_filters(sandbox)) < 8

    sandbox.faults.pending_s = 0.0
    resumed = subprocess.run(command, env=env, capture_output=True, text=True,
                             timeout=120)

    assert resumed.returncode == 0, resumed.stderr
    loaded = read_parquet_dataset(str(tmp_path / "lake"), load_dataset(DATASET))
    tokens = loaded.column("transaction_token").to_pylist()
    assert len(tokens) == 8 * 30
    assert len(set(tokens)) == 8 * 30
