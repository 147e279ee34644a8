"""Fixtures shared by every test folder: the sandbox and the local databases."""

from __future__ import annotations

import os
import uuid

import pytest

IN_CI = os.environ.get("CI") == "true"
POSTGRES_URL = os.environ.get(
    "DIVA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("DIVA_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")


def _require_database(url: str) -> str:
    """Return `url` when its database responds; skip the test otherwise.

    With CI=true an unreachable database fails the test instead, so that a
    green CI run always includes the PostgreSQL and MariaDB tests.
    """
    import sqlalchemy

    from connector.load.sql import normalize_url

    engine = sqlalchemy.create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as err:
        if IN_CI:
            pytest.fail(f"{url} is unreachable and CI=true requires it: {err}")
        pytest.skip(f"{url} is unreachable: {err}")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def pg_url() -> str:
    """URL of the local PostgreSQL test database."""
    return _require_database(POSTGRES_URL)


@pytest.fixture
def mariadb_url() -> str:
    """URL of the local MariaDB test database."""
    return _require_database(MARIADB_URL)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """URL of a fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def warehouse_url(request, tmp_path) -> str:
    """Each warehouse in turn: SQLite, PostgreSQL, MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    if request.param == "postgresql":
        return _require_database(POSTGRES_URL)
    return _require_database(MARIADB_URL)


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sandbox():
    """A sandbox on a free loopback port with small, fast settings."""
    from connector.sandbox import Sandbox

    with Sandbox(seed=7, rows_per_day=30, pending_polls=1) as running:
        yield running


@pytest.fixture
def sandbox_settings(sandbox, tmp_path):
    """Return a settings factory pointed at the sandbox, with fast polling."""
    from connector.settings import load_settings

    def make(**overrides):
        values = dict(
            base_url=sandbox.base_url,
            app_token=sandbox.app_token,
            access_token=sandbox.access_token,
            program=sandbox.program,
            work_dir=tmp_path / "work",
            poll_interval_s=0.01,
            poll_max_interval_s=0.05,
            retry_max_wait_s=0.1,
        )
        values.update(overrides)
        return load_settings(None, **values)

    return make
