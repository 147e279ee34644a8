"""The sandbox's JSON routes: auth, program, errors, envelope, schema, filters."""

from __future__ import annotations

import json
from datetime import date
from importlib import resources

import pytest
import requests

from connector.sandbox import Sandbox

from .conftest import ACCESS_TOKEN, APP_TOKEN, MARCH_WINDOW, PROGRAM, TODAY, Client

DETAIL = "/views/authorizations/detail"


def march(**params: object) -> dict[str, object]:
    return {"transaction_timestamp": MARCH_WINDOW, **params}


@pytest.mark.parametrize(
    "auth",
    [None, (APP_TOKEN, "wrong"), ("wrong", ACCESS_TOKEN), (ACCESS_TOKEN, APP_TOKEN)],
)
def test_auth_rejects_bad_credentials(sandbox: Sandbox, auth) -> None:
    response = requests.get(
        f"{sandbox.base_url}{DETAIL}", params={"program": PROGRAM}, auth=auth, timeout=5
    )

    assert response.status_code == 401
    assert response.json()["error_code"] == "401001"


def test_auth_error_comes_before_unknown_view(sandbox: Sandbox) -> None:
    response = requests.get(f"{sandbox.base_url}/views/nope/detail", timeout=5)

    assert response.status_code == 401


def test_program_is_required(client: Client) -> None:
    response = client.get(DETAIL, program="")

    assert response.status_code == 400
    assert "program" in response.json()["message"]


def test_program_not_granted_is_403003(client: Client) -> None:
    response = client.get(DETAIL, program="other")

    assert response.status_code == 403
    assert response.json()["error_code"] == "403003"
    assert "other" in response.json()["message"]


def test_program_list_must_all_be_granted(client: Client) -> None:
    response = client.get(DETAIL, program=f"{PROGRAM},other")

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/views/nosuchview/detail", "nosuchview"),
        ("/views/authorizations/yearly", "yearly"),
        ("/views/authorizations/yearly/csv", "yearly"),
        ("/elsewhere", "/elsewhere"),
    ],
)
def test_unknown_view_is_404_naming_it(client: Client, path: str, named: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert named in response.json()["message"]


def test_unknown_parameter_is_400_naming_the_column(client: Client) -> None:
    response = client.get(DETAIL, start_date="2024-03-01")

    assert response.status_code == 400
    body = response.json()
    assert body["error_code"].startswith("400")
    assert "does not have a column with the name start_date" in body["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"transaction_timestamp": "2024-13-01..2024-03-02"},
        {"transaction_amount": ">lots"},
        {"fields": "transaction_token,nope"},
        {"sort_by": "-nope"},
        {"count": "many"},
        {"max_count": "5000001"},
        {"compress": "rar"},
    ],
)
def test_malformed_parameters_are_400(client: Client, params: dict) -> None:
    response = client.get(DETAIL, **params)

    assert response.status_code == 400
    assert response.json()["message"]


def test_views_lists_every_schema_file(client: Client, sandbox: Sandbox) -> None:
    response = client.get("/views")

    assert response.status_code == 200
    listed = {item["endpoint"].split("/views/", 1)[1]: item for item in response.json()}
    assert "authorizations/detail" in listed
    assert listed["authorizations/detail"]["date_column"] == "transaction_timestamp"
    assert listed["authorizations/detail"]["schema"].endswith(
        "/views/authorizations/detail/schema"
    )
    assert len(listed) == len(schema_names())


def test_schema_endpoint_returns_diva_schema_objects(client: Client) -> None:
    response = client.get(f"{DETAIL}/schema")
    shipped = json.loads(schema_file("authorizations/detail").read_text("utf-8"))

    assert response.status_code == 200
    objects = response.json()
    assert [o["field"] for o in objects] == [c["field"] for c in shipped["columns"]]
    assert objects[0]["type"] == shipped["columns"][0]["type"]
    assert set(objects[0]) == {
        "field",
        "type",
        "display",
        "description",
        "units",
        "has_total",
        "date_format",
        "is_filter_only",
        "enum_values",
    }


def test_json_envelope_fields(client: Client, sandbox: Sandbox) -> None:
    response = client.get(DETAIL, **march(count=5))

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 3 * 20
    assert body["count"] == 5
    assert body["is_more"] is True
    assert len(body["records"]) == 5
    assert body["start_date"] == "2024-03-01"
    assert body["end_date"] == "2024-03-03"
    assert body["last_run_time"].endswith(".000Z")
    assert body["info"]
    assert [o["field"] for o in body["schema"]][:2] == ["transaction_token", "program"]


