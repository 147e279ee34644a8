"""The run directory and the export state machine: resume, reuse, timeouts."""

from __future__ import annotations

import gzip
import json
from datetime import date

import pytest
from replay import ReplayServer

from connector.errors import DownloadError, ExportTimeoutError
from connector.extract.export import export_window
from connector.extract.rundir import STATE_FILE, RunDirectory
from connector.windows import Window

WINDOW = Window(date(2024, 3, 5), date(2024, 3, 6))
TOKEN = "a1b2c3d4e5f60718.csv.gz"
NEW_TOKEN = "ffee00112233aabb.csv.gz"
BODY = gzip.compress(b"token,amount\nt1,1.00\nt2,2.00\n")
EXPORT_PATH = "/views/authorizations/detail/csv"


def export_answer(token: str = TOKEN) -> dict:
    return {
        "request": {"path": EXPORT_PATH},
        "response": {"status": 202, "json": {"token": token}},
    }


def download_answer(status: int, token: str = TOKEN, **response) -> dict:
    body = {"body_bytes": BODY} if status == 200 else {"body_text": "Pending"}
    if status == 410:
        body = {
            "json": {"error_code": "410001", "message": "exported file has expired"}
        }
    return {
        "request": {"path": "/download", "query": {"token": token}},
        "response": {"status": status, **body, **response},
    }


def run(client, dataset, run_dir, *, poll_timeout_s=600.0, max_reexports=1):
    return export_window(
        client,
        dataset,
        WINDOW,
        run_dir,
        compress="gz",
        max_count=1000,
        poll_interval_s=2.0,
        poll_max_interval_s=5.0,
        poll_timeout_s=poll_timeout_s,
        max_reexports=max_reexports,
    )


def test_state_survives_reopen(tmp_path):
    run_dir = RunDirectory.open(
        tmp_path, "authorizations/detail|2024-03-05..2024-03-06"
    )
    run_dir.record_token(WINDOW, TOKEN, compress="gz", max_count=1000)
    run_dir.mark_finished(WINDOW)

    again = RunDirectory.open(tmp_path, "authorizations/detail|2024-03-05..2024-03-06")

    assert again.path == run_dir.path
    assert again.recorded_export(WINDOW).token == TOKEN
    assert again.finished(WINDOW)
    assert not again.finished(Window(date(2024, 3, 7), date(2024, 3, 7)))


def test_state_written_atomically(tmp_path):
    run_dir = RunDirectory.open(tmp_path, "key")
    for number in range(5):
        run_dir.record_token(WINDOW, f"{number}{TOKEN}", compress="gz", max_count=None)

    names = sorted(p.name for p in run_dir.path.iterdir())
    state = json.loads((run_dir.path / STATE_FILE).read_text())

    assert names == [STATE_FILE]
    assert state["windows"][WINDOW.to_filter()]["export"]["token"] == f"4{TOKEN}"


def test_other_run_key_starts_afresh(tmp_path):
    RunDirectory.open(tmp_path, "first").record_token(
        WINDOW, TOKEN, compress="gz", max_count=None
    )

    other = RunDirectory.open(tmp_path, "second")

    assert other.recorded_export(WINDOW) is None


def test_close_removes_state_and_keeps_files(tmp_path):
    run_dir = RunDirectory.open(tmp_path, "key")
    run_dir.record_token(WINDOW, TOKEN, compress="gz", max_count=None)
    export_file = run_dir.path / "export.csv.gz"
    export_file.write_bytes(BODY)
    (run_dir.path / "other.csv.gz.part").write_bytes(b"partial")

    run_dir.close()

    assert sorted(p.name for p in run_dir.path.iterdir()) == ["export.csv.gz"]
    assert RunDirectory.open(tmp_path, "key").recorded_export(WINDOW) is None


def test_close_of_empty_run_removes_folder(tmp_path):
    run_dir = RunDirectory.open(tmp_path, "key")
    run_dir.mark_finished(WINDOW)

    run_dir.close()

    assert not run_dir.path.exists()


def test_unreadable_state_starts_afresh(tmp_path):
    run_dir = RunDirectory.open(tmp_path, "key")
    (run_dir.path / STATE_FILE).write_text("{not json")

    assert RunDirectory.open(tmp_path, "key").recorded_export(WINDOW) is None


