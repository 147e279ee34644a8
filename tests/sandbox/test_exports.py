"""The export cycle: request, poll, download, expiry, caps, layout, determinism."""

from __future__ import annotations

import gzip
import re
from datetime import date

import pytest

from connector.sandbox import Sandbox

from .conftest import ACCESS_TOKEN, APP_TOKEN, PROGRAM, TODAY, Client, read_rows

MARCH_1_TO_3 = (date(2024, 3, 1), date(2024, 3, 3))


def make_sandbox(**options: object) -> Sandbox:
    values = {
        "seed": 7,
        "rows_per_day": 20,
        "app_token": APP_TOKEN,
        "access_token": ACCESS_TOKEN,
        "program": PROGRAM,
        "today": TODAY,
    }
    values.update(options)
    return Sandbox(**values)


class FakeClock:
    """A clock the test moves by hand, in seconds."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("compress", "extension"), [("gz", ".csv.gz"), ("zip", ".csv.zip")]
)
def test_export_cycle_returns_expected_rows(
    client: Client, sandbox: Sandbox, compress: str, extension: str
) -> None:
    token = client.export(compress=compress)

    pending = client.download(token)
    done = client.download(token)

    assert token.endswith(extension)
    assert pending.status_code == 202
    assert pending.text == "Pending"
    assert done.status_code == 200
    assert done.headers["Content-Type"] == "application/octet-stream"
    assert int(done.headers["Content-Length"]) == len(done.content)
    assert read_rows(done.content, token) == sandbox.expected_rows(
        "authorizations/detail", *MARCH_1_TO_3
    )


def test_zip_export_holds_one_csv_member(client: Client) -> None:
    import io
    import zipfile

    token = client.export(compress="zip")
    content = client.fetch(token).content

    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = archive.namelist()
    assert len(names) == 1
    assert names[0].endswith(".csv")


def test_export_answers_202_with_token_json(client: Client) -> None:
    response = client.get(
        "/views/authorizations/detail/csv", transaction_timestamp="2024-03-01"
    )

    assert response.status_code == 202
    assert re.fullmatch(r"[0-9a-f]{16}\.csv\.gz", response.json()["token"])


def test_pending_polls_are_configurable() -> None:
    with make_sandbox(pending_polls=3) as sandbox:
        client = Client(sandbox)
        token = client.export()
        statuses = [client.download(token).status_code for _ in range(4)]

    assert statuses == [202, 202, 202, 200]


def test_pending_seconds_keep_export_pending() -> None:
    clock = FakeClock()
    with make_sandbox(pending_polls=0, pending_s=30.0, clock=clock) as sandbox:
        client = Client(sandbox)
        token = client.export()
        early = client.download(token).status_code
        clock.now += 31
        late = client.download(token).status_code

    assert early == 202
    assert late == 200


def test_file_expires_after_expiry_seconds() -> None:
    clock = FakeClock()
    with make_sandbox(pending_polls=0, expiry_s=3600.0, clock=clock) as sandbox:
        client = Client(sandbox)
        token = client.export()
        first = client.download(token)
        clock.now += 3599
        still = client.download(token)
        clock.now += 2
        gone = client.download(token)
        after = client.download(token)

    assert first.status_code == 200
    assert still.status_code == 200
    assert gone.status_code == 410
    assert gone.json()["error_code"] == "410001"
    assert after.status_code == 410


def test_unknown_token_is_404(client: Client) -> None:
    response = client.download("0123456789abcdef.csv.gz")

    assert response.status_code == 404
    assert "0123456789abcdef.csv.gz" in response.json()["message"]


def test_download_without_token_is_400(client: Client) -> None:
    response = client.get("/download")

    assert response.status_code == 400


def test_max_count_cuts_export_silently(client: Client) -> None:
    token = client.export(max_count=7)
    response = client.fetch(token)

    assert response.status_code == 200
    assert len(read_rows(response.content, token)) == 7


def test_row_cap_limits_exports_even_with_max_count() -> None:
    with make_sandbox(row_cap=10) as sandbox:
        client = Client(sandbox)
        token = client.export(max_count=5_000_000)
        rows = read_rows(client.fetch(token).content, token)

    assert len(rows) == 10


def test_max_count_above_five_million_is_400(client: Client) -> None:
    response = client.get("/views/authorizations/detail/csv", max_count=5_000_001)

    assert response.status_code == 400
    assert "5000000" in response.json()["message"]


def test_export_honours_fields_and_filters(client: Client) -> None:
    token = client.export(fields="transaction_token,network", network="PULSE")
    rows = read_rows(client.fetch(token).content, token)

    assert rows
    assert set(rows[0]) == {"transaction_token", "network"}
    assert {row["network"] for row in rows} == {"PULSE"}


def test_csv_layout_matches_declared_types(client: Client) -> None:
    token = client.export()
    rows = read_rows(client.fetch(token).content, token)

    def non_null(name: str) -> list[str]:
        return [row[name] for row in rows if row[name] is not None]

    assert all(re.fullmatch(r"-?\d+\.\d{2}", v) for v in non_null("transaction_amount"))
    assert all(re.fullmatch(r"\d+\.\d{9}", v) for v in non_null("conversion_rate"))
    assert all(v in ("true", "false") for v in non_null("card_presence"))
    assert all(
        re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) for v in non_null("settlement_date")
    )
    assert all(
        re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", v)
        for v in non_null("transaction_timestamp")
    )


def test_csv_contains_hard_text_and_empty_cells(client: Client) -> None:
    token = client.export(transaction_timestamp="2024-03-01..2024-03-20")
    rows = read_rows(client.fetch(token).content, token)
    names = {row["merchant_name"] for row in rows}
    text = " ".join(n for n in names if n)

    assert any("," in n and '"' in n for n in names if n)
    assert "\n" in text
    assert "東京" in {row["merchant_city"] for row in rows}
    assert "0742" in {row["merchant_category_code"] for row in rows}
    assert "00" in {row["response_code"] for row in rows}
    assert any(row["user_token"] is None for row in rows)
    assert any(
        row["transaction_amount"].startswith("-")
        for row in rows
        if row["transaction_amount"]
    )
    assert {"VISA", "MASTERCARD", "DISCOVER", "PULSE"} <= {
        row["network"] for row in rows
    }


def test_csv_uses_crlf_and_no_byte_order_mark(client: Client) -> None:
    token = client.export(fields="transaction_token,network")
    text = gzip.decompress(client.fetch(token).content)

    assert not text.startswith(b"\xef\xbb\xbf")
    assert text.startswith(b"transaction_token,network\r\n")


def test_iso_timestamp_option() -> None:
    with make_sandbox(timestamp_format="iso", pending_polls=0) as sandbox:
        client = Client(sandbox)
        token = client.export()
        rows = read_rows(client.fetch(token).content, token)

    assert re.fullmatch(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", rows[0]["transaction_timestamp"]
    )


def test_same_seed_gives_same_bytes() -> None:
    contents = []
    for _ in range(2):
        with make_sandbox(pending_polls=0) as sandbox:
            client = Client(sandbox)
            contents.append(client.fetch(client.export()).content)
    with make_sandbox(seed=8, pending_polls=0) as sandbox:
        client = Client(sandbox)
        other_seed = client.fetch(client.export()).content

    assert contents[0] == contents[1]
    assert other_seed != contents[0]


def test_keys_are_unique_and_stable_across_windows(sandbox: Sandbox) -> None:
    month = sandbox.expected_rows(
        "authorizations/detail", date(2024, 3, 1), date(2024, 3, 31)
    )
    one_day = sandbox.expected_rows(
        "authorizations/detail", date(2024, 3, 2), date(2024, 3, 2)
    )
    keys = [row["transaction_token"] for row in month]

    assert len(keys) == len(set(keys))
    assert one_day == [
        row for row in month if row["transaction_timestamp"][:10] == "2024-03-02"
    ]


def test_revision_changes_some_rows_under_same_keys(
    client: Client, sandbox: Sandbox
) -> None:
    before = read_rows(client.fetch(client.export()).content, "x.csv.gz")
    sandbox.revision = 1
    after = read_rows(client.fetch(client.export()).content, "x.csv.gz")

    changed = [
        index for index, (old, new) in enumerate(zip(before, after)) if old != new
    ]
    assert [row["transaction_token"] for row in before] == [
        row["transaction_token"] for row in after
    ]
    assert changed
    assert len(changed) <= len(before) // 10 + 3
    assert all(before[i]["state"] != after[i]["state"] for i in range(0, 20, 10))
    assert sandbox.expected_rows("authorizations/detail", *MARCH_1_TO_3) == after


def test_request_log_counts_exports_and_polls(client: Client, sandbox: Sandbox) -> None:
    token = client.export()
    client.fetch(token)

    exports = [r for r in sandbox.requests if r.path.endswith("/csv")]
    polls = [r for r in sandbox.requests if r.path.endswith("/download")]
    assert len(exports) == 1
    assert [r.status for r in polls] == [202, 200]
    assert polls[0].params == {"token": token}


def test_row_cap_property_is_the_fault_switch(client: Client, sandbox: Sandbox) -> None:
    sandbox.row_cap = 4
    token = client.export()

    assert sandbox.faults.row_cap == 4
    assert len(read_rows(client.fetch(token).content, token)) == 4
