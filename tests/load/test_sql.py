"""The warehouse loader against real PostgreSQL, MariaDB and SQLite databases."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import sqlalchemy as sa

from connector.datasets import Dataset, rejects_schema
from connector.errors import ConfigError, LoadError
from connector.load import sql_dialects, sql_writer
from connector.load.sql import normalize_url, open_warehouse_writer
from connector.windows import Window

CASES = Path(__file__).parent.parent / "cases"
CASE_DATASET = Dataset.from_file(CASES / "schema.json")
WINDOW = Window(date(2024, 3, 5), date(2024, 3, 5))
T0 = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)


def make_dataset(columns: list[tuple[str, str]], key=("token",), date_column="ts"):
    """Build a small dataset from (name, DiVA type) pairs."""
    return Dataset.from_dict(
        {
            "view": "tests",
            "aggregation": "sql",
            "key": list(key),
            "date_column": date_column,
            "columns": [
                {"field": name, "type": kind, "nullable": name not in key}
                for name, kind in columns
            ],
        }
    )


SMALL = make_dataset(
    [
        ("token", "varchar(36)"),
        ("ts", "timestamp"),
        ("amount", "numeric(12,2)"),
        ("state", "varchar(20)"),
    ]
)


def make_batch(dataset: Dataset, rows: list[dict]) -> pa.RecordBatch:
    """Build a batch of the dataset's Arrow schema; missing values are null."""
    return pa.RecordBatch.from_pylist(rows, schema=dataset.arrow_schema())


def small_row(token: str, minutes: int = 0, amount: str = "1.00", state: str = "NEW"):
    return {
        "token": token,
        "ts": T0 + timedelta(minutes=minutes),
        "amount": Decimal(amount),
        "state": state,
    }


