"""The run directory: export tokens and files of a run, kept across restarts.

A run killed while polling or downloading can be started again with the same
arguments: the recorded token is polled again instead of exporting anew, as
long as DiVA has not expired the file (60 minutes after it was made). A
downloaded file is reused without asking DiVA at all. The state file is
replaced atomically, so a kill mid-write leaves the previous state whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.errors import ConfigError
from connector.windows import Window

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class RecordedExport:
    """An export token recorded for a window.

    Attributes:
        token: DiVA's export token.
        requested_at: When the export was requested, in seconds since the
            epoch (wall clock, so that it survives a restart).
        compress: `gz` or `zip`.
        max_count: The row cap the export was requested with.
    """

    token: str = field(repr=False)
    requested_at: float
    compress: str
    max_count: int | None


def window_key(window: Window | None) -> str:
    """Return the key a window is recorded under (`all` for no window)."""
    return window.to_filter() if window is not None else "all"


class RunDirectory:
    """The folder of one run: its downloaded files and its resumable state.

    Open it with `RunDirectory.open`. One instance may be shared by the
    threads of a backfill; every method is thread-safe.
    """

    def __init__(
        self,
        path: Path,
        run_key: str,
        state: dict[str, Any],
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.run_key = run_key
        self._state = state
        self._now = now
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, work_dir: Path, run_key: str, *, now: Callable[[], float] = time.time
    ) -> RunDirectory:
        """Open the run directory for `run_key`, resuming its state if present.

        Args:
            work_dir: The connector's work folder (`work_dir` setting).
            run_key: What identifies the run: the dataset, the window range
                and the options that change the exported files. A run started
                again with the same key resumes; another key starts afresh.
            now: Returns the wall-clock time; tests pass a fake.

        Raises:
            ConfigError: The folder cannot be created or its state read.
        """
        digest = hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:16]
        path = Path(work_dir) / "runs" / digest
        try:
            path.mkdir(parents=True, exist_ok=True)
            state = _read_state(path / STATE_FILE, run_key)
        except OSError as err:
            raise ConfigError(
                f"Cannot use the run directory {path}: {err}. Check the work_dir "
                "setting and its permissions.",
                path=str(path),
            ) from err

        run = cls(path, run_key, state, now=now)
        if state["windows"]:
            log.info(
                "Resuming run in %s: %d window(s) recorded.",
                path,
                len(state["windows"]),
            )
        return run

    def now(self) -> float:
        """Return the wall-clock time in seconds since the epoch."""
        return self._now()

    def record_token(
        self,
        window: Window | None,
        token: str,
        *,
        compress: str,
        max_count: int | None,
    ) -> None:
        """Record the export token of a window, replacing an older one."""
        with self._lock:
            entry = self._entry(window)
            entry["export"] = {
                "token": token,
                "requested_at": self._now(),
                "compress": compress,
                "max_count": max_count,
            }
            entry.pop("file", None)
            self._save()

    def recorded_export(self, window: Window | None) -> RecordedExport | None:
        """Return the export recorded for a window, or None."""
        with self._lock:
            export = self._state["windows"].get(window_key(window), {}).get("export")
        return RecordedExport(**export) if export else None

    def forget_export(self, window: Window | None) -> None:
        """Drop the token recorded for a window, once it expired."""
        with self._lock:
            entry = self._entry(window)
            entry.pop("export", None)
            self._save()

    def record_file(self, window: Window | None, path: Path, token: str) -> None:
        """Record the verified file downloaded for a window."""
        with self._lock:
            self._entry(window)["file"] = {"path": str(path), "token": token}
            self._save()

    def recorded_file(self, window: Window | None) -> Path | None:
        """Return the file recorded for a window if it is still on disk."""
        with self._lock:
            record = self._state["windows"].get(window_key(window), {}).get("file")
        if not record:
            return None
        path = Path(record["path"])
        return path if path.is_file() else None

    def finished(self, window: Window | None) -> bool:
        """Return True when the window was marked finished in this run."""
        with self._lock:
            entry = self._state["windows"].get(window_key(window), {})
            return bool(entry.get("finished"))

    def mark_finished(self, window: Window | None) -> None:
        """Mark a window as loaded, so a resumed run does not export it again."""
        with self._lock:
            self._entry(window)["finished"] = True
            self._save()

    def close(self) -> None:
        """End the run: remove its state and any partial download.

        Call it only when every window finished; a later run with the same
        key then exports again. Downloaded files are left to the caller,
        which may keep them; the folder itself goes once it is empty.
        """
        with self._lock:
            (self.path / STATE_FILE).unlink(missing_ok=True)
            for partial in self.path.glob("*.part"):
                partial.unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                log.debug(
                    "Run directory %s still contains files, so it is kept.", self.path
                )

    def _entry(self, window: Window | None) -> dict[str, Any]:
        return self._state["windows"].setdefault(window_key(window), {})

    def _save(self) -> None:
        target = self.path / STATE_FILE
        descriptor, temp_name = tempfile.mkstemp(
            prefix=".state-", suffix=".tmp", dir=self.path
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(self._state, file, indent=2, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


def _read_state(path: Path, run_key: str) -> dict[str, Any]:
    empty = {"version": STATE_VERSION, "run_key": run_key, "windows": {}}
    if not path.is_file():
        return empty
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("Run state %s is unreadable; starting the run afresh.", path)
        return empty
    if state.get("version") != STATE_VERSION or state.get("run_key") != run_key:
        log.warning("Run state %s belongs to another run; starting afresh.", path)
        return empty
    return state
