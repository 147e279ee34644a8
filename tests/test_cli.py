"""The command line, run in-process against the sandbox over HTTP."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from connector.cli import main

DATASET = "authorizations/detail"
START, END = "2024-03-01", "2024-03-05"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def sandbox_env(sandbox, tmp_path, monkeypatch):
    """Point the DIVA_* environment at the sandbox, as a user would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIVA_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("DIVA_APP_TOKEN", sandbox.app_token)
    monkeypatch.setenv("DIVA_ACCESS_TOKEN", sandbox.access_token)
    monkeypatch.setenv("DIVA_PROGRAM", sandbox.program)
    monkeypatch.setenv("DIVA_POLL_INTERVAL_S", "0.01")
    monkeypatch.setenv("DIVA_WORK_DIR", str(tmp_path / "work"))
    return sandbox


def expected_amounts(sandbox, start=START, end=END):
    from datetime import date

    rows = sandbox.expected_rows(DATASET, date.fromisoformat(start), date.fromisoformat(end))
    return {
        int(row["transaction_token"]): (
            Decimal(row["transaction_amount"]) if row["transaction_amount"] else None
        )
        for row in rows
    }


def sqlite_amounts(path, table="auths"):
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            f"SELECT transaction_token, transaction_amount FROM {table}"
        ).fetchall()
    return {int(k): (Decimal(str(v)) if v is not None else None) for k, v in rows}


def parquet_amounts(root):
    table = ds.dataset(root / "authorizations" / "detail", partitioning="hive").to_table()
    return dict(
        zip(
            table.column("transaction_token").to_pylist(),
            table.column("transaction_amount").to_pylist(),
            strict=True,
        )
    )


@pytest.mark.parametrize(
    "command", [[], ["run"], ["load"], ["demo"], ["sandbox"], ["datasets"]]
)
def test_help_gives_an_example(runner, command):
    result = runner.invoke(main, [*command, "--help"])

    assert result.exit_code == 0
    assert "Example" in result.output


