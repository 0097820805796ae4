"""The record kept on ``<prefix>.rejected`` for an authenticated request that got a 4xx.

Notify never retries a 4xx, so the raw request is kept for inspection and replay (contract
§2, §4): ``{source, status, reason, received, headers, body | body_base64}``, credentials
removed (every credential-like header: ``Authorization``, ``Cookie``, ``X-Api-Key``,
``X-Auth-Token``, any name holding ``token``, ``signature``, ``secret``…), no body for a 413.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

import orjson

CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token", "apikey"}
)
# Any header whose name holds one of these is a credential too (X-Hub-Signature-256,
# webhook-signature, X-CSRF-Token, X-Webhook-Secret, X-Authorization, X_API_KEY, ...).
CREDENTIAL_WORDS = (
    "token",
    "signature",
    "secret",
    "password",
    "api-key",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
)


def rejected_record(
    *,
    source: str,
    status: int,
    reason: str,
    received: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """Serialise the record; repeated header names are joined with ", "."""
    kept: dict[str, str] = {}
    for raw_name, value in headers:
        name = _text(str(raw_name))  # aiohttp's istr is a str subclass: orjson refuses it as a key
        if is_credential(name):
            continue
        value = _text(value)
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    record: dict[str, object] = {
        "source": source,
        "status": status,
        "reason": reason,
        "received": received,
        "headers": kept,
    }
    if body is not None:
        try:
            record["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            record["body_base64"] = base64.b64encode(body).decode("ascii")
    return orjson.dumps(record)


def is_credential(name: str) -> bool:
    """A header that carries a credential and is never kept."""
    lower = name.lower()
    return lower in CREDENTIAL_HEADERS or any(word in lower for word in CREDENTIAL_WORDS)


def _text(value: str) -> str:
    """Header text as it came; bytes that were not UTF-8 (aiohttp keeps them as lone
    surrogates, which JSON cannot hold) become ``\\xNN``."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
