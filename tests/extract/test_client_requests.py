"""What the client sends for each call, and how it reads DiVA's responses."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import make_settings
from replay import ReplayServer

from connector.datasets import Dataset
from connector.errors import ApiError, ConfigError
from connector.extract.client import DivaClient
from connector.windows import Window

WINDOW = Window(date(2024, 3, 1), date(2024, 3, 7))
DETAIL = "/views/authorizations/detail"


def respond(path: str, **response) -> list[dict]:
    return [{"request": {"path": path}, "response": {"status": 200, **response}}]


def test_count_rows_reads_total(make_client, authorizations):
    body = {"total": 1234, "is_more": True, "count": 1, "records": [{}]}
    with ReplayServer(respond(DETAIL, json=body)) as server:
        total = make_client(server.base_url).count_rows(authorizations, WINDOW)

    query = server.requests[0].query
    assert total == 1234
    assert query["transaction_timestamp"] == "2024-03-01..2024-03-07"
    assert query["count"] == "1"
    assert query["program"] == "demo_program"


def test_count_rows_without_total_is_none(make_client, authorizations):
    with ReplayServer(respond(DETAIL, json={"records": []})) as server:
        total = make_client(server.base_url).count_rows(authorizations, WINDOW)

    assert total is None


@pytest.mark.parametrize(
    ("compress", "expected"), [("gz", None), ("zip", "zip")], ids=["gz", "zip"]
)
def test_export_request_parameters(compress, expected, make_client, authorizations):
    body = {"token": "0123456789abcdef.csv.gz"}
    with ReplayServer(respond(f"{DETAIL}/csv", status=202, json=body)) as server:
        token = make_client(server.base_url).request_export(
            authorizations, WINDOW, compress=compress, max_count=5_000_000
        )

    query = server.requests[0].query
    assert token == "0123456789abcdef.csv.gz"
    assert query.get("compress") == expected
    assert query["max_count"] == "5000000"
    assert query["transaction_timestamp"] == "2024-03-01..2024-03-07"


def test_export_without_token_raises(make_client, authorizations):
    with ReplayServer(respond(f"{DETAIL}/csv", status=202, json={"id": 5})) as server:
        with pytest.raises(ApiError, match="no usable token"):
            make_client(server.base_url).request_export(authorizations, WINDOW)


def test_export_rejects_unknown_compression(make_client, authorizations):
    client = make_client("http://127.0.0.1:9/data/v2")

    with pytest.raises(ConfigError, match="'bz2'"):
        client.request_export(authorizations, WINDOW, compress="bz2")


def test_dataset_without_date_column_sends_no_window(make_client):
    dataset = Dataset.from_dict(
        {
            "view": "transactiontoken",
            "aggregation": "",
            "key": ["core_api_transaction_token"],
            "date_column": None,
            "columns": [{"field": "core_api_transaction_token", "type": "TEXT"}],
        }
    )
    body = {"token": "0123456789abcdef.csv.gz"}
    with ReplayServer(
        respond("/views/transactiontoken/csv", status=202, json=body)
    ) as server:
        make_client(server.base_url).request_export(dataset, WINDOW)

    assert sorted(server.requests[0].query) == ["program"]
    assert server.mismatches == []


def test_non_json_body_raises(make_client):
    with ReplayServer(respond("/views", body_text="<html>login</html>")) as server:
        with pytest.raises(ApiError) as caught:
            make_client(server.base_url).list_views()

    assert "not JSON" in str(caught.value)
    assert "<html>login</html>" in str(caught.value)


def test_schema_must_be_column_list(make_client):
    schema_path = f"{DETAIL}/schema"
    with ReplayServer(respond(schema_path, json={"columns": []})) as server:
        with pytest.raises(ApiError, match="not a list of column objects"):
            make_client(server.base_url).fetch_schema("authorizations/detail")


def test_schema_returned_as_given(make_client):
    columns = [{"field": "transaction_token", "type": "bigint"}]
    with ReplayServer(respond(f"{DETAIL}/schema", json=columns)) as server:
        schema = make_client(server.base_url).fetch_schema("authorizations/detail")

    assert schema == columns


def test_missing_credentials_rejected():
    settings = make_settings("http://127.0.0.1:9/data/v2", access_token="")

    with pytest.raises(ConfigError, match="DIVA_ACCESS_TOKEN"):
        DivaClient(settings)