def test_poll_deadline_raises_timeout(make_client, authorizations, clock, tmp_path):
    exchanges = [export_answer(), download_answer(202)]
    with ReplayServer(exchanges, repeat_last=True) as server:
        client = make_client(server.base_url)
        with pytest.raises(ExportTimeoutError) as caught:
            run(
                client,
                authorizations,
                RunDirectory.open(tmp_path, "k"),
                poll_timeout_s=30.0,
            )

    message = str(caught.value)
    assert "authorizations/detail" in message
    assert "2024-03-05..2024-03-06" in message
    assert "30 s" in message
    assert "a1b2c3….csv.gz" in message
    assert sum(clock.sleeps) == pytest.approx(30.0)
    assert max(clock.sleeps) <= 5.0
    assert 1.8 <= clock.sleeps[0] <= 2.2
    assert 2.7 <= clock.sleeps[1] <= 3.3
    assert caught.value.waited_s >= 30.0


def test_killed_mid_poll_resumes_same_token(make_client, authorizations, tmp_path):
    first = ReplayServer([export_answer(), download_answer(202)], repeat_last=True)
    with first:
        with pytest.raises(ExportTimeoutError):
            run(
                make_client(first.base_url),
                authorizations,
                RunDirectory.open(tmp_path, "k"),
                poll_timeout_s=10.0,
            )

    second = ReplayServer([download_answer(202), download_answer(200)])
    with second:
        exported = run(
            make_client(second.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
        )

    assert exported.token == TOKEN
    assert exported.path.read_bytes() == BODY
    assert second.mismatches == []
    assert all(r.path == "/download" for r in second.requests)


def test_killed_mid_download_resumes_same_token(make_client, authorizations, tmp_path):
    first = ReplayServer(
        [export_answer(), download_answer(200, close_after_bytes=10)], repeat_last=True
    )
    with first:
        with pytest.raises(DownloadError):
            run(
                make_client(first.base_url, retry_max_attempts=2),
                authorizations,
                RunDirectory.open(tmp_path, "k"),
            )

    second = ReplayServer([download_answer(200)])
    with second:
        exported = run(
            make_client(second.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
        )

    assert exported.token == TOKEN
    assert exported.path.read_bytes() == BODY
    assert second.mismatches == []
    assert len(second.requests) == 1


def test_downloaded_window_not_exported_again(make_client, authorizations, tmp_path):
    with ReplayServer([export_answer(), download_answer(200)]) as first:
        exported = run(
            make_client(first.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
        )

    with ReplayServer([]) as second:
        again = run(
            make_client(second.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
        )

    assert again.path == exported.path
    assert again.token == TOKEN
    assert second.requests == []


def test_new_run_exports_again(make_client, authorizations, tmp_path):
    with ReplayServer([export_answer(), download_answer(200)]) as first:
        run_dir = RunDirectory.open(tmp_path, "k")
        run(make_client(first.base_url), authorizations, run_dir)
        run_dir.close()

    with ReplayServer(
        [export_answer(NEW_TOKEN), download_answer(200, NEW_TOKEN)]
    ) as second:
        exported = run(
            make_client(second.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
        )

    assert exported.token == NEW_TOKEN
    assert second.mismatches == []
    assert second.unserved == 0


def test_expired_resumed_token_not_counted_as_reexport(
    make_client, authorizations, tmp_path
):
    run_dir = RunDirectory.open(tmp_path, "k")
    run_dir.record_token(WINDOW, TOKEN, compress="gz", max_count=1000)
    exchanges = [
        download_answer(410),
        export_answer(NEW_TOKEN),
        download_answer(200, NEW_TOKEN),
    ]
    with ReplayServer(exchanges) as server:
        exported = run(
            make_client(server.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
            max_reexports=0,
        )

    assert exported.token == NEW_TOKEN
    assert server.mismatches == []
    assert RunDirectory.open(tmp_path, "k").recorded_export(WINDOW).token == NEW_TOKEN


def test_exported_file_repr_hides_token(make_client, authorizations, tmp_path):
    with ReplayServer([export_answer(), download_answer(200)]) as server:
        exported = run(
            make_client(server.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
        )

    assert TOKEN not in repr(exported)
    assert exported.token == TOKEN


def test_stale_recorded_token_not_polled(make_client, authorizations, tmp_path):
    stale = RunDirectory.open(tmp_path, "k", now=lambda: 1_000_000.0)
    stale.record_token(WINDOW, TOKEN, compress="gz", max_count=1000)
    exchanges = [export_answer(NEW_TOKEN), download_answer(200, NEW_TOKEN)]

    with ReplayServer(exchanges) as server:
        exported = run(
            make_client(server.base_url),
            authorizations,
            RunDirectory.open(tmp_path, "k"),
        )

    assert exported.token == NEW_TOKEN
    assert server.mismatches == []
    assert not any(r.query.get("token") == TOKEN for r in server.requests)
