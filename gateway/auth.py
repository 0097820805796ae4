"""Bearer-token check: pure functions over the raw header values.

Only SHA-256 digests of tokens are configured. A presented token is hashed once and compared
with every digest of its source in constant time (no early exit), so neither timing nor the
number of configured tokens tells a caller anything. Every malformed credential is simply a
failed check (401), never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from gateway.settings import TokenDigest

_BEARER = "bearer "


def extract_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from ``Authorization: Bearer <t>`` (also ``Bearer Bearer <t>``) or the
    ``access_token`` query parameter; None when neither carries one."""
    if authorization:
        value = authorization.strip()
        if value[:7].lower() != _BEARER:
            return None
        value = value[7:].lstrip()
        # Network as Code's SDK prefixes "Bearer " to the token it registers (domain notes §5).
        if value[:7].lower() == _BEARER:
            value = value[7:].lstrip()
        return value or None
    if query_token:
        return query_token
    return None


def verify(token: str | None, digests: tuple[TokenDigest, ...], now: datetime) -> bool:
    """True when ``token`` hashes to one of ``digests`` that has not expired at ``now``."""
    if token is None or not digests:
        return False
    presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    matched = False
    for candidate in digests:
        same = hmac.compare_digest(presented, candidate.digest)
        if same and (candidate.expires is None or candidate.expires > now):
            matched = True
    return matched


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of a token, the form the config stores."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A new random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)
