"""Commit of a Parquet load: plan the swap, stage the manifest, move files.

The `connector.load.parquet` module docstring describes which files a load
replaces and what a reader may see while the files move.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from connector.load.base import LoadResult
from connector.load.parquet_duplicates import _DeduplicatingWriter
from connector.load.parquet_layout import (
    _EPOCH,
    _MANIFESTS,
    _REJECTS,
    _replaces,
    _window_id,
)
from connector.load.parquet_staging import _StagedFile
from connector.load.parquet_upsert import _Upsert

if TYPE_CHECKING:
    from connector.windows import Window

log = logging.getLogger(__name__)


@dataclass
class _Swap:
    """The files that `commit` moves into and out of one partition folder."""

    folder: str
    new: list[tuple[_StagedFile, str]]
    old: list[str]


class _CommittingWriter(_DeduplicatingWriter):
    """The commit steps of `ParquetBatchWriter`: plan, manifest, swap, clean up.

    `ParquetBatchWriter.__init__` sets the state these methods share.
    """

    _root: str
    _location: str
    _sink: str
    _load_id: str
    _rejects_rows: int
    _rows: int
    _upsert: _Upsert | None

    def _plan(self, window: Window | None) -> list[_Swap]:
        """List, per partition folder, the files to move in and to replace.

        Without a window, a dataset with a key is upserted: `_upsert` then
        gets the load's keys and counts, and the plan lists the staged files
        of rows kept from the replaced files.
        """
        window_id = _window_id(window)
        new: dict[str, list[_StagedFile]] = {}
        for staged in self._staged:
            new.setdefault(staged.partition, []).append(staged)

        # A partition whose rows were all superseded has no staged file left,
        # but it is still a day of the load's rows.
        folders = set(new) | set(self._partitions)
        if self._key is None:
            folders.add("")
        elif window is not None:
            folders.update(self._folder((day - _EPOCH).days) for day in window.days)

        partitioned = self._key is not None
        # NOTE: an upsert checks only the folders listed here, so the old row
        # of a key whose new row moved to another day stays if its folder
        # gets no rows from this load (see the module docstring).
        self._upsert = None
        if window is None and self._dataset.key:
            self._upsert = _Upsert(self._load_keys, self._rows)
        plan = []
        for folder in sorted(folders):
            names = self._list_visible(folder)
            named = [
                (staged, f"part-{window_id}-{self._load_id}-{staged.name}")
                for staged in new.get(folder, [])
            ]
            if self._upsert is None and window is not None and partitioned:
                old, kept = self._window_folder(folder, names, window)
                named += kept
            elif self._upsert is None:
                old = [
                    name
                    for name in names
                    if _replaces(name, folder, window, partitioned=partitioned)
                ]
            else:
                old, kept = self._upsert_folder(folder, names, self._upsert)
                named += kept
            plan.append(_Swap(folder, named, old))
        return plan

    def _list_visible(self, folder: str) -> list[str]:
        selector = pafs.FileSelector(self._folder_path(folder), allow_not_found=True)
        return sorted(
            info.base_name
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and not info.base_name.startswith(("_", "."))
        )

    def _stage_extras(
        self, window: Window | None, export_token: str | None, plan: list[_Swap]
    ) -> list[tuple[str, str]]:
        """Stage the manifest and return the moves of the non-data files."""
        moves = []
        rejects = None
        if self._rejects.stream is not None:
            relative = f"{_REJECTS}/{self._load_id}.parquet"
            staged = posixpath.join(self._staging, _REJECTS + ".parquet")
            moves.append((staged, posixpath.join(self._root, relative)))
            rejects = {
                "path": relative,
                "rows": self._rejects_rows,
                "bytes": self._rejects.stream.size,
                "sha256": self._rejects.stream.hexdigest(),
            }

        manifest = self._manifest(window, export_token, plan, rejects)
        staged = posixpath.join(self._staging, "manifest.json")
        self._fs.create_dir(self._staging, recursive=True)
        with self._fs.open_output_stream(staged) as out:
            out.write(json.dumps(manifest, indent=2, ensure_ascii=False).encode())
        relative = f"{_MANIFESTS}/{self._load_id}-{_window_id(window)}.json"
        moves.append((staged, posixpath.join(self._root, relative)))
        return moves

    def _manifest(
        self,
        window: Window | None,
        export_token: str | None,
        plan: list[_Swap],
        rejects: dict | None,
    ) -> dict[str, Any]:
        files = [
            {
                "path": posixpath.join(swap.folder, name),
                "rows": staged.rows,
                "bytes": staged.bytes,
                "sha256": staged.sha256,
            }
            for swap in plan
            for staged, name in swap.new
        ]
        return {
            "dataset": self._dataset.name,
            "load_id": self._load_id,
            "window": _window_json(window),
            "export_token": _mask_token(export_token),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "partition_key": self._key,
            "partitions": [swap.folder for swap in plan if swap.folder],
            "rows": self._rows,
            "rows_superseded": self._rows_superseded,
            "rows_replaced": self._upsert.rows_replaced if self._upsert else None,
            "bytes": sum(item["bytes"] for item in files),
            "compression": self._compression,
            "row_group_rows": self._row_group_rows,
            "files": files,
            "replaced_files": [
                posixpath.join(swap.folder, name) for swap in plan for name in swap.old
            ],
            "rejects": rejects,
        }

    def _swap(self, plan: list[_Swap], moves: list[tuple[str, str]]) -> list[str]:
        """Rename new files in and old files out; return the hidden old files.

        On any failure the renames done so far are undone before re-raising.
        """
        done: list[tuple[str, str]] = []
        trash = []
        try:
            for swap in plan:
                folder_path = self._folder_path(swap.folder)
                if swap.new:
                    self._fs.create_dir(folder_path, recursive=True)
                for staged, name in swap.new:
                    source = posixpath.join(self._staging, swap.folder, staged.name)
                    self._move(source, posixpath.join(folder_path, name), done)
                for name in swap.old:
                    hidden = posixpath.join(
                        folder_path, f".replaced-{self._load_id}-{name}"
                    )
                    self._move(posixpath.join(folder_path, name), hidden, done)
                    trash.append(hidden)

            for source, target in moves:
                self._fs.create_dir(posixpath.dirname(target), recursive=True)
                self._move(source, target, done)
        except BaseException:
            self._undo(done)
            raise
        return trash

    def _move(self, source: str, target: str, done: list[tuple[str, str]]) -> None:
        self._fs.move(source, target)
        done.append((source, target))

    def _undo(self, done: list[tuple[str, str]]) -> None:
        for source, target in reversed(done):
            try:
                self._fs.move(target, source)
            except (OSError, pa.ArrowException) as err:
                log.error(
                    "Could not move %s back to %s while undoing a failed commit: %s",
                    target,
                    source,
                    err,
                )

    def _clean_up(self, plan: list[_Swap], trash: list[str]) -> None:
        """Delete replaced files, emptied partition folders and the staging folder.

        The load is committed already, so failures are only logged. The
        `_staging` folder itself stays, since another load may be using it.
        """
        steps = [partial(self._fs.delete_file, path) for path in trash]
        steps += [
            partial(self._delete_if_empty, self._folder_path(swap.folder))
            for swap in plan
            if swap.folder and swap.old and not swap.new
        ]
        steps.append(partial(self._fs.delete_dir, self._staging))

        errors = []
        for step in steps:
            try:
                step()
            except (OSError, pa.ArrowException) as err:
                errors.append(err)
        if errors:
            log.warning(
                "Committed %s, but %d old or staging files could not be removed "
                "(last error: %s). Readers ignore them; delete them by hand.",
                self._dataset.name,
                len(errors),
                errors[-1],
            )

    def _delete_if_empty(self, path: str) -> None:
        selector = pafs.FileSelector(path, allow_not_found=True)
        if not self._fs.get_file_info(selector):
            self._fs.delete_dir(path)

    def _result(self, plan: list[_Swap], moves: list[tuple[str, str]]) -> LoadResult:
        files = [
            f"{self._location}/{posixpath.join(swap.folder, name)}"
            for swap in plan
            for _, name in swap.new
        ]
        relative = [posixpath.relpath(target, self._root) for _, target in moves]
        rejects = [path for path in relative if path.startswith(_REJECTS + "/")]
        inserted = self._upsert.rows_inserted() if self._upsert else None
        return LoadResult(
            sink=self._sink,
            rows_written=self._rows,
            rows_inserted=inserted,
            rows_updated=None if inserted is None else self._rows - inserted,
            rows_superseded=self._rows_superseded,
            rows_rejected=self._rejects_rows,
            details={
                "root": self._location,
                "files": files,
                "bytes": sum(s.bytes for swap in plan for s, _ in swap.new),
                "manifest": f"{self._location}/{relative[-1]}",
                "rejects_file": f"{self._location}/{rejects[0]}" if rejects else None,
                "partitions": [swap.folder for swap in plan if swap.folder],
                "files_replaced": sum(len(swap.old) for swap in plan),
                "staged_files_rewritten": self._files_rewritten,
                "rows_replaced": self._upsert.rows_replaced if self._upsert else None,
            },
        )


def _window_json(window: Window | None) -> dict[str, str] | None:
    if window is None:
        return None
    return {"start": window.start.isoformat(), "end": window.end.isoformat()}


def _mask_token(token: str | None) -> str | None:
    if token is None:
        return None
    return f"{token[:6]}…" if len(token) > 6 else "…"