def read_case_csv(name: str) -> pa.Table:
    """Read a case CSV as text and cast it to the case schema; absent columns are null."""
    path = CASES / name
    schema = CASE_DATASET.arrow_schema()
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    raw = pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            strings_can_be_null=False,
        ),
    )
    arrays = []
    for field in schema:
        if field.name in raw.column_names:
            arrays.append(raw.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(raw.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class Warehouse:
    """One test's tables in one database, dropped when the test ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(normalize_url(url))
        suffix = uuid.uuid4().hex[:10]
        self.table = f"t_sql_{suffix}"
        self.audit = f"t_sql_{suffix}_loads"
        self.rejects = f"t_sql_{suffix}_rejects"

    @property
    def kind(self) -> str:
        return {"mariadb": "mysql"}.get(
            self.engine.dialect.name, self.engine.dialect.name
        )

    def open(self, dataset: Dataset = SMALL, **options):
        options.setdefault("audit_table", self.audit)
        return open_warehouse_writer(self.url, self.table, dataset, **options)

    def load(self, dataset: Dataset, *batches: pa.RecordBatch, **options):
        writer = self.open(dataset, **options)
        for batch in batches:
            writer.write(batch)
        return writer.commit(WINDOW, "9f8e7d6c-5b4a-3210-fedc-ba9876543210")

    def execute(self, statement: str) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(statement)

    def quote(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote_identifier(name)

    def rows(self, dataset: Dataset = SMALL) -> dict[tuple, dict]:
        """Return the table's rows by key, values in Python types for every database."""
        names = ", ".join(self.quote(c) for c in dataset.column_names)
        with self.engine.connect() as conn:
            result = conn.exec_driver_sql(
                f"SELECT {names} FROM {self.quote(self.table)}"
            )
            records = [dict(zip(dataset.column_names, row)) for row in result]
        rows = {}
        for record in records:
            for column in dataset.columns:
                record[column.name] = self._python(
                    column.type.kind, record[column.name]
                )
            rows[tuple(record[k] for k in dataset.key)] = record
        return rows

    def _python(self, kind: str, value):
        if value is None:
            return None
        if kind == "decimal" and isinstance(value, str):
            return Decimal(value)
        if kind == "timestamp":
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            return (
                value.replace(tzinfo=UTC)
                if value.tzinfo is None
                else value.astimezone(UTC)
            )
        if kind == "date" and isinstance(value, str):
            return date.fromisoformat(value)
        if kind == "bool":
            return bool(value)
        return value

    def audit_rows(self) -> list[dict]:
        with self.engine.connect() as conn:
            result = conn.exec_driver_sql(
                f"SELECT * FROM {self.quote(self.audit)} ORDER BY load_id"
            )
            return [dict(row._mapping) for row in result]

    def column_types(self) -> dict[str, str]:
        """Return each column's type as the database declares it, upper case."""
        inspector = sa.inspect(self.engine)
        if self.kind == "sqlite":
            with self.engine.connect() as conn:
                info = conn.exec_driver_sql(
                    f"PRAGMA table_info({self.quote(self.table)})"
                )
                return {row[1]: row[2].upper() for row in info}
        return {
            column["name"]: column["type"].compile(dialect=self.engine.dialect).upper()
            for column in inspector.get_columns(self.table)
        }

    def drop(self) -> None:
        for table in (self.table, self.audit, self.rejects):
            self.execute(f"DROP TABLE IF EXISTS {self.quote(table)}")
        self.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb", "mariadb-load-data"])
def warehouse(request):
    """Each database in turn; MariaDB also staging through LOAD DATA LOCAL INFILE."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    elif request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = request.getfixturevalue("mariadb_url")
    if request.param == "mariadb-load-data":
        url += "?local_infile=1"
    created = Warehouse(url)
    yield created
    created.drop()


@pytest.fixture(params=["postgresql", "mariadb"])
def server_warehouse(request):
    url = request.getfixturevalue(
        "pg_url" if request.param == "postgresql" else "mariadb_url"
    )
    created = Warehouse(url)
    yield created
    created.drop()


# --- creation and types -------------------------------------------------------


EXPECTED_TYPES = {
    "postgresql": {
        "token": "VARCHAR(36)",
        "transaction_timestamp": "TIMESTAMP WITH TIME ZONE",
        "amount": "NUMERIC(18, 2)",
        "settlement_date": "DATE",
        "installment_count": "INTEGER",
        "is_recurring": "BOOLEAN",
        "memo": "TEXT",
    },
    "mysql": {
        "token": "VARCHAR(36)",
        "transaction_timestamp": "DATETIME(6)",
        "amount": "DECIMAL(18, 2)",
        "settlement_date": "DATE",
        "installment_count": "INTEGER",
        "is_recurring": "TINYINT(1)",
        "memo": "LONGTEXT",
    },
    "sqlite": {
        "token": "VARCHAR(36)",
        "transaction_timestamp": "TIMESTAMP",
        "amount": "DECIMAL_TEXT(18,2)",
        "settlement_date": "DATE",
        "installment_count": "INTEGER",
        "is_recurring": "BOOLEAN",
        "memo": "TEXT",
    },
}


def test_empty_load_creates_table_with_schema_types(warehouse):
    result = warehouse.load(CASE_DATASET)

    types = warehouse.column_types()
    for column, expected in EXPECTED_TYPES[warehouse.kind].items():
        assert types[column].startswith(expected), (column, types[column])
    assert list(types) == CASE_DATASET.column_names
    key = sa.inspect(warehouse.engine).get_pk_constraint(warehouse.table)
    assert key["constrained_columns"] == ["token"]
    assert result.rows_written == 0
    assert warehouse.rows(CASE_DATASET) == {}


def test_mariadb_table_is_utf8mb4(mariadb_url):
    warehouse = Warehouse(mariadb_url)
    try:
        warehouse.load(SMALL)
        with warehouse.engine.connect() as conn:
            collation = conn.exec_driver_sql(
                "SELECT TABLE_COLLATION FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (warehouse.table,),
            ).scalar_one()
        assert collation.startswith("utf8mb4")
    finally:
        warehouse.drop()


# --- upsert, append, replace -----------------------------------------------


def test_upsert_inserts_then_rerun_changes_nothing(warehouse):
    rows = [small_row("a"), small_row("b", amount="2.50")]

    first = warehouse.load(SMALL, make_batch(SMALL, rows))
    before = warehouse.rows()
    second = warehouse.load(SMALL, make_batch(SMALL, rows))

    assert (first.rows_written, first.rows_inserted, first.rows_updated) == (2, 2, 0)
    assert (second.rows_written, second.rows_inserted, second.rows_updated) == (2, 0, 0)
    assert warehouse.rows() == before
    assert before[("b",)]["amount"] == Decimal("2.50")


def test_upsert_updates_changed_row(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a"), small_row("b")]))

    result = warehouse.load(
        SMALL, make_batch(SMALL, [small_row("b", 5, "9.99", "CLEARED"), small_row("c")])
    )

    rows = warehouse.rows()
    assert (result.rows_inserted, result.rows_updated) == (1, 1)
    assert rows[("b",)]["amount"] == Decimal("9.99")
    assert rows[("b",)]["state"] == "CLEARED"
    assert rows[("a",)]["state"] == "NEW"
    assert len(rows) == 3


def test_duplicates_across_batches_keep_latest_date(warehouse):
    first = make_batch(
        SMALL, [small_row("a", 9, state="LATEST"), small_row("b", 1, state="TIE1")]
    )
    second = make_batch(
        SMALL,
        [
            small_row("a", 3, state="OLDER"),
            small_row("b", 1, state="TIE2"),
            small_row("a", 9, state="LATEST-TIE-LAST"),
        ],
    )

    result = warehouse.load(SMALL, first, second)

    rows = warehouse.rows()
    assert rows[("a",)]["state"] == "LATEST-TIE-LAST"
    assert rows[("b",)]["state"] == "TIE2"
    assert result.rows_written == 2
    assert result.rows_superseded == 3
    assert result.details["rows_read"] == 5


def test_append_inserts_new_keys(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]), mode="append")

    result = warehouse.load(SMALL, make_batch(SMALL, [small_row("b")]), mode="append")

    assert result.rows_inserted == 1
    assert set(warehouse.rows()) == {("a",), ("b",)}


def test_append_of_existing_key_fails_naming_it(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))

    with pytest.raises(LoadError) as caught:
        warehouse.load(
            SMALL,
            make_batch(SMALL, [small_row("new"), small_row("a", 1)]),
            mode="append",
        )

    assert "token='a'" in str(caught.value)
    assert set(warehouse.rows()) == {("a",)}


def test_replace_swaps_all_rows(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a"), small_row("b")]))

    result = warehouse.load(
        SMALL,
        make_batch(SMALL, [small_row("b", 1, "3.00"), small_row("c")]),
        mode="replace",
    )

    rows = warehouse.rows()
    assert set(rows) == {("b",), ("c",)}
    assert rows[("b",)]["amount"] == Decimal("3.00")
    assert result.details["rows_deleted"] == 1
    assert (result.rows_inserted, result.rows_updated) == (1, 1)
    assert result.rows_written == 2


def dated_row(token: str, day: int, hour: int = 10, minute: int = 0):
    """Return a SMALL row stamped on March `day` 2024 at `hour:minute` UTC."""
    return {**small_row(token), "ts": datetime(2024, 3, day, hour, minute, tzinfo=UTC)}


def test_replace_keeps_days_outside_window(warehouse):
    rows = [dated_row("d4", 4), dated_row("d5a", 5, 0), dated_row("d5b", 5, 23, 59)]
    warehouse.load(SMALL, make_batch(SMALL, [*rows, dated_row("d6", 6, 0)]))

    writer = warehouse.open(mode="replace")
    writer.write(make_batch(SMALL, [{**dated_row("d5a", 5), "state": "NEW2"}]))
    result = writer.commit(Window(date(2024, 3, 5), date(2024, 3, 5)), None)

    rows = warehouse.rows()
    assert set(rows) == {("d4",), ("d5a",), ("d6",)}
    assert rows[("d5a",)]["state"] == "NEW2"
    assert result.details["rows_deleted"] == 1
    assert (result.rows_inserted, result.rows_updated) == (0, 1)


def test_replace_hour_window_keeps_other_hours(warehouse):
    rows = [
        dated_row("h9", 5, 9, 59),
        dated_row("h10", 5, 10, 59),
        dated_row("h11", 5, 11),
    ]
    warehouse.load(SMALL, make_batch(SMALL, rows))
    exact = {**dated_row("h10", 5), "ts": datetime(2024, 3, 5, 10, 59, 59, 999999, UTC)}
    hour = Window(datetime(2024, 3, 5, 10), datetime(2024, 3, 5, 10, 59, 59))

    writer = warehouse.open(mode="replace")
    writer.write(make_batch(SMALL, [{**exact, "token": "new"}]))
    result = writer.commit(hour, None)

    assert set(warehouse.rows()) == {("h9",), ("new",), ("h11",)}
    assert result.details["rows_deleted"] == 1


def test_replace_without_window_uses_days_of_rows(warehouse):
    days = [
        dated_row("d3", 3),
        dated_row("d4", 4),
        dated_row("d5", 5),
        dated_row("d7", 7),
    ]
    warehouse.load(SMALL, make_batch(SMALL, days))

    writer = warehouse.open(mode="replace")
    writer.write(make_batch(SMALL, [dated_row("n4", 4, 1)]))
    writer.write(
        make_batch(SMALL, [dated_row("n5", 5, 2), {**small_row("x"), "ts": None}])
    )
    result = writer.commit(None, None)

    assert set(warehouse.rows()) == {("d3",), ("n4",), ("n5",), ("x",), ("d7",)}
    assert result.details["rows_deleted"] == 2


def test_replace_date_column_window(warehouse):
    daily = make_dataset(
        [("token", "varchar(36)"), ("day", "date"), ("state", "varchar(20)")],
        date_column="day",
    )
    stored = [
        {"token": f"t{d}", "day": date(2024, 3, d), "state": "OLD"}
        for d in (4, 5, 6, 7)
    ]
    warehouse.load(daily, make_batch(daily, stored))

    writer = warehouse.open(daily, mode="replace")
    writer.write(make_batch(daily, [{"token": "n", "day": date(2024, 3, 5)}]))
    result = writer.commit(Window(date(2024, 3, 5), date(2024, 3, 6)), None)

    assert set(warehouse.rows(daily)) == {("t4",), ("n",), ("t7",)}
    assert result.details["rows_deleted"] == 2


def test_replace_keyless_counts_every_deleted_row(warehouse):
    keyless = make_dataset([("token", "varchar(36)"), ("ts", "timestamp")], key=())
    stored = [{"token": "a", "ts": T0}, {"token": "a", "ts": T0 + timedelta(days=1)}]
    warehouse.load(keyless, make_batch(keyless, stored), mode="append")

    result = warehouse.load(
        keyless, make_batch(keyless, [{"token": "a", "ts": T0}]), mode="replace"
    )

    with warehouse.engine.connect() as conn:
        count = conn.exec_driver_sql(f"SELECT count(*) FROM {warehouse.table}")
        assert count.scalar_one() == 2
    assert result.details["rows_deleted"] == 1


# --- preserved columns --------------------------------------------------------


@pytest.mark.parametrize("path", ["native", "portable"])
def test_upsert_keeps_preserved_columns(warehouse, monkeypatch, path):
    if path == "portable":
        monkeypatch.setattr(sql_writer, "merger_for", sql_dialects.StagingMerger)
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a", state="SETTLED")]))
    without_state = [{**small_row("a", 1, "2.00"), "state": None}, small_row("b")]

    warehouse.load(
        SMALL,
        make_batch(SMALL, [{**row, "state": None} for row in without_state]),
        preserve_columns=("state",),
    )

    rows = warehouse.rows()
    assert rows[("a",)]["state"] == "SETTLED"
    assert rows[("a",)]["amount"] == Decimal("2.00")
    assert rows[("b",)]["state"] is None


def test_replace_keeps_preserved_columns(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a", state="SETTLED")]))

    warehouse.load(
        SMALL,
        make_batch(SMALL, [{**small_row("a", 1, "2.00"), "state": None}]),
        mode="replace",
        preserve_columns=["state"],
    )

    rows = warehouse.rows()
    assert rows[("a",)]["state"] == "SETTLED"
    assert rows[("a",)]["amount"] == Decimal("2.00")


def test_preserving_key_column_is_rejected(sqlite_url):
    with pytest.raises(ConfigError, match="key column token"):
        open_warehouse_writer(sqlite_url, "t", SMALL, preserve_columns=["token"])
    with pytest.raises(ConfigError, match="no such column"):
        open_warehouse_writer(sqlite_url, "t", SMALL, preserve_columns=["nope"])


def test_without_date_column_later_row_wins(warehouse):
    undated = make_dataset(
        [("token", "varchar(36)"), ("state", "varchar(20)")], date_column=None
    )
    rows = [{"token": "a", "state": "FIRST"}, {"token": "a", "state": "LAST"}]

    result = warehouse.load(
        undated, make_batch(undated, rows[:1]), make_batch(undated, rows[1:])
    )

    assert warehouse.rows(undated)[("a",)]["state"] == "LAST"
    assert result.rows_superseded == 1


def test_keyless_dataset_appends_every_row(warehouse):
    keyless = make_dataset(
        [("token", "varchar(36)"), ("state", "varchar(20)")], key=(), date_column=None
    )
    rows = [{"token": "a", "state": "X"}, {"token": "a", "state": "X"}]

    first = warehouse.load(keyless, make_batch(keyless, rows), mode="append")
    second = warehouse.load(keyless, make_batch(keyless, rows[:1]), mode="replace")

    assert (first.rows_written, first.rows_superseded) == (2, 0)
    assert second.rows_written == 1
    with warehouse.engine.connect() as conn:
        count = conn.exec_driver_sql(f"SELECT count(*) FROM {warehouse.table}")
        assert count.scalar_one() == 1


def test_portable_merge_upserts(warehouse, monkeypatch):
    monkeypatch.setattr(sql_writer, "merger_for", sql_dialects.StagingMerger)
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a"), small_row("b")]))

    result = warehouse.load(
        SMALL,
        make_batch(
            SMALL, [small_row("b", 1, "7.00"), small_row("b", 0), small_row("c")]
        ),
    )

    rows = warehouse.rows()
    assert rows[("b",)]["amount"] == Decimal("7.00")
    assert len(rows) == 3
    assert (result.rows_inserted, result.rows_updated, result.rows_superseded) == (
        1,
        1,
        1,
    )


def test_schema_qualified_table_name(warehouse):
    schema = {"postgresql": "public", "mysql": "test", "sqlite": "main"}[warehouse.kind]
    options = {"audit_table": f"{schema}.{warehouse.audit}"}
    wider = make_dataset(
        [*((c.name, c.diva_type) for c in SMALL.columns), ("n", "int")]
    )

    for dataset, rows in (
        (SMALL, [small_row("a")]),
        (wider, [small_row("a", 1, "2.00")]),
    ):
        writer = open_warehouse_writer(
            warehouse.url, f"{schema}.{warehouse.table}", dataset, **options
        )
        writer.write(make_batch(dataset, rows))
        result = writer.commit(WINDOW, None)

    assert result.rows_updated == 1
    assert warehouse.rows()[("a",)]["amount"] == Decimal("2.00")
    assert "n" in warehouse.column_types()


# --- schema evolution -------------------------------------------------------


def test_new_column_is_added(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    wider = make_dataset(
        [*((c.name, c.diva_type) for c in SMALL.columns), ("note", "text")]
    )

    warehouse.load(wider, make_batch(wider, [{**small_row("b"), "note": "new"}]))

    rows = warehouse.rows(wider)
    assert rows[("b",)]["note"] == "new"
    assert rows[("a",)]["note"] is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("numeric(12,2)", "numeric(10,2)"),
        ("varchar(50)", "varchar(20)"),
        ("bigint", "varchar(20)"),
        ("text", "varchar(20)"),
        ("numeric(12,2)", "numeric(12,4)"),
    ],
)
def test_narrowing_fails_naming_column_and_types(warehouse, old, new):
    before = make_dataset(
        [("token", "varchar(36)"), ("ts", "timestamp"), ("value", old)]
    )
    after = make_dataset(
        [("token", "varchar(36)"), ("ts", "timestamp"), ("value", new)]
    )
    warehouse.load(before, make_batch(before, [{"token": "a", "ts": T0}]))

    with pytest.raises(LoadError) as caught:
        warehouse.open(after)

    message = str(caught.value)
    assert "'value'" in message
    assert caught.value.column == "value"
    assert caught.value.old_type.split("(")[0] in message
    assert caught.value.new_type in message
    assert warehouse.audit_rows()[-1]["status"] == "failed"


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("varchar(20)", "varchar(50)", "x" * 50),
        ("numeric(10,2)", "numeric(12,2)", Decimal("1234567890.12")),
        ("integer", "bigint", 2**40),
        ("varchar(5)", "text", "y" * 300),
    ],
)
def test_widening_is_applied(warehouse, old, new, value):
    before = make_dataset(
        [("token", "varchar(36)"), ("ts", "timestamp"), ("value", old)]
    )
    after = make_dataset(
        [("token", "varchar(36)"), ("ts", "timestamp"), ("value", new)]
    )
    warehouse.load(before, make_batch(before, [{"token": "a", "ts": T0}]))

    warehouse.load(after, make_batch(after, [{"token": "b", "ts": T0, "value": value}]))

    assert warehouse.rows(after)[("b",)]["value"] == value
    if warehouse.kind != "sqlite":
        assert warehouse.column_types()["value"].startswith(
            {
                "numeric(12,2)": ("NUMERIC(12, 2)", "DECIMAL(12, 2)"),
                "bigint": ("BIGINT",),
                "varchar(50)": ("VARCHAR(50)",),
                "text": ("TEXT", "LONGTEXT"),
            }[new]
        )


# --- failures leave the table as it was -------------------------------------


def test_failure_in_write_leaves_table_unchanged(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    before = warehouse.rows()
    writer = warehouse.open()
    writer.write(make_batch(SMALL, [small_row("a", 5, "8.00"), small_row("b")]))

    with pytest.raises(LoadError):
        writer.write(pa.RecordBatch.from_pylist([{"token": "c"}]))

    assert warehouse.rows() == before
    assert warehouse.audit_rows()[-1]["status"] == "failed"


def test_failure_before_commit_leaves_table_unchanged(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    before = warehouse.rows()

    def fail() -> None:
        raise RuntimeError("injected fault")

    writer = warehouse.open(fail_before_commit=fail)
    writer.write(make_batch(SMALL, [small_row("a", 5, "8.00"), small_row("b")]))
    with pytest.raises(LoadError, match="injected fault") as caught:
        writer.commit(WINDOW, "abcdef123456")

    assert isinstance(caught.value.__cause__, RuntimeError)
    assert warehouse.rows() == before
    audit = warehouse.audit_rows()
    assert [row["status"] for row in audit] == ["succeeded", "failed"]
    assert audit[-1]["export_token"] == "abcdef…"


def test_constraint_error_leaves_table_unchanged(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    before = warehouse.rows()

    with pytest.raises(LoadError, match="left as it was"):
        warehouse.load(
            SMALL,
            make_batch(SMALL, [small_row("b"), {**small_row("c"), "token": None}]),
        )

    assert warehouse.rows() == before


def test_killed_connection_leaves_table_unchanged(server_warehouse):
    warehouse = server_warehouse
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    before = warehouse.rows()
    pid_query, kill = {
        "postgresql": ("SELECT pg_backend_pid()", "SELECT pg_terminate_backend({})"),
        "mysql": ("SELECT CONNECTION_ID()", "KILL {}"),
    }[warehouse.kind]
    holder = {}

    def kill_writer_connection() -> None:
        warehouse.execute(kill.format(holder["pid"]))

    writer = warehouse.open(fail_before_commit=kill_writer_connection)
    holder["pid"] = writer.connection.exec_driver_sql(pid_query).scalar_one()
    writer.write(make_batch(SMALL, [small_row("a", 5, "8.00"), small_row("b")]))
    with pytest.raises(LoadError):
        writer.commit(WINDOW, None)

    assert warehouse.rows() == before


def test_abort_leaves_table_unchanged(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    before = warehouse.rows()
    writer = warehouse.open(mode="replace")
    writer.write(make_batch(SMALL, [small_row("b")]))

    writer.abort()

    assert warehouse.rows() == before
    assert warehouse.audit_rows()[-1]["status"] == "aborted"
    with pytest.raises(LoadError, match="already committed or aborted"):
        writer.write(make_batch(SMALL, [small_row("c")]))


@pytest.mark.parametrize("ending", ["failed commit", "abort"])
def test_failed_first_load_leaves_no_table(warehouse, ending):
    def fail() -> None:
        raise RuntimeError("injected fault")

    writer = warehouse.open(fail_before_commit=fail)
    writer.write(make_batch(SMALL, [small_row("a")]))
    if ending == "abort":
        writer.abort()
    else:
        with pytest.raises(LoadError) as caught:
            writer.commit(WINDOW, None)
        expected = {"mysql": "created was dropped again"}.get(
            warehouse.kind, "left as it was"
        )
        assert expected in str(caught.value)

    assert not sa.inspect(warehouse.engine).has_table(warehouse.table)


def test_failed_load_names_kept_column_changes(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    wider = make_dataset(
        [*((c.name, c.diva_type) for c in SMALL.columns), ("note", "text")]
    )
    bad_rows = [small_row("b"), {**small_row("c"), "token": None}]

    with pytest.raises(LoadError) as caught:
        warehouse.load(wider, make_batch(wider, bad_rows))

    assert set(warehouse.rows()) == {("a",)}
    expected = {"mysql": "column changes stay"}.get(warehouse.kind, "left as it was")
    assert expected in str(caught.value)


def test_sink_masks_password_in_query(pg_url):
    # The local server trusts every client, so it ignores the password.
    warehouse = Warehouse(f"{pg_url}?password=PWQZZZ444")
    try:
        result = warehouse.load(SMALL, make_batch(SMALL, [small_row("a")]))
    finally:
        warehouse.drop()

    assert "PWQZZZ444" not in result.sink
    assert "password=***" in result.sink


def test_unreachable_database_hides_query_password():
    url = "postgresql://loader@127.0.0.1:1/test?sslpassword=QQSECRET1&pwd=QQSECRET2"

    with pytest.raises(LoadError) as caught:
        open_warehouse_writer(url, "t", SMALL)

    assert "QQSECRET" not in str(caught.value)
    assert "sslpassword=***" in str(caught.value)


def test_unreachable_database_hides_password(tmp_path):
    url = "postgresql://loader:s3cret-pw@127.0.0.1:1/test"

    with pytest.raises(LoadError) as caught:
        open_warehouse_writer(url, "t", SMALL)

    assert "s3cret-pw" not in str(caught.value)
    assert "***" in str(caught.value)


# --- identifiers and values ----------------------------------------------------


QUOTED = make_dataset(
    [
        ("order", "varchar(10)"),
        ("date", "timestamp"),
        ("group", "integer"),
        ("MixedCase", "varchar(10)"),
        ("select", "boolean"),
    ],
    key=("order",),
    date_column="date",
)


def test_reserved_and_mixed_case_columns(warehouse):
    rows = [{"order": "o1", "date": T0, "group": 7, "MixedCase": "Mx", "select": True}]
    warehouse.load(QUOTED, make_batch(QUOTED, rows))

    result = warehouse.load(
        QUOTED,
        make_batch(QUOTED, [{**rows[0], "group": 8}, {**rows[0], "order": "o2"}]),
    )

    stored = warehouse.rows(QUOTED)
    assert stored[("o1",)]["group"] == 8
    assert stored[("o2",)]["MixedCase"] == "Mx"
    assert (result.rows_inserted, result.rows_updated) == (1, 1)


EXACT = make_dataset(
    [
        ("token", "varchar(36)"),
        ("ts", "timestamp"),
        ("money", "numeric(18,2)"),
        ("fine", "numeric(38,9)"),
        ("day", "date"),
        ("flag", "boolean"),
        ("count", "bigint"),
        ("small", "smallint"),
        ("name", "varchar(255)"),
        ("note", "text"),
    ]
)
EXACT_ROWS = [
    {
        "token": "neg",
        "ts": datetime(2024, 3, 5, 23, 59, 59, 999999, tzinfo=UTC),
        "money": Decimal("-1234567890123456.78"),
        "fine": Decimal("-0.000000001"),
        "day": date(1999, 12, 31),
        "flag": False,
        "count": -(2**63),
        "small": -32768,
        "name": "Ünïcödé 💳 ☃",
        "note": 'line\nbreak, "quoted" \\ tab\t',
    },
    {
        "token": "big",
        "ts": datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "money": Decimal("9999999999999999.99"),
        "fine": Decimal("99999999999999999999999999999.999999999"),
        "day": date(2024, 2, 29),
        "flag": True,
        "count": 2**63 - 1,
        "small": 32767,
        "name": "💳" * 255,
        "note": "",
    },
    {
        "token": "zero",
        "ts": T0,
        "money": Decimal("0.00"),
        "fine": Decimal("0E-9"),
        "day": None,
        "flag": None,
        "count": None,
        "small": None,
        "name": "",
        "note": None,
    },
    {"token": "nulls", "ts": T0},
]


def test_values_round_trip_exactly(warehouse):
    warehouse.load(EXACT, make_batch(EXACT, EXACT_ROWS))

    stored = warehouse.rows(EXACT)
    for row in EXACT_ROWS:
        expected = {name: row.get(name) for name in EXACT.column_names}
        for name, value in expected.items():
            got = stored[(row["token"],)][name]
            assert got == value, (row["token"], name, got)
            if isinstance(value, Decimal):
                exponent = got.as_tuple().exponent
                assert exponent == value.as_tuple().exponent, (row["token"], name, got)


def test_rejects_go_to_rejects_table(warehouse):
    rejects = pa.Table.from_pylist(
        [
            {
                "file": "export.csv",
                "line": 7,
                "column": "amount",
                "reason": "not a number",
                "record": "a,b,c",
            }
        ],
        schema=rejects_schema(),
    )
    writer = warehouse.open()
    writer.write(make_batch(SMALL, [small_row("a")]))
    writer.write_rejects(rejects)

    result = writer.commit(WINDOW, "abcdef123456")

    assert result.rows_rejected == 1
    assert warehouse.audit_rows()[-1]["rows_rejected"] == 1
    with warehouse.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            f"SELECT {warehouse.quote('line')}, {warehouse.quote('column')}, reason "
            f"FROM {warehouse.quote(warehouse.rejects)}"
        ).all()
    assert [tuple(row) for row in stored] == [(7, "amount", "not a number")]


def test_audit_row_records_the_load(warehouse):
    warehouse.load(SMALL, make_batch(SMALL, [small_row("a"), small_row("a", 1)]))

    audit = warehouse.audit_rows()[-1]

    assert audit["status"] == "succeeded"
    assert audit["export_token"] == "9f8e7d…"
    assert (audit["window_start"], audit["window_end"]) == ("2024-03-05", "2024-03-05")
    assert (audit["rows_read"], audit["rows_inserted"], audit["rows_superseded"]) == (
        2,
        1,
        1,
    )
    assert audit["finished_at"] >= audit["started_at"]


# --- fault cases ---------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 2])
def test_duplicate_keys_in_case_file_keep_last_record(warehouse, chunk_rows):
    table = read_case_csv("20-dup-pk-in-batch.csv")
    batches = table.to_batches(max_chunksize=chunk_rows)

    first = warehouse.load(CASE_DATASET, *batches)
    second = warehouse.load(CASE_DATASET, *batches)

    for result in (first, second):
        assert result.details["rows_read"] == 5
        assert result.rows_written == 3
        assert result.rows_superseded == 2
    assert (second.rows_inserted, second.rows_updated) == (0, 0)
    stored = warehouse.rows(CASE_DATASET)
    lines = table.to_pylist()
    # Lines 2, 4 and 6 share one token; line 6 is its latest record.
    assert stored[(lines[0]["token"],)] == lines[4]
    assert stored[(lines[1]["token"],)] == lines[1]
    assert stored[(lines[3]["token"],)] == lines[3]
    assert len(stored) == 3


@pytest.fixture(params=["postgresql", "mariadb-strict", "mariadb-non-strict", "sqlite"])
def long_name_warehouse(request, tmp_path):
    if request.param == "sqlite":
        created = Warehouse(request.getfixturevalue("sqlite_url"))
    elif request.param == "postgresql":
        created = Warehouse(request.getfixturevalue("pg_url"))
    else:
        created = Warehouse(request.getfixturevalue("mariadb_url"))
        mode = "STRICT_TRANS_TABLES" if request.param == "mariadb-strict" else ""
        created.engine = sa.create_engine(
            normalize_url(created.url),
            connect_args={"init_command": f"SET SESSION sql_mode = '{mode}'"},
        )
    yield created
    created.drop()


def test_long_merchant_name_is_kept_or_rejected(long_name_warehouse):
    warehouse = long_name_warehouse
    table = read_case_csv("22-long-merchant-name.csv")
    fitting, too_long = table.slice(0, 3), table.slice(3)

    warehouse.load(CASE_DATASET, *fitting.to_batches(), engine=warehouse.engine)
    with pytest.raises(LoadError) as caught:
        warehouse.load(
            CASE_DATASET, *table.to_batches(max_chunksize=2), engine=warehouse.engine
        )

    stored = warehouse.rows(CASE_DATASET)
    for line in fitting.to_pylist():
        assert stored[(line["token"],)]["merchant_name"] == line["merchant_name"]
    assert len(stored) == 3
    assert len(fitting.column("merchant_name")[2].as_py().encode()) == 800
    message = str(caught.value)
    assert "merchant_name" in message
    assert "256 > 255" in message
    assert too_long.column("token")[0].as_py() in message


# --- staging many batches -----------------------------------------------------


ORDERS = make_dataset(
    [("order_id", "bigint"), ("ts", "timestamp"), ("state", "varchar(20)")],
    key=("order_id",),
)


def order_batch(ids: range, state: str) -> pa.RecordBatch:
    return make_batch(
        ORDERS,
        [{"order_id": n, "ts": T0 + timedelta(seconds=n), "state": state} for n in ids],
    )


def test_integer_key_counts_inserts_and_updates(warehouse):
    warehouse.load(ORDERS, order_batch(range(0, 100), "NEW"))

    result = warehouse.load(
        ORDERS,
        *[
            order_batch(range(start, start + 25), "PAID")
            for start in range(50, 150, 25)
        ],
    )

    assert result.rows_written == 100
    assert result.rows_inserted == 50
    assert result.rows_updated == 50
    rows = warehouse.rows(ORDERS)
    assert len(rows) == 150
    assert rows[(49,)]["state"] == "NEW"
    assert rows[(50,)]["state"] == "PAID"


def test_integer_key_repeated_across_batches(warehouse):
    result = warehouse.load(
        ORDERS, order_batch(range(0, 10), "FIRST"), order_batch(range(5, 15), "SECOND")
    )

    assert result.rows_written == 15
    assert result.rows_superseded == 5
    rows = warehouse.rows(ORDERS)
    assert [rows[(n,)]["state"] for n in (4, 5, 14)] == ["FIRST", "SECOND", "SECOND"]


def test_rejects_between_batches(warehouse):
    rejects = pa.Table.from_pylist(
        [{"file": "e.csv", "line": 3, "column": "ts", "reason": "bad", "record": "x"}],
        schema=rejects_schema(),
    )
    writer = warehouse.open(ORDERS)
    writer.write(order_batch(range(0, 40), "A"))
    writer.write_rejects(rejects)
    writer.write(order_batch(range(40, 80), "B"))

    result = writer.commit(None, None)

    assert result.rows_written == 80
    assert result.rows_rejected == 1
    assert len(warehouse.rows(ORDERS)) == 80


def test_abort_after_many_batches(warehouse):
    warehouse.load(ORDERS, order_batch(range(0, 10), "KEPT"))
    writer = warehouse.open(ORDERS)
    for start in range(0, 2000, 50):
        writer.write(order_batch(range(start, start + 50), "LOST"))

    writer.abort()

    rows = warehouse.rows(ORDERS)
    assert len(rows) == 10
    assert {row["state"] for row in rows.values()} == {"KEPT"}
    result = warehouse.load(ORDERS, order_batch(range(10, 20), "NEXT"))
    assert result.rows_inserted == 10


def test_pipe_open_failure_cleanup(mariadb_url, monkeypatch):
    import os
    import threading

    from connector.load import sql_mysql

    def fails(self, path):
        raise OSError("simulated failure opening the pipe")

    folders = []
    make_folder = sql_mysql.tempfile.mkdtemp

    def recorded(**options):
        folders.append(make_folder(**options))
        return folders[-1]

    warehouse = Warehouse(mariadb_url + "?local_infile=1")
    try:
        warehouse.load(ORDERS, order_batch(range(0, 5), "KEPT"))
        monkeypatch.setattr(sql_mysql._PipeLoad, "_open_sink", fails)
        monkeypatch.setattr(sql_mysql.tempfile, "mkdtemp", recorded)
        writer = warehouse.open(ORDERS)
        with pytest.raises(LoadError, match="simulated failure opening the pipe"):
            writer.write(order_batch(range(5, 10), "LOST"))

        loaders = [t for t in threading.enumerate() if t.name == "mysql-load-data"]
        assert loaders == []
        assert folders
        assert not any(os.path.exists(folder) for folder in folders)
        assert len(warehouse.rows(ORDERS)) == 5
    finally:
        warehouse.drop()
