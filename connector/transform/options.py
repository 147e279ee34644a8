"""Options of the transform stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.settings import Settings

_BAD_ROW_POLICIES = ("fail", "quarantine")
_AMBIGUOUS_TIME_POLICIES = ("raise", "earliest", "latest")


@dataclass(frozen=True)
class TransformOptions:
    """Options for decompressing, parsing and typing an export file.

    Attributes:
        source_timezone: IANA zone in which zone-less timestamps are read.
        on_bad_rows: `fail` stops at the first bad value; `quarantine` sets
            each bad row aside (see `ExportReader.rejects`) and goes on.
        chunk_bytes: Bytes of CSV parsed per batch; peak memory is a small
            multiple of it.
        max_uncompressed_bytes: Decompressed size, in bytes, above which the
            file is rejected as a decompression bomb.
        max_expansion_ratio: Decompressed size divided by file size above
            which the file is rejected as a decompression bomb.
        ambiguous_times: What to do with a zone-less time that occurs twice
            (clocks go back) or never (clocks skip ahead) in
            `source_timezone`: `raise`, or take the `earliest` or `latest`
            of the candidate instants.
    """

    source_timezone: str = "UTC"
    on_bad_rows: str = "fail"
    chunk_bytes: int = 1024 * 1024
    max_uncompressed_bytes: int = 50 * 1024**3
    max_expansion_ratio: float = 1000.0
    ambiguous_times: str = "raise"

    def __post_init__(self) -> None:
        if self.on_bad_rows not in _BAD_ROW_POLICIES:
            raise ConfigError(
                f"Invalid on_bad_rows {self.on_bad_rows!r}: expected one of "
                f"{', '.join(_BAD_ROW_POLICIES)}."
            )
        if self.ambiguous_times not in _AMBIGUOUS_TIME_POLICIES:
            raise ConfigError(
                f"Invalid ambiguous_times {self.ambiguous_times!r}: expected one of "
                f"{', '.join(_AMBIGUOUS_TIME_POLICIES)}."
            )
        try:
            ZoneInfo(self.source_timezone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ConfigError(
                f"Invalid source_timezone {self.source_timezone!r}: use an IANA "
                "name such as UTC or America/New_York."
            ) from err
        if self.chunk_bytes < 1:
            raise ConfigError(f"Invalid chunk_bytes {self.chunk_bytes}: must be >= 1.")

    @classmethod
    def from_settings(cls, settings: Settings | Any) -> TransformOptions:
        """Build the options from the same-named fields of `Settings`.

        Fields that the settings object does not have keep their defaults.
        """
        values = {}
        for name in cls.__dataclass_fields__:
            if hasattr(settings, name):
                values[name] = getattr(settings, name)
        return cls(**values)
