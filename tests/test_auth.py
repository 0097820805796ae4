"""Bearer-token authentication: the pure check and the HTTP matrix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.auth import ACCEPTED, EXPIRED, REFUSED, check_token, extract_token, hash_token, verify
from gateway.settings import TokenDigest
from tests.broker import drain, message_count
from tests.conftest import FIXTURES, TOKENS, Ingress
from tests.worker_support import run_cli

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _digest(token: str, expires: datetime | None = None) -> TokenDigest:
    return TokenDigest(bytes.fromhex(hash_token(token)[7:]), expires)


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer abc", None, "abc"),
        ("Bearer Bearer abc", None, "abc"),
        ("Bearer   abc  ", None, "abc"),
        (None, "abc", "abc"),
        ("Bearer abc", "other", "abc"),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None, None),
        ("Bearer", None, None),
        ("Bearer ", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_extract_token(header: str | None, query: str | None, expected: str | None) -> None:
    """Bearer, doubled Bearer and access_token are read; anything else yields no token."""
    assert extract_token(header, query) == expected


def test_verify_accepts_any_current_token_of_the_source() -> None:
    """Several digests per source allow rotation; each one opens the door."""
    digests = (_digest("old"), _digest("new"))
    assert verify("old", digests, NOW)
    assert verify("new", digests, NOW)
    assert not verify("other", digests, NOW)
    assert not verify(None, digests, NOW)
    assert not verify("old", (), NOW)


def test_verify_honours_expiry() -> None:
    """An expired digest no longer opens; one expiring later still does."""
    assert not verify("t", (_digest("t", NOW - timedelta(seconds=1)),), NOW)
    assert verify("t", (_digest("t", NOW + timedelta(seconds=1)),), NOW)


def test_check_token_tells_expired_from_wrong() -> None:
    """A token matching only an expired digest is EXPIRED (kept); a current one wins."""
    old = _digest("t", NOW - timedelta(seconds=1))
    assert check_token("t", (old,), NOW) is EXPIRED
    assert check_token("t", (old, _digest("t", NOW + timedelta(days=1))), NOW) is ACCEPTED
    assert check_token("t", (old, _digest("t")), NOW) is ACCEPTED
    assert check_token("other", (old,), NOW) is REFUSED
    assert check_token(None, (old,), NOW) is REFUSED


def test_auth_none_alone_exits_2(tmp_path: Path) -> None:
    """`auth = "none"` without allow_from is refused at start: one line, exit 2."""
    config = tmp_path / "gateway.toml"
    config.write_text('[[sources]]\nname = "open"\nadapter = "camara"\nauth = "none"\n')
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert "allow_from" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_hash_token_format() -> None:
    """Digests are sha256:<64 hex>, the format the config stores."""
    assert hash_token("test") == (
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )


BODY = (FIXTURES / "camara-roaming-status.json").read_bytes()
CE = "application/cloudevents+json"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/callbacks/camara", {"Authorization": f"Bearer {TOKENS['camara']}"}, 204),
        ("/callbacks/camara", {"Authorization": f"Bearer Bearer {TOKENS['camara']}"}, 204),
        (f"/callbacks/camara?access_token={TOKENS['camara']}", {}, 204),
        ("/callbacks/camara", {}, 401),
        ("/callbacks/camara", {"Authorization": "Bearer wrong"}, 401),
        ("/callbacks/camara", {"Authorization": f"Basic {TOKENS['camara']}"}, 401),
        ("/callbacks/camara", {"Authorization": "Bearer \u00e9\u00e9"}, 401),
        ("/callbacks/camara", {"Authorization": f"Bearer {TOKENS['notify-status']}"}, 401),
        ("/callbacks/cloudevents", {"Authorization": f"Bearer {TOKENS['camara']}"}, 401),
        ("/callbacks/open", {}, 204),
    ],
)
async def test_auth_matrix(
    ingress: Ingress, path: str, headers: dict[str, str], status: int
) -> None:
    """Only a valid token of the addressed source (or auth = "none") gets through."""
    response = await ingress.client.post(path, data=BODY, headers={"Content-Type": CE, **headers})
    assert response.status == status
    if status == 204:
        assert len(await drain(ingress.channel, ingress.capture, 1)) == 1
    else:
        assert await message_count(ingress.channel, ingress.capture) == 0
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.content_type == "application/problem+json"
        assert await message_count(ingress.channel, ingress.rejected) == 0
