"""Incremental state kept with each destination: the high-water mark.

A warehouse keeps it in a table (`diva_state` by default) with one row per
dataset and target table, and a Parquet destination keeps it in
`_state.json` beside the dataset's files. So the state travels with the
data it describes, and two tables loaded from one dataset keep separate
marks. When a dataset has both sinks, the earlier of the two marks wins,
so neither sink misses a window.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

from connector.datasets import Dataset
from connector.errors import LoadError
from connector.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "_state.json"


@dataclass(frozen=True)
class DatasetState:
    """The point the last successful run of a dataset reached.

    Attributes:
        high_water: Last day loaded.
        last_rows: Rows read by the last run, used to flag empty runs.
    """

    high_water: date
    last_rows: int


class StateStore(Protocol):
    """The store in which one destination keeps its datasets' state."""

    def get(self, dataset: Dataset) -> DatasetState | None:
        """Return the dataset's state, or None before its first run."""

    def set(self, dataset: Dataset, state: DatasetState) -> None:
        """Record the dataset's state after a successful run."""


class FileStateStore:
    """State in `_state.json` under a Parquet dataset's folder."""

    def __init__(self, destination: str) -> None:
        self.destination = destination

    def _path(self, dataset: Dataset) -> tuple[object, str]:
        import fsspec

        from connector.load.parquet import dataset_root

        fs, root = fsspec.core.url_to_fs(dataset_root(self.destination, dataset))
        return fs, f"{root.rstrip('/')}/{STATE_FILE}"

    def get(self, dataset: Dataset) -> DatasetState | None:
        """Return the dataset's state, or None before its first run."""
        fs, path = self._path(dataset)
        if not fs.exists(path):
            return None
        with fs.open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
        return DatasetState(date.fromisoformat(data["high_water"]), data["last_rows"])

    def set(self, dataset: Dataset, state: DatasetState) -> None:
        """Record the dataset's state, replacing the file in one rename."""
        fs, path = self._path(dataset)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        data = {
            "dataset": dataset.name,
            "high_water": state.high_water.isoformat(),
            "last_rows": state.last_rows,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        temporary = f"{path}.tmp"
        with fs.open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
        fs.mv(temporary, path)


class SqlStateStore:
    """State in a warehouse table, one row per dataset and target table.

    Raises:
        LoadError: The warehouse cannot be reached or the table created.
    """

    def __init__(self, url: str, table: str, target_table: str) -> None:
        import sqlalchemy as sa

        from connector.load.sql import create_warehouse_engine, mask_url

        self.engine = create_warehouse_engine(url)
        self.target_table = target_table
        metadata = sa.MetaData()
        self.table = sa.Table(
            table,
            metadata,
            sa.Column("dataset", sa.String(200), primary_key=True),
            sa.Column("target_table", sa.String(200), primary_key=True),
            sa.Column("high_water", sa.Date, nullable=False),
            sa.Column("last_rows", sa.BigInteger, nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.SQLAlchemyError as err:
            self.engine.dispose()
            reason = str(getattr(err, "orig", None) or err).splitlines()[0]
            raise LoadError(
                f"Reading the state table {table} at {mask_url(url)} failed: "
                f"{reason}. Check the warehouse URL and that the database is "
                "running.",
                table=table,
            ) from None

    def _where(self, dataset: Dataset) -> object:
        return (self.table.c.dataset == dataset.name) & (
            self.table.c.target_table == self.target_table
        )

    def get(self, dataset: Dataset) -> DatasetState | None:
        """Return the dataset's state, or None before its first run."""
        import sqlalchemy as sa

        query = sa.select(self.table.c.high_water, self.table.c.last_rows).where(
            self._where(dataset)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return DatasetState(row.high_water, row.last_rows) if row else None

    def set(self, dataset: Dataset, state: DatasetState) -> None:
        """Record the dataset's state in one transaction."""
        import sqlalchemy as sa

        with self.engine.begin() as connection:
            connection.execute(sa.delete(self.table).where(self._where(dataset)))
            connection.execute(
                sa.insert(self.table).values(
                    dataset=dataset.name,
                    target_table=self.target_table,
                    high_water=state.high_water,
                    last_rows=state.last_rows,
                    updated_at=datetime.now(UTC),
                )
            )

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def open_state_stores(settings: Settings) -> list[StateStore]:
    """Return a state store for every sink named in the settings."""
    stores: list[StateStore] = []
    if settings.warehouse is not None:
        stores.append(
            SqlStateStore(
                settings.warehouse.get_secret_value(),
                settings.state_table,
                settings.table or "",
            )
        )
    if settings.parquet:
        stores.append(FileStateStore(settings.parquet))
    return stores


def read_state(stores: list[StateStore], dataset: Dataset) -> DatasetState | None:
    """Return the earliest state among the stores; None if any store has none."""
    states = [store.get(dataset) for store in stores]
    if not states or any(state is None for state in states):
        return None
    return min(states, key=lambda state: state.high_water)


def write_state(
    stores: list[StateStore], dataset: Dataset, state: DatasetState
) -> None:
    """Record `state` in every store."""
    for store in stores:
        store.set(dataset, state)
