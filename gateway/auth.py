"""Authentication of a callback: the outcome type, the bearer-token check, and one
``Authenticator`` per source whatever its ``auth`` scheme.

Only SHA-256 digests of bearer tokens are configured. A presented token is hashed once and
compared with every digest of its source in constant time (no early exit), so neither timing
nor the number of configured tokens tells a caller anything. Every malformed credential is
simply a failed check (401), never an exception. A token that matches a digest whose
``expires`` has passed is ``EXPIRED``: still a 401, but the request is kept (CAMARA sends the
final ``subscription-ended`` just before the token expires; a retry after it must not be
lost).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway import standard_webhooks
from gateway.settings import Source, TokenDigest

_BEARER = "bearer "


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"  # 401
    EXPIRED = "expired"  # 401, and the request is kept on .rejected
    UNAVAILABLE = "unavailable"  # 503: the keys to check it cannot be fetched right now


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: Outcome
    retry_after_s: float = 0.0


ACCEPTED = AuthResult(Outcome.ACCEPTED)
REFUSED = AuthResult(Outcome.REFUSED)
EXPIRED = AuthResult(Outcome.EXPIRED)


class Authenticator(Protocol):
    """One source's check. ``needs_body``: the check covers the raw body (signatures), so
    the body is read (within ``max_body_bytes``) before it."""

    needs_body: bool

    async def check(
        self,
        headers: Mapping[str, str],
        query_token: str | None,
        body: bytes | None,
        now: datetime,
    ) -> AuthResult: ...


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


def check_token(token: str | None, digests: tuple[TokenDigest, ...], now: datetime) -> AuthResult:
    """ACCEPTED when ``token`` hashes to a current digest, EXPIRED when it only matches
    expired ones, else REFUSED. Every digest is compared, whatever matched."""
    if token is None or not digests:
        return REFUSED
    presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    current = expired = False
    for candidate in digests:
        same = hmac.compare_digest(presented, candidate.digest)
        if same and (candidate.expires is None or candidate.expires > now):
            current = True
        elif same:
            expired = True
    if current:
        return ACCEPTED
    return EXPIRED if expired else REFUSED


def verify(token: str | None, digests: tuple[TokenDigest, ...], now: datetime) -> bool:
    """True when ``token`` hashes to one of ``digests`` that has not expired at ``now``."""
    return check_token(token, digests, now) is ACCEPTED


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of a token, the form the config stores."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A new random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class BearerAuth:
    """``auth = "bearer"``: a token whose SHA-256 digest is configured."""

    needs_body = False

    def __init__(self, digests: tuple[TokenDigest, ...]) -> None:
        self._digests = digests

    async def check(
        self,
        headers: Mapping[str, str],
        query_token: str | None,
        body: bytes | None,
        now: datetime,
    ) -> AuthResult:
        return check_token(
            extract_token(headers.get("Authorization"), query_token), self._digests, now
        )


class StandardWebhooksAuth:
    """``auth = "standard-webhooks"``: an HMAC signature of the raw body
    (``gateway.standard_webhooks``)."""

    needs_body = True

    def __init__(self, keys: tuple[bytes, ...], tolerance_s: float) -> None:
        self._keys = keys
        self._tolerance_s = tolerance_s

    async def check(
        self,
        headers: Mapping[str, str],
        query_token: str | None,
        body: bytes | None,
        now: datetime,
    ) -> AuthResult:
        valid = body is not None and standard_webhooks.verify(
            headers, body, self._keys, now=now.timestamp(), tolerance_s=self._tolerance_s
        )
        return ACCEPTED if valid else REFUSED


class NoAuth:
    """``auth = "none"``: the source's ``allow_from`` is its only door (settings require one)."""

    needs_body = False

    async def check(
        self,
        headers: Mapping[str, str],
        query_token: str | None,
        body: bytes | None,
        now: datetime,
    ) -> AuthResult:
        return ACCEPTED


def simple_authenticator(source: Source) -> Authenticator | None:
    """The authenticator of a bearer, standard-webhooks or none source (None for ``jwt``,
    whose authenticator needs a JWKS cache: ``gateway.auth_jwt``)."""
    if source.auth == "bearer":
        return BearerAuth(source.tokens)
    if source.auth == "standard-webhooks":
        return StandardWebhooksAuth(source.secrets, source.signature_tolerance_s)
    if source.auth == "none":
        return NoAuth()
    return None