def test_missing_token_exits_2_naming_variable(runner, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("DIVA_APP_TOKEN", "DIVA_ACCESS_TOKEN", "DIVA_PROGRAM"):
        monkeypatch.delenv(name, raising=False)

    result = runner.invoke(
        main, ["run", DATASET, "--start", START, "--end", END, "--parquet", "out"]
    )

    assert result.exit_code == 2
    assert "DIVA_APP_TOKEN" in result.output


def test_unknown_dataset_exits_2(runner, sandbox_env):
    result = runner.invoke(
        main, ["run", "nosuch/detail", "--start", START, "--end", END, "--parquet", "o"]
    )

    assert result.exit_code == 2
    assert "nosuch/detail" in result.output


def test_bad_date_exits_2(runner, sandbox_env):
    result = runner.invoke(
        main, ["run", DATASET, "--start", "2024-02-30", "--end", END, "--parquet", "o"]
    )

    assert result.exit_code == 2
    assert "2024-02-30" in result.output


def test_no_sink_exits_2(runner, sandbox_env):
    result = runner.invoke(main, ["run", DATASET, "--start", START, "--end", END])

    assert result.exit_code == 2
    assert "--parquet" in result.output


@pytest.mark.parametrize("compress", ["gz", "zip"])
def test_run_loads_exact_rows_into_both_sinks(runner, sandbox_env, tmp_path, compress):
    result = runner.invoke(
        main,
        [
            "run", DATASET, "--start", START, "--end", END, "--compress", compress,
            "--parquet", str(tmp_path / "lake"),
            "--warehouse", f"sqlite:///{tmp_path / 'w.db'}", "--table", "auths",
        ],
    )

    assert result.exit_code == 0, result.output
    expected = expected_amounts(sandbox_env)
    assert len(expected) == 5 * 30
    assert parquet_amounts(tmp_path / "lake") == expected
    assert sqlite_amounts(tmp_path / "w.db") == expected
    assert f"{len(expected):,} rows read" in result.output


def test_rerun_is_idempotent_and_updates_changed_rows(runner, sandbox_env, tmp_path):
    args = [
        "run", DATASET, "--start", START, "--end", END,
        "--parquet", str(tmp_path / "lake"),
        "--warehouse", f"sqlite:///{tmp_path / 'w.db'}", "--table", "auths",
    ]
    assert runner.invoke(main, args).exit_code == 0
    first = sqlite_amounts(tmp_path / "w.db")

    assert runner.invoke(main, args).exit_code == 0
    assert sqlite_amounts(tmp_path / "w.db") == first
    assert parquet_amounts(tmp_path / "lake") == first

    sandbox_env.revision = 1
    assert runner.invoke(main, args).exit_code == 0
    changed = expected_amounts(sandbox_env)
    assert changed != first
    assert sqlite_amounts(tmp_path / "w.db") == changed
    assert parquet_amounts(tmp_path / "lake") == changed


def test_json_summary(runner, sandbox_env, tmp_path):
    result = runner.invoke(
        main,
        ["run", DATASET, "--start", START, "--end", START, "--json",
         "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dataset"] == DATASET
    assert summary["window"] == f"{START}..{START}"
    assert summary["rows_read"] == 30
    assert summary["sinks"][0]["rows_written"] == 30


def test_refused_credentials_exit_2_without_secret(runner, sandbox_env, monkeypatch,
                                                   tmp_path):
    monkeypatch.setenv("DIVA_ACCESS_TOKEN", "wrong-secret-value")

    result = runner.invoke(
        main, ["-v", "run", DATASET, "--start", START, "--end", END,
               "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 2
    assert "401" in result.output
    assert "wrong-secret-value" not in result.output


def test_load_command_types_a_file_on_disk(runner, sandbox_env, tmp_path):
    import requests

    response = requests.get(
        f"{sandbox_env.base_url}/views/{DATASET}/csv",
        params={"program": sandbox_env.program,
                "transaction_timestamp": f"{START}..{START}"},
        auth=(sandbox_env.app_token, sandbox_env.access_token),
        timeout=10,
    )
    token = response.json()["token"]
    while True:
        download = requests.get(
            f"{sandbox_env.base_url}/download", params={"token": token},
            auth=(sandbox_env.app_token, sandbox_env.access_token), timeout=10,
        )
        if download.status_code == 200:
            break
    export = tmp_path / token
    export.write_bytes(download.content)

    result = runner.invoke(
        main, ["load", str(export), "--dataset", DATASET,
               "--warehouse", f"sqlite:///{tmp_path / 'w.db'}", "--table", "auths"],
    )

    assert result.exit_code == 0, result.output
    assert sqlite_amounts(tmp_path / "w.db") == expected_amounts(
        sandbox_env, START, START
    )


def test_load_missing_file_exits_2(runner, tmp_path):
    result = runner.invoke(
        main, ["load", str(tmp_path / "absent.csv.gz"), "--dataset", DATASET,
               "--parquet", str(tmp_path)],
    )

    assert result.exit_code == 2
    assert "absent.csv.gz" in result.output


def test_datasets_lists_key_and_date_column(runner):
    result = runner.invoke(main, ["datasets"])

    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if l.startswith(DATASET))
    assert "transaction_token" in line
    assert "transaction_timestamp" in line


def test_demo_loads_and_checks_a_month(runner, tmp_path):
    result = runner.invoke(main, ["demo", "--dir", str(tmp_path / "demo"),
                                  "--rows-per-day", "20"])

    assert result.exit_code == 0, result.output
    assert "match" in result.output
    assert (tmp_path / "demo" / "warehouse.db").is_file()
    assert any((tmp_path / "demo" / "authorizations" / "detail").glob("*=*/*.parquet"))


def test_failed_json_run_prints_json_error(runner, sandbox_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DIVA_ACCESS_TOKEN", "wrong-secret-value")

    result = runner.invoke(
        main, ["run", DATASET, "--start", START, "--end", END, "--json",
               "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["ok"] is False
    assert error["exit_code"] == 2
    assert "wrong-secret-value" not in result.stdout


def test_json_log_lines_carry_utc_time(runner, sandbox_env, tmp_path):
    result = runner.invoke(
        main, ["--log-format", "json", "run", DATASET, "--start", START,
               "--end", START, "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()
               if line.startswith("{")]
    assert records
    assert all(record["time"].endswith("+00:00") for record in records)


def test_table_without_warehouse_exits_2(runner, sandbox_env):
    result = runner.invoke(
        main, ["run", DATASET, "--start", START, "--end", END, "--table", "t"]
    )

    assert result.exit_code == 2
    assert "--warehouse" in result.output


def test_warehouse_that_is_not_a_url_exits_2(runner, sandbox_env, tmp_path):
    result = runner.invoke(
        main, ["run", DATASET, "--start", START, "--end", END,
               "--warehouse", "not a url", "--table", "t"],
    )

    assert result.exit_code == 2
    assert "not a url" in result.output
    assert not (tmp_path / "not a url").exists()


def test_unknown_dataset_suggests_close_name(runner, sandbox_env):
    result = runner.invoke(
        main, ["run", "authorization/detail", "--start", START, "--end", END,
               "--parquet", "o"]
    )

    assert result.exit_code == 2
    assert "Did you mean authorizations/detail" in result.output


def test_impossible_date_says_no_such_day(runner, sandbox_env):
    result = runner.invoke(
        main, ["run", DATASET, "--start", "2024-02-30", "--end", END, "--parquet", "o"]
    )

    assert result.exit_code == 2
    assert "no such day" in result.output


def test_sandbox_port_in_use_exits_2(runner, sandbox):
    port = int(sandbox.base_url.split(":")[2].split("/")[0])

    result = runner.invoke(main, ["sandbox", "--port", str(port)])

    assert result.exit_code == 2
    assert f"--port" in result.output


def test_schemas_pull_into_folder_reports_changes(runner, sandbox_env, tmp_path):
    from connector.datasets import schemas_root

    packaged = (schemas_root() / "authorizations" / "detail.json").read_text()

    result = runner.invoke(
        main, ["schemas", "pull", DATASET, "--dir", str(tmp_path / "live")]
    )

    assert result.exit_code == 0, result.output
    assert DATASET in result.output
    refreshed = json.loads((tmp_path / "live" / DATASET).with_suffix(".json")
                           .read_text())
    assert refreshed["key"] == ["transaction_token"]
    assert all(column["confirmed"] for column in refreshed["columns"])
    assert (schemas_root() / "authorizations" / "detail.json").read_text() == packaged


def test_check_reports_accepted_credentials(runner, sandbox_env):
    result = runner.invoke(main, ["check"])

    assert result.exit_code == 0, result.output
    assert "Credentials accepted" in result.output
    assert "can read authorizations/detail" in result.output


def test_check_wrong_program_exits_2(runner, sandbox_env, monkeypatch):
    monkeypatch.setenv("DIVA_PROGRAM", "someone_else")

    result = runner.invoke(main, ["check"])

    assert result.exit_code == 2
    assert "403003" in result.output


def test_extract_flags_override_environment(runner, sandbox_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DIVA_MAX_REEXPORTS", "5")
    sandbox_env.faults.expire_first_download(times=None)

    result = runner.invoke(
        main, ["run", DATASET, "--start", START, "--end", START, "--max-reexports",
               "1", "--parquet", str(tmp_path / "lake")],
    )

    assert result.exit_code == 1
    assert "max_reexports=1" in result.output
