"""Settings for every stage, read from a TOML file, the environment and flags.

Precedence, lowest to highest: the TOML file (`--config FILE`, else
`diva-connector.toml` in the working directory when present), environment
variables named `DIVA_<SETTING>` (for example `DIVA_APP_TOKEN`), then values
passed in code or on the command line.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from connector.errors import ConfigError

PRODUCTION_BASE_URL = "https://diva-api.marqeta.com/data/v2"
DEFAULT_CONFIG_FILE = "diva-connector.toml"

#: DiVA's own limits on rows per export.
DEFAULT_EXPORT_ROW_CAP = 1_048_575
MAX_EXPORT_ROW_CAP = 5_000_000


class DatasetJob(BaseModel):
    """One entry of `[[datasets]]` in the config file, run by `run --all`.

    Fields left out take the top-level settings' values.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    parquet: str | None = None
    warehouse: SecretStr | None = None
    table: str | None = None
    write: Literal["upsert", "append", "replace"] | None = None
    start_date: date | None = None
    lookback_days: int | None = Field(None, ge=0)


_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    """Every setting of the connector, with its default.

    Each field can be set in the TOML file under its own name, or in the
    environment as `DIVA_` followed by the name in capitals.
    """

    model_config = SettingsConfigDict(
        env_prefix="DIVA_", extra="forbid", validate_default=True
    )

    # Connection
    base_url: str = Field(
        PRODUCTION_BASE_URL, description="DiVA API root, up to and including /v2."
    )
    app_token: SecretStr | None = Field(
        None, description="Application token, sent as the Basic auth user name."
    )
    access_token: SecretStr | None = Field(
        None, description="Access token, sent as the Basic auth password."
    )
    program: str | None = Field(
        None, description="Program short name; several may be comma-separated."
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="Seconds to wait for a response to start."
    )

    # Extract
    compress: Literal["gz", "zip"] = Field("gz", description="Export compression.")
    max_count: int = Field(
        DEFAULT_EXPORT_ROW_CAP,
        ge=1,
        le=MAX_EXPORT_ROW_CAP,
        description="Row cap per export; a file holding exactly this many rows "
        "is treated as truncated and its window split.",
    )
    retry_max_attempts: int = Field(
        6, ge=1, description="Attempts per request, the first one included."
    )
    retry_max_wait_s: float = Field(
        60.0, gt=0, description="Maximum single wait between retries, in seconds."
    )
    retry_total_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Maximum total time spent retrying one request, in seconds.",
    )
    poll_interval_s: float = Field(
        2.0, gt=0, description="First wait between download polls, in seconds."
    )
    poll_max_interval_s: float = Field(
        30.0, gt=0, description="Maximum wait between download polls, in seconds."
    )
    poll_timeout_s: float = Field(
        3600.0, gt=0, description="Give up on an export still pending after this."
    )
    max_reexports: int = Field(
        2, ge=0, description="New exports allowed after a file expired (410)."
    )
    size_windows: bool = Field(
        False,
        description="Ask DiVA's JSON view how many rows a window contains before "
        "exporting it: split windows over max_count up front, and warn when the "
        "rows read differ from that count.",
    )
    requests_per_5min: int = Field(
        300, ge=1, description="Client-side request budget shared by a run."
    )
    work_dir: Path = Field(
        Path(".diva-connector"),
        description="Run directory for export tokens and downloaded files.",
    )
    keep_files: bool = Field(
        False, description="Keep downloaded export files after a successful load."
    )

    # Transform
    source_timezone: str = Field(
        "UTC",
        description="Zone of DiVA's zone-less timestamps and of the days of "
        "its windows (IANA name).",
    )
    ambiguous_times: Literal["raise", "earliest", "latest"] = Field(
        "raise",
        description="What to do with a zone-less time that is ambiguous or does "
        "not exist in source_timezone (daylight saving changes).",
    )
    on_bad_rows: Literal["fail", "quarantine"] = Field(
        "fail",
        description="fail: stop at the first bad value; quarantine: "
        "set bad rows aside in a rejects file and table.",
    )
    chunk_bytes: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        description="Bytes of CSV parsed per batch; bounds memory use.",
    )
    max_uncompressed_bytes: int = Field(
        50 * 1024**3,
        ge=1,
        description="Reject an export that inflates beyond this many bytes.",
    )
    max_expansion_ratio: float = Field(
        1000.0, gt=1, description="Reject an export that inflates more than this."
    )

    # Load
    parquet: str | None = Field(
        None, description="Parquet destination: a folder or an fsspec URL."
    )
    warehouse: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the warehouse; may hold a password."
    )
    table: str | None = Field(None, description="Warehouse table name.")
    write: Literal["upsert", "append", "replace"] = Field(
        "upsert",
        description="How rows meet the existing warehouse table (Parquet "
        "replaces the window's rows).",
    )
    audit_table: str = Field("diva_loads", description="Warehouse table of loads.")
    state_table: str = Field(
        "diva_state", description="Warehouse table of each dataset's high-water mark."
    )

    # Incremental runs and backfills
    start_date: date | None = Field(
        None, description="First day of a dataset's first incremental run."
    )
    lookback_days: int = Field(
        3,
        ge=0,
        description="Days before the high-water mark re-read by each "
        "incremental run, since settlement and clearing rows change later.",
    )
    workers: int = Field(
        2, ge=1, le=16, description="Windows exported at once by a backfill."
    )
    fail_on_empty: bool = Field(
        False,
        description="Fail a run that finds zero rows where earlier runs "
        "found some (it always warns).",
    )
    datasets: list[DatasetJob] = Field(
        default_factory=list,
        description="Datasets run by `run --all`, each with its own sinks.",
    )

    @field_validator("source_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as UTC or "
                "America/New_York"
            ) from err
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, config_file))
        return tuple(sources)

    def require_credentials(self) -> None:
        """Check that the settings needed to call DiVA are present.

        Raises:
            ConfigError: A token or the program is missing; the message
                names the environment variable to set.
        """
        missing = [
            f"DIVA_{name.upper()}"
            for name in ("app_token", "access_token", "program")
            if not getattr(self, name)
        ]
        if missing:
            pronoun = "it" if len(missing) == 1 else "them"
            raise ConfigError(
                f"Missing {', '.join(missing)}: set {pronoun} in the environment or "
                "in the config file (see config.example.toml).",
                missing=missing,
            )

    def for_job(self, job: DatasetJob) -> Settings:
        """Return these settings with the values `job` sets in place."""
        values = {
            name: getattr(job, name)
            for name in (
                "parquet",
                "warehouse",
                "table",
                "write",
                "start_date",
                "lookback_days",
            )
            if getattr(job, name) is not None
        }
        if "parquet" in values or "warehouse" in values:
            values.setdefault("parquet", None)
            values.setdefault("warehouse", None)
        return self.model_copy(update=values)

    def secrets(self) -> list[str]:
        """Return every secret value held by these settings, for masking.

        Of a warehouse URL only the password is secret, so that logs can
        still show which database a load went to.
        """
        values = [
            secret.get_secret_value()
            for secret in (self.app_token, self.access_token)
            if secret is not None and secret.get_secret_value()
        ]
        for url in (self.warehouse, *(job.warehouse for job in self.datasets)):
            password = _url_password(url.get_secret_value()) if url else None
            if password:
                values.append(password)
        return values


