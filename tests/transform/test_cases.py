"""The fault-case files read end to end, each with its expected rows or error."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from connector.errors import DataError, DownloadError
from connector.transform import TransformOptions, count_records, read_export

from .conftest import CASES, read_rows, read_table

CASE_02_MERCHANTS = [
    "Corner Deli, Unit 4",
    'The "Blue" Kettle',
    "Night Market\r\nStall 12",
    "Pier Kiosk\nNorth",
    "Z" * 180 + "A\r\nB" + "z" * 60,
    "Plain Grocer",
]


def test_bom_quoted_header_names_first_column_token(cases_dataset):
    rows, reader = read_rows(CASES / "01-bom-quoted-header.csv", cases_dataset)

    assert reader.schema.names[0] == "token"
    assert [row["amount"] for row in rows] == [
        Decimal("12.00"),
        Decimal("7.25"),
        Decimal("103.10"),
    ]
    assert rows[0]["token"] == "ac376f35-2448-4461-a104-b174eb2df7b3"
    missing = {item.column for item in reader.report.drift if item.kind == "missing"}
    assert "token" not in missing


@pytest.mark.parametrize(
    "chunk_bytes",
    [1, 7, 64, 100, 128, 199, 200, 256, 257, 300, 511, 1000, 1461, 4096, 1 << 20],
)
def test_crlf_quoted_fields_survive_any_chunk_size(cases_dataset, chunk_bytes):
    rows, reader = read_rows(
        CASES / "02-crlf-quoted-fields.csv", cases_dataset, chunk_bytes=chunk_bytes
    )

    assert [row["merchant_name"] for row in rows] == CASE_02_MERCHANTS
    assert [row["response_code"] for row in rows] == ["00"] * 6
    assert [row["amount"] for row in rows] == [Decimal(f"{n}.00") for n in range(1, 7)]
    assert reader.report.rows_read == 6


@pytest.mark.parametrize("chunk_bytes", [1, 64, 257, 1000, 1 << 20])
def test_crlf_quoted_fields_count_six_records(chunk_bytes):
    path = CASES / "02-crlf-quoted-fields.csv"

    assert count_records(path, TransformOptions(chunk_bytes=chunk_bytes)) == 6


def test_header_only_export_reads_zero_rows(cases_dataset):
    table = read_table(CASES / "03-header-only.csv.gz", cases_dataset)

    assert table.num_rows == 0
    assert table.schema == cases_dataset.arrow_schema()
    assert not any(pa.types.is_null(field.type) for field in table.schema)


def test_header_only_report_counts_zero(cases_dataset):
    rows, reader = read_rows(CASES / "03-header-only.csv.gz", cases_dataset)

    assert rows == []
    assert reader.report.rows_read == 0
    assert reader.report.batches == 0


def test_empty_gzip_payload_names_file(cases_dataset):
    path = CASES / "04-empty-body.csv.gz"

    with pytest.raises(
        DataError, match="decompressed to 0 bytes with no header"
    ) as info:
        read_export(path, cases_dataset, TransformOptions())

    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_truncated_gzip_raises_download_error(cases_dataset):
    path = CASES / "05-truncated.csv.gz"
    rows = []

    with (
        pytest.raises(DownloadError, match="truncated or corrupt gzip") as info,
        read_export(path, cases_dataset, TransformOptions()) as reader,
    ):
        for batch in reader:
            rows.extend(batch.to_pylist())

    assert str(path) in str(info.value)
    assert len(rows) < 117


def test_truncated_gzip_fails_count_records():
    with pytest.raises(DownloadError, match="truncated or corrupt gzip"):
        count_records(CASES / "05-truncated.csv.gz", TransformOptions())


def test_multimember_gzip_reads_every_member(cases_dataset):
    rows, _ = read_rows(CASES / "06-multimember.csv.gz", cases_dataset)

    assert [row["amount"] for row in rows] == [Decimal(f"{n}.11") for n in range(1, 7)]
    assert rows[3]["merchant_name"] == "Member Split Cafe 4"
    assert rows[3]["response_code"] == "00"


def test_zip_skips_directories_and_appledouble(cases_dataset, caplog):
    caplog.set_level(logging.INFO, logger="connector.transform")

    rows, reader = read_rows(CASES / "07-zip-dir-and-macosx.zip", cases_dataset)

    assert [row["amount"] for row in rows] == [
        Decimal("10.50"),
        Decimal("11.50"),
        Decimal("12.50"),
    ]
    assert reader.report.member == "export/transactions.csv"
    assert reader.report.compression == "zip"
    assert reader.report.uncompressed_bytes == 675
    assert reader.report.file_bytes == 988
    assert "export/transactions.csv" in caplog.text


def test_zip_path_traversal_rejected_without_writing(
    cases_dataset, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    member = "../../outside/transactions.csv"

    with pytest.raises(DataError, match="unsafe name") as info:
        read_export(
            CASES / "09-zip-path-traversal.zip",
            cases_dataset,
            TransformOptions(),
            work_dir=tmp_path / "work",
        )

    assert member in str(info.value)
    assert info.value.value == member
    assert list(tmp_path.rglob("*")) == []
    assert not (tmp_path.parent.parent / "outside").exists()


def test_naive_timestamps_read_as_utc_by_default(cases_dataset):
    rows, _ = read_rows(CASES / "17-naive-and-dst.csv", cases_dataset)

    assert [row["transaction_timestamp"] for row in rows] == [
        datetime(2024, 6, 1, 12, tzinfo=UTC),
        datetime(2024, 11, 3, 1, 30, tzinfo=UTC),
        datetime(2024, 3, 10, 2, 30, tzinfo=UTC),
    ]


def test_ambiguous_local_time_raises_with_line(cases_dataset):
    with pytest.raises(DataError, match="ambiguous") as info:
        read_rows(
            CASES / "17-naive-and-dst.csv",
            cases_dataset,
            source_timezone="America/New_York",
        )

    error = info.value
    assert error.line == 3
    assert error.column == "transaction_timestamp"
    assert error.value == "2024-11-03 01:30:00"
    assert "line 3" in str(error)
    assert "2024-11-03 01:30:00" in str(error)


def test_nonexistent_local_time_raises_with_line(cases_dataset):
    rows, reader = read_rows(
        CASES / "17-naive-and-dst.csv",
        cases_dataset,
        source_timezone="America/New_York",
        on_bad_rows="quarantine",
    )
    rejects = reader.rejects().to_pylist()

    assert [row["transaction_timestamp"] for row in rows] == [
        datetime(2024, 6, 1, 16, tzinfo=UTC)
    ]
    assert [reject["line"] for reject in rejects] == [3, 4]
    assert "ambiguous" in rejects[0]["reason"]
    assert "does not exist" in rejects[1]["reason"]
    assert rejects[1]["record"].split(",")[3] == "2024-03-10 02:30:00"


@pytest.mark.parametrize(
    ("policy", "ambiguous", "nonexistent"),
    [
        (
            "earliest",
            datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
            datetime(2024, 3, 10, 6, 30, tzinfo=UTC),
        ),
        (
            "latest",
            datetime(2024, 11, 3, 6, 30, tzinfo=UTC),
            datetime(2024, 3, 10, 7, 30, tzinfo=UTC),
        ),
    ],
)
def test_ambiguous_times_policy_picks_instant(
    cases_dataset, policy, ambiguous, nonexistent
):
    rows, _ = read_rows(
        CASES / "17-naive-and-dst.csv",
        cases_dataset,
        source_timezone="America/New_York",
        ambiguous_times=policy,
    )

    assert [row["transaction_timestamp"] for row in rows] == [
        datetime(2024, 6, 1, 16, tzinfo=UTC),
        ambiguous,
        nonexistent,
    ]


@pytest.mark.parametrize("chunk_bytes", [64 * 1024, 1 << 20, 8 << 20])
def test_null_first_chunk_keeps_schema_types(cases_dataset, chunk_bytes):
    with read_export(
        CASES / "18-null-first-chunk.csv.gz",
        cases_dataset,
        TransformOptions(chunk_bytes=chunk_bytes),
    ) as reader:
        batches = list(reader)
    table = pa.Table.from_batches(batches, schema=reader.schema)
    late = table.slice(10_000).to_pylist()

    assert all(batch.schema == cases_dataset.arrow_schema() for batch in batches)
    assert table.num_rows == 13_000
    assert table.column("settled_amount").slice(0, 10_000).null_count == 10_000
    assert all(row["settlement_date"] == date(2024, 3, 7) for row in late)
    assert {row["installment_count"] for row in late} == set(range(1, 13))
    assert {row["is_recurring"] for row in late} == {True, False}
    assert all(row["settled_amount"] is not None for row in late)
    assert [row["memo"] for row in late].count("split payment") == 1000
    assert {row["memo"] for row in late} == {None, "split payment"}


def test_null_first_chunk_counts_records():
    assert (
        count_records(CASES / "18-null-first-chunk.csv.gz", TransformOptions())
        == 13_000
    )


def test_long_merchant_name_limit_counts_characters(cases_dataset):
    with pytest.raises(DataError, match="256 > 255") as info:
        read_rows(CASES / "22-long-merchant-name.csv", cases_dataset)

    error = info.value
    assert error.line == 5
    assert error.column == "merchant_name"
    assert "line 5" in str(error)
    assert "merchant_name" in str(error)


def test_long_merchant_name_valid_rows_kept_intact(cases_dataset):
    rows, reader = read_rows(
        CASES / "22-long-merchant-name.csv", cases_dataset, on_bad_rows="quarantine"
    )
    rejects = reader.rejects().to_pylist()

    assert [row["merchant_name"] for row in rows] == ["M" * 255, "Ü" * 255, "💳" * 200]
    assert [(r["line"], r["column"]) for r in rejects] == [(5, "merchant_name")]
    assert "256 > 255" in rejects[0]["reason"]