def test_json_uses_iso_timestamps_with_milliseconds(client: Client) -> None:
    record = client.get(DETAIL, **march(count=1)).json()["records"][0]

    assert record["transaction_timestamp"].startswith("2024-03-01T")
    assert record["transaction_timestamp"].endswith(".000Z")


def test_json_returns_at_most_10000_records() -> None:
    with Sandbox(
        seed=1,
        rows_per_day=1_000,
        app_token=APP_TOKEN,
        access_token=ACCESS_TOKEN,
        program=PROGRAM,
        today=TODAY,
    ) as big:
        body = (
            Client(big)
            .get(DETAIL, transaction_timestamp="2024-03-01..2024-03-11")
            .json()
        )

    assert body["total"] == 11_000
    assert body["count"] == 10_000
    assert len(body["records"]) == 10_000
    assert body["is_more"] is True


def test_count_above_limit_is_capped_at_10000(client: Client) -> None:
    body = client.get(DETAIL, **march(count=20_000)).json()

    assert body["count"] == 60
    assert body["is_more"] is False


def test_default_window_is_the_last_seven_days(client: Client) -> None:
    body = client.get(DETAIL).json()

    assert body["start_date"] == "2024-03-25"
    assert body["end_date"] == "2024-03-31"
    assert body["total"] == 7 * 20


def test_no_rows_after_today(client: Client) -> None:
    body = client.get(DETAIL, transaction_timestamp="2024-03-31..2024-04-30").json()

    assert body["total"] == 20


@pytest.mark.parametrize(
    ("window", "expected_days"),
    [
        ("2024-03-02..2024-03-02", {"2024-03-02"}),
        ("2024-03-02T00:00:00..2024-03-02T23:59:59", {"2024-03-02"}),
        (">=2024-03-30", {"2024-03-30", "2024-03-31"}),
        ("2024-03-02", {"2024-03-02"}),
    ],
)
def test_date_filters_select_whole_days(
    client: Client, window: str, expected_days: set[str]
) -> None:
    body = client.get(DETAIL, transaction_timestamp=window).json()
    days = {r["transaction_timestamp"][:10] for r in body["records"]}

    assert days == expected_days
    assert body["total"] == 20 * len(expected_days)


def test_timestamp_range_ends_are_inclusive(client: Client, sandbox: Sandbox) -> None:
    rows = sandbox.expected_rows(
        "authorizations/detail", date(2024, 3, 2), date(2024, 3, 2)
    )
    first, last = rows[0]["transaction_timestamp"], rows[-1]["transaction_timestamp"]
    window = f"{first.replace(' ', 'T')}..{last.replace(' ', 'T')}"

    body = client.get(DETAIL, transaction_timestamp=window).json()

    assert body["total"] == len(rows)


def test_comparison_and_equality_filters(client: Client) -> None:
    records = client.get(
        DETAIL, **march(transaction_amount=">=20", network="VISA")
    ).json()["records"]

    assert records
    assert all(r["network"] == "VISA" for r in records)
    assert all(r["transaction_amount"] >= 20 for r in records)


def test_fields_and_sort_by(client: Client) -> None:
    body = client.get(
        DETAIL,
        **march(
            fields="transaction_token,transaction_amount", sort_by="-transaction_amount"
        ),
    ).json()
    amounts = [
        r["transaction_amount"] for r in body["records"] if r["transaction_amount"]
    ]

    assert set(body["records"][0]) == {"transaction_token", "transaction_amount"}
    assert [o["field"] for o in body["schema"]] == [
        "transaction_token",
        "transaction_amount",
    ]
    assert amounts == sorted(amounts, reverse=True)


def test_request_log_records_status_without_credentials(
    client: Client, sandbox: Sandbox
) -> None:
    client.get(DETAIL, program="other")

    entry = sandbox.requests[-1]
    assert entry.method == "GET"
    assert entry.path == "/data/v2/views/authorizations/detail"
    assert entry.params == {"program": "other"}
    assert entry.status == 403
    assert ACCESS_TOKEN not in repr(sandbox.requests)


def schema_file(name: str):
    return resources.files("connector.schemas").joinpath(f"{name}.json")


def schema_names() -> list[str]:
    root = resources.files("connector.schemas")
    names = []

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.name.startswith(("_", ".")):
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".json"):
                names.append(prefix + entry.name.removesuffix(".json"))

    walk(root, "")
    return sorted(names)