def _url_password(url: str) -> str | None:
    """Return the password written in a URL, in its user part or its query."""
    match = re.match(r"^[^:/]+://[^:/@]*:([^@]*)@", url) or re.search(
        r"[?&](?:password|passwd|pwd|sslpassword)=([^&#]+)", url, re.IGNORECASE
    )
    return match.group(1) if match else None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings from the TOML file, the environment and `overrides`.

    Args:
        config_file: TOML file to read; when None, `diva-connector.toml` in
            the working directory is read if it exists.
        **overrides: Values that win over every other source, such as
            command-line flags. None values are ignored.

    Raises:
        ConfigError: The file is missing or unreadable, or a value is invalid.
    """
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"Config file {path} not found.", path=str(path))
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        path = default if default.is_file() else None

    given = {name: value for name, value in overrides.items() if value is not None}
    token = _config_file.set(path)
    try:
        return Settings(**given)
    except ValidationError as err:
        raise ConfigError(_describe_validation_error(err, path)) from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"Cannot read config file {path}: {err}") from None
    finally:
        _config_file.reset(token)


def _describe_validation_error(err: ValidationError, path: Path | None) -> str:
    lines = ["Invalid settings:"]
    where = f" in {path}" if path else ""
    for problem in err.errors():
        location = [str(part) for part in problem["loc"]]
        name = ".".join(location) or "(settings)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {name}: unknown setting{where}; see config.example.toml.")
            continue
        message = problem["msg"].removeprefix("Value error, ")
        # The input of a secret field is never echoed back, and a validator's
        # own message already quotes the value.
        shown = problem.get("input")
        quoted = location[0] in _SECRET_FIELDS or repr(shown) in message
        got = "" if quoted else f" (got {shown!r})"
        if location[0] == "datasets" and len(location) > 2:
            entry = int(location[1]) + 1
            lines.append(
                f"  [[datasets]] entry {entry}, {'.'.join(location[2:])}: "
                f"{message}{got}; fix it{where}."
            )
            continue
        lines.append(
            f"  {name}: {message}{got}; set it with a flag, DIVA_{name.upper()} or "
            "the config file."
        )
    return "\n".join(lines)


_SECRET_FIELDS = {"app_token", "access_token", "warehouse"}


def parse_date(value: str, name: str) -> date:
    """Parse a `YYYY-MM-DD` command-line or config date.

    Raises:
        ConfigError: The value is not a valid date.
    """
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError) as err:
        reason = "not a date in the form YYYY-MM-DD"
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            reason = f"no such day ({err})"
        raise ConfigError(f"Invalid {name} {value!r}: {reason}.") from None
