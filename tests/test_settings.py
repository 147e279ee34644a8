"""Settings: precedence of sources, validation messages, secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_toml_then_environment_then_overrides(tmp_path, monkeypatch):
    config = tmp_path / "settings.toml"
    config.write_text('program = "from_file"\ncompress = "zip"\nmax_count = 5000\n')
    monkeypatch.setenv("DIVA_PROGRAM", "from_env")
    monkeypatch.setenv("DIVA_MAX_COUNT", "6000")

    settings = load_settings(config, max_count=7000)

    assert settings.compress == "zip"
    assert settings.program == "from_env"
    assert settings.max_count == 7000


def test_default_config_file_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "diva-connector.toml").write_text('program = "local"\n')

    assert load_settings().program == "local"


def test_missing_config_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_unknown_setting_in_file_is_named(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text('progam = "typo"\n')

    with pytest.raises(ConfigError, match="progam: unknown setting"):
        load_settings(config)


def test_invalid_value_names_setting_and_variable():
    with pytest.raises(ConfigError) as caught:
        load_settings(None, poll_interval_s=-1)

    assert "poll_interval_s" in str(caught.value)
    assert "DIVA_POLL_INTERVAL_S" in str(caught.value)


def test_invalid_secret_is_not_echoed():
    with pytest.raises(ConfigError) as caught:
        load_settings(None, app_token=["not", "a", "string", "s3cr3t"])

    assert "s3cr3t" not in str(caught.value)


def test_unknown_time_zone_rejected():
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        load_settings(None, source_timezone="Mars/Olympus")


def test_missing_credentials_name_variables(monkeypatch):
    for name in ("DIVA_APP_TOKEN", "DIVA_ACCESS_TOKEN", "DIVA_PROGRAM"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(None, access_token="x")

    with pytest.raises(ConfigError) as caught:
        settings.require_credentials()

    assert caught.value.exit_code == 2
    assert "DIVA_APP_TOKEN" in str(caught.value)
    assert "DIVA_PROGRAM" in str(caught.value)
    assert "DIVA_ACCESS_TOKEN" not in str(caught.value)


def test_secrets_hidden_from_repr_and_listed_for_masking():
    settings = load_settings(
        None,
        app_token="app-123",
        access_token="pass-456",
        warehouse="postgresql://etl:pw-789@db/warehouse",
    )

    shown = repr(settings)
    assert "app-123" not in shown
    assert "pass-456" not in shown
    assert "pw-789" not in shown
    assert {"app-123", "pass-456", "pw-789"} <= set(settings.secrets())


def test_example_config_documents_every_setting():
    text = (ROOT / "config.example.toml").read_text()
    documented = set(re.findall(r"^# ([a-z_0-9]+) =", text, flags=re.MULTILINE))
    documented |= set(re.findall(r"^# \[\[([a-z_]+)\]\]", text, flags=re.MULTILINE))
    documented -= {"name", "table", "lookback_days", "parquet", "start_date"} - set(
        Settings.model_fields
    )

    assert documented == set(Settings.model_fields)


def test_example_config_values_are_valid(tmp_path):
    lines = (ROOT / "config.example.toml").read_text().splitlines()
    active = [
        line[2:] for line in lines
        if re.match(r"^# ([a-z_0-9]+ = |\[\[)", line) and "..." not in line
    ]
    config = tmp_path / "example.toml"
    config.write_text("\n".join(active) + "\n")

    settings = load_settings(config)

    assert settings.table == "diva_authorizations"
    assert [job.name for job in settings.datasets] == [
        "authorizations/detail", "settlements/detail", "cards/detail"
    ]


def test_dataset_entry_error_names_entry():
    with pytest.raises(ConfigError) as caught:
        load_settings(None, datasets=[{"name": "a"}, {"name": "b", "lookback_days": -2}])

    assert "[[datasets]] entry 2, lookback_days" in str(caught.value)
    assert "DIVA_DATASETS" not in str(caught.value)


def test_python_api_rejects_impossible_date():
    import connector

    with pytest.raises(ConfigError, match="'2024-13-01'"):
        connector.read_dataset("authorizations/detail", "2024-13-01", "2024-03-02")


def test_password_in_url_query_is_a_secret():
    settings = load_settings(
        None, warehouse="postgresql://etl@db/warehouse?password=PWQ-444"
    )

    assert "PWQ-444" in settings.secrets()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.read_dataset("authorizations/detail", 20240301, "2024-03-02"),
         "20240301"),
        (lambda c: c.load_file("x.csv", None), "None"),
        (lambda c: c.run("authorizations/detail", "2024-02-30", "2024-03-01"),
         "no such day"),
    ],
)
def test_python_api_argument_errors(call, match):
    import connector

    with pytest.raises(ConfigError, match=match):
        call(connector)
