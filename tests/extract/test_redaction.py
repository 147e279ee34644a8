"""Masking of secrets, URL credentials and export tokens."""

from __future__ import annotations

import logging

import pytest

from connector.redaction import (
    SecretsFilter,
    mask_secrets,
    mask_text,
    mask_token,
    mask_url,
    scrub_exception,
)


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        ("3f9c2a7e5b1d4c08.csv.gz", "3f9c2a….csv.gz"),
        ("8d41e0b6a2c97f15.csv.zip", "8d41e0….csv.zip"),
        ("5b7e19c3d0a4f286.csv", "5b7e19….csv"),
        ("5b7e19c3d0a4f286aa", "5b7e19…"),
        ("short.csv.gz", "….csv.gz"),
        ("", "(none)"),
        (None, "(none)"),
    ],
)
def test_mask_token_keeps_prefix_and_extensions(token, masked):
    assert mask_token(token) == masked


def test_mask_token_is_idempotent():
    once = mask_token("3f9c2a7e5b1d4c08.csv.gz")

    assert mask_token(once) == once


def test_mask_url_hides_credentials_and_token():
    url = (
        "https://user:p%40ss@diva.example/data/v2/download"
        "?program=demo&token=3f9c2a7e5b1d4c08.csv.gz&access_token=abc"
    )

    masked = mask_url(url)

    assert "p%40ss" not in masked
    assert "user:" not in masked
    assert "3f9c2a7e5b1d4c08" not in masked
    assert "token=3f9c2a….csv.gz" in masked
    assert "access_token=***" in masked
    assert "program=demo" in masked


def test_mask_secrets_replaces_plain_and_url_encoded_forms():
    secret = "pa ss/w@rd"
    text = f"password={secret} url=postgresql://u:pa%20ss%2Fw%40rd@db pw=pa+ss%2Fw%40rd"

    masked = mask_secrets(text, [secret])

    assert "pa ss" not in masked
    assert "pa%20ss" not in masked
    assert "pa+ss" not in masked
    assert masked.count("***") == 3


def test_mask_secrets_masks_longest_secret_whole():
    masked = mask_secrets("key=abcdef", ["abc", "abcdef"])

    assert masked == "key=***"


def test_mask_secrets_ignores_empty_secret():
    assert mask_secrets("text", ["", None or ""]) == "text"


def test_scrub_exception_masks_the_whole_chain():
    try:
        try:
            raise OSError("GET /download?token=3f9c2a7e5b1d4c08.csv.gz failed")
        except OSError as inner:
            raise RuntimeError("auth secret-b2c4d8e6f0a1 refused") from inner
    except RuntimeError as outer:
        scrub_exception(outer, ["secret-b2c4d8e6f0a1"])
        caught = outer

    assert "secret-b2c4d8e6f0a1" not in str(caught)
    assert "3f9c2a7e5b1d4c08" not in str(caught.__cause__)
    assert "3f9c2a….csv.gz" in str(caught.__cause__)


def _record(msg, *args, exc_info=None):
    return logging.LogRecord(
        "connector.test", logging.INFO, __file__, 1, msg, args, exc_info
    )


def test_secrets_filter_masks_message_and_args():
    secrets_filter = SecretsFilter(["secret-b2c4d8e6f0a1"])
    record = _record(
        "GET %s with password %s",
        "http://h/download?token=3f9c2a7e5b1d4c08.csv.gz",
        "secret-b2c4d8e6f0a1",
    )

    assert secrets_filter.filter(record) is True

    message = record.getMessage()
    assert "secret-b2c4d8e6f0a1" not in message
    assert "3f9c2a7e5b1d4c08" not in message
    assert "token=3f9c2a….csv.gz" in message
    assert record.args is None


def test_secrets_filter_masks_traceback():
    secrets_filter = SecretsFilter(["secret-b2c4d8e6f0a1"])
    try:
        raise ValueError("bad password secret-b2c4d8e6f0a1")
    except ValueError:
        import sys

        record = _record("failed", exc_info=sys.exc_info())

    secrets_filter.filter(record)
    formatted = logging.Formatter().format(record)

    assert "secret-b2c4d8e6f0a1" not in formatted
    assert "bad password ***" in formatted


def test_secrets_filter_on_handler_masks_child_loggers(caplog):
    secrets_filter = SecretsFilter(["secret-b2c4d8e6f0a1"])
    caplog.handler.addFilter(secrets_filter)
    try:
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("urllib3.connectionpool").debug(
                '"GET /download?token=%s HTTP/1.1" 200', "3f9c2a7e5b1d4c08.csv.gz"
            )
    finally:
        caplog.handler.removeFilter(secrets_filter)

    assert "3f9c2a7e5b1d4c08" not in caplog.text
    assert "token=3f9c2a….csv.gz" in caplog.text


def test_mask_text_combines_secrets_and_urls():
    text = "https://app:secret-x@h/v?token=3f9c2a7e5b1d4c08.csv.gz secret-x"

    masked = mask_text(text, ["secret-x"])

    assert "secret-x" not in masked
    assert "3f9c2a7e5b1d4c08" not in masked


def test_mask_text_shortens_token_in_json_and_prose():
    text = 'body {"token": "3f9c2a7e5b1d4c08.csv.gz"} and token=8d41e0b6a2c97f15.csv.gz'

    masked = mask_text(text)

    assert masked == 'body {"token": "3f9c2a….csv.gz"} and token=8d41e0….csv.gz'


def test_secrets_filter_sees_secrets_added_later():
    secrets: list[str] = []
    secrets_filter = SecretsFilter(secrets)
    secrets.append("secret-added-later")
    record = _record("password %s", "secret-added-later")

    secrets_filter.filter(record)

    assert record.getMessage() == "password ***"
