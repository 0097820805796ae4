"""The rejected-request record: shape, and no credential ever kept."""

from __future__ import annotations

import base64

import orjson
import pytest

from gateway.rejected import is_credential, rejected_record

CREDENTIALS = (
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "X-Api-Key",
    "X-Auth-Token",
    "x-csrf-token",
    "webhook-signature",
    "X-Hub-Signature-256",
    "X-Webhook-Secret",
    "Access-Token",
)


def _record(headers: list[tuple[str, str]], body: bytes | None = b"{}") -> dict[str, object]:
    record: dict[str, object] = orjson.loads(
        rejected_record(
            source="camara",
            status=400,
            reason="bad",
            received="2026-03-01T10:00:00Z",
            headers=headers,
            body=body,
        )
    )
    return record


@pytest.mark.parametrize("name", CREDENTIALS)
def test_credential_like_headers_are_dropped(name: str) -> None:
    """Every credential-like header is left out, whatever its case; its value appears nowhere."""
    record = _record([(name, "s3cr3t-value"), ("Content-Type", "application/json")])
    assert record["headers"] == {"Content-Type": "application/json"}
    assert b"s3cr3t-value" not in orjson.dumps(record)
    assert is_credential(name.upper())


@pytest.mark.parametrize(
    "name", ["Content-Type", "ce-id", "ce-source", "webhook-id", "webhook-timestamp", "User-Agent"]
)
def test_ordinary_headers_are_kept(name: str) -> None:
    """Headers that carry no credential are kept for replay."""
    assert _record([(name, "v")])["headers"] == {name: "v"}


def test_repeated_headers_are_joined_and_bodies_kept_as_text_or_base64() -> None:
    """Repeated names join with ", "; UTF-8 bodies stay text, others become body_base64."""
    text = _record([("X-A", "1"), ("X-A", "2")], b'{"a":1}')
    assert text["headers"] == {"X-A": "1, 2"}
    assert text["body"] == '{"a":1}'
    binary = _record([], b"\xff\x00")
    assert binary["body_base64"] == base64.b64encode(b"\xff\x00").decode()
    assert "body" not in _record([], None)
