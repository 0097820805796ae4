"""What one source's door lets through, in the order the ingress asks (contract §8):

1. ``allow_from``: a client address outside it gets 403 (before any credential is looked at,
   and nothing is kept: the request is not authenticated);
2. the credential of the source's ``auth`` scheme (``gateway.auth``, ``gateway.auth_jwt``);
3. ``rate_limit``: past it 429 + ``Retry-After``, nothing kept (counted only for requests
   that authenticated, so nobody else can use up a sender's budget);
4. ``types``: an event the source may not send is refused (403 naming ``type``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from gateway.auth import Authenticator, AuthResult, simple_authenticator
from gateway.auth_jwt import JwksCache, jwt_authenticator
from gateway.client_address import Network, allowed, client_address, unmapped
from gateway.cloudevent import CloudEvent
from gateway.rate_limit import TokenBucket
from gateway.settings import Source
from gateway.type_patterns import SourceTypes

MAX_REMEMBERED_TYPES = 1024  # allowed event types kept per source (forbidden_type)


class SourceAccess:
    """The checks of one source (module docstring), built once from its settings."""

    def __init__(
        self,
        source: Source,
        trusted_proxies: tuple[Network, ...],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._trusted = unmapped(trusted_proxies)
        self._allow_from = unmapped(source.allow_from)
        # auth = "none" with no allow_from would be open to anyone: settings refuse such a
        # config; a Source built in code without one lets nobody in rather than everybody.
        self.restricted = bool(source.allow_from) or source.auth == "none"
        self.jwks: JwksCache | None = None
        authenticator = simple_authenticator(source)
        if authenticator is None:
            jwt_auth = jwt_authenticator(source)
            self.jwks = jwt_auth.cache
            authenticator = jwt_auth
        self._authenticator: Authenticator = authenticator
        self.needs_body = authenticator.needs_body
        self._clock = clock
        self._bucket = (
            None if source.rate_limit is None else TokenBucket(source.rate_limit, clock())
        )
        self._types = SourceTypes(source.adapter, source.types)
        self._allowed_types: set[str] = set()

    def admits(self, peer: str | None, forwarded_for: Iterable[str]) -> bool:
        """False when ``allow_from`` excludes the client (403)."""
        if not self.restricted:
            return True
        return allowed(client_address(peer, forwarded_for, self._trusted), self._allow_from)

    async def authenticate(
        self,
        headers: Mapping[str, str],
        query_token: str | None,
        body: bytes | None,
        now: datetime,
    ) -> AuthResult:
        return await self._authenticator.check(headers, query_token, body, now)

    def rate_wait(self) -> float:
        """0.0 when the request is within ``rate_limit``, else the seconds to wait (429)."""
        if self._bucket is None:
            return 0.0
        return self._bucket.take(self._clock())

    def forbidden_type(self, events: Iterable[CloudEvent]) -> str | None:
        """The first event type the source may not send, or None when it may send them all.

        The types found allowed are remembered (a set lookup instead of the patterns' regular
        expression on every event), at most ``MAX_REMEMBERED_TYPES`` of them: a source sends
        a handful of types, and a sender inventing new ones only fills the set once."""
        remembered = self._allowed_types
        allows = self._types.allows
        for event in events:
            event_type = event["type"]
            if event_type in remembered:
                continue
            if not allows(event_type):
                return str(event_type)
            if len(remembered) < MAX_REMEMBERED_TYPES:
                remembered.add(event_type)
        return None
