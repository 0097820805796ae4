"""``auth = "jwt"``: bearer JWTs checked against a JWKS (CAMARA's ``PRIVATE_KEY_JWT``).

PyJWT (with ``cryptography``) does the cryptography. Only RS256, PS256, ES256 and EdDSA are
accepted: the algorithm comes from the token's header, so it is checked against that list
before anything else, and a key is used only with the algorithm family of its own ``kty``
(``none`` and every HMAC algorithm are refused, and a JWKS ``oct`` key is never loaded, so
an RSA public key can never be turned into an HMAC secret). ``iss``, ``aud`` and ``exp`` are
required; ``exp``/``nbf`` are honoured with ``leeway_s``.

The JWKS (``jwks_url`` over HTTP with a timeout, or ``jwks_file``) is loaded at start and
again when a token names an unknown ``kid``: at most once a minute (the start-up load is
not counted), one load shared by every request waiting for it. While no key set could be
loaded the answer is 503 + ``Retry-After`` (the sender retries), not 401.

Errors:
    JwksUnavailable: the key set could not be loaded; ``retry_after_s`` says when to retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
from aiohttp import web

from gateway.auth import ACCEPTED, REFUSED, AuthResult, Outcome, extract_token
from gateway.logs import get_logger
from gateway.settings import Source

log = get_logger("gateway.auth_jwt")

# Algorithm -> the JWK key type (and EC curve) it may be used with.
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", None),
}
REFETCH_INTERVAL_S = 60.0
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20
MAX_TOKEN_CHARS = 16384
VERIFIED_TOKENS = 1024

Loader = Callable[[], Awaitable[bytes]]


class JwksUnavailable(Exception):
    """The key set could not be loaded; retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the JWKS could not be loaded")
        self.retry_after_s = retry_after_s


class UrlLoader:
    """GET ``url`` with its own small client session (made on first use, in the loop)."""

    def __init__(self, url: str, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.get(self._url, allow_redirects=False) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = bytearray()
            while len(body) <= MAX_JWKS_BYTES:  # read() may return less than asked
                chunk = await response.content.read(MAX_JWKS_BYTES + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
        return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class FileLoader:
    """Read ``path`` in a thread (the event loop never waits on the disk)."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    async def __call__(self) -> bytes:
        body = await asyncio.to_thread(self._read)
        return body

    def _read(self) -> bytes:
        with self._path.open("rb") as fh:
            body = fh.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
        return body

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable JWKS entry: what it is for, and the loaded key."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    jwk: jwt.PyJWK


def parse_jwks(raw: bytes) -> list[SigningKey]:
    """The signing keys of a JWKS document that one of ``ALGORITHMS`` can use.

    Keys of other types (``oct`` above all), keys for encryption (``use`` = ``enc``) and
    keys PyJWT cannot load are skipped; a document with none left is an error.
    """
    document = orjson.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys = []
    kinds = {kty for kty, _ in ALGORITHMS.values()}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in kinds:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        if "alg" in entry and entry["alg"] not in ALGORITHMS:
            continue
        try:
            loaded = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        kid, crv, alg = entry.get("kid"), entry.get("crv"), entry.get("alg")
        keys.append(
            SigningKey(
                kid if isinstance(kid, str) else None,
                entry["kty"],
                crv if isinstance(crv, str) else None,
                alg,
                loaded,
            )
        )
    if not keys:
        raise ValueError("the JWKS has no usable signing key")
    return keys


class JwksCache:
    """The key set of one source, loaded by ``loader`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        loader: Loader,
        *,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._loader = loader
        self._interval = refetch_interval_s
        self._clock = clock
        self._keys: list[SigningKey] | None = None
        self._failed = False
        self._last_refetch: float | None = None
        self._loading: asyncio.Future[None] | None = None
        self.generation = 0  # counts the key sets loaded: a new one voids verified tokens

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    async def start(self) -> None:
        """The start-up load (not counted against the once-a-minute refetch)."""
        await self._load()

    async def close(self) -> None:
        """Cancel a load in flight and close the loader's client."""
        loading = self._loading
        if loading is not None and not loading.done():
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
        close = getattr(self._loader, "close", None)
        if close is not None:
            await close()

    async def keys_for(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """The keys that may have signed a token with this header: refetched once for an
        unknown ``kid``; [] when none (401); ``JwksUnavailable`` when unknown for now (503)."""
        if self._loading is not None:
            await asyncio.shield(self._loading)
        keys = self._matching(kid, alg)
        if keys:
            return keys
        now = self._clock()
        if self._last_refetch is None or now - self._last_refetch >= self._interval:
            self._last_refetch = now
            await self._load()
            keys = self._matching(kid, alg)
            if keys or not self._failed:
                return keys
            raise JwksUnavailable(self._interval)
        if self._failed or self._keys is None:
            raise JwksUnavailable(self._last_refetch + self._interval - now)
        return []

    def _matching(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        kty, curve = ALGORITHMS[alg]
        return [
            key.jwk
            for key in self._keys or ()
            if (kid is None or key.kid == kid)
            and key.kty == kty
            and (curve is None or key.crv == curve)
            and key.alg in (None, alg)
        ]

    async def _load(self) -> None:
        """Load the key set; concurrent callers share one load."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._fetch())
            self._loading.add_done_callback(self._loaded)
        await asyncio.shield(self._loading)

    def _loaded(self, _future: asyncio.Future[None]) -> None:
        self._loading = None

    async def _fetch(self) -> None:
        try:
            keys = parse_jwks(await self._loader())
        except Exception as exc:  # any failure to load means "unavailable", never a 500
            self._failed = True
            log.warning(
                "JWKS could not be loaded",
                source=self.name,
                error=f"{type(exc).__name__}: {exc}"[:300],
                keeping_previous=self._keys is not None,
            )
            return
        self._keys, self._failed = keys, False
        self.generation += 1
        log.info("JWKS loaded", source=self.name, keys=len(keys))


class JwtAuth:
    """The authenticator of an ``auth = "jwt"`` source.

    A sender reuses one token for many requests until it expires, and an asymmetric
    signature check costs far more than the rest of a request, so a verified token is
    remembered (by its SHA-256, at most ``VERIFIED_TOKENS``) until its ``exp`` + leeway;
    the memory is dropped whenever a new key set is loaded (a key may have been removed).
    """

    needs_body = False

    def __init__(
        self, source: Source, cache: JwksCache, *, clock: Callable[[], float] = time.time
    ) -> None:
        assert source.issuer is not None
        self.cache = cache
        self._clock = clock
        self._issuer = source.issuer
        self._audience = list(source.audience)
        self._leeway = source.leeway_s
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._generation = cache.generation

    async def check(
        self,
        headers: Mapping[str, str],
        query_token: str | None,
        body: bytes | None,
        now: datetime,
    ) -> AuthResult:
        token = extract_token(headers.get("Authorization"), query_token)
        # A JWT is base64url and dots: anything else (bytes aiohttp kept as lone surrogates,
        # which PyJWT cannot encode) is refused before PyJWT sees it.
        if token is None or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            return REFUSED
        if self._generation != self.cache.generation:
            self._verified.clear()
            self._generation = self.cache.generation
        fingerprint = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        until = self._verified.get(fingerprint)
        if until is not None:
            if self._clock() < until:
                return ACCEPTED
            del self._verified[fingerprint]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return REFUSED
        alg, kid = header.get("alg"), header.get("kid")
        # ``alg`` may be any JSON value (a list is unhashable): only a listed string passes.
        if (
            not isinstance(alg, str)
            or alg not in ALGORITHMS
            or not (kid is None or isinstance(kid, str))
        ):
            return REFUSED
        try:
            keys = await self.cache.keys_for(kid, alg)
        except JwksUnavailable as exc:
            return AuthResult(Outcome.UNAVAILABLE, exc.retry_after_s)
        for key in keys:
            expires = self._valid(token, key, alg)
            if expires is not None:
                self._remember(fingerprint, expires + self._leeway)
                return ACCEPTED
        return REFUSED

    def _remember(self, fingerprint: bytes, until: float) -> None:
        self._verified[fingerprint] = until
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)

    def _valid(self, token: str, key: jwt.PyJWK, alg: str) -> float | None:
        """The token's ``exp`` when it is valid under ``key``, else None."""
        try:
            claims: Any = jwt.decode(
                token,
                key.key,  # the bare key: a PyJWK would pin the algorithm it guessed (RS256)
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        expires = claims.get("exp") if isinstance(claims, dict) else None
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            return None
        return float(expires)


def jwt_authenticator(source: Source) -> JwtAuth:
    """A ``JwtAuth`` with the JWKS cache of ``source`` (not loaded yet: ``cache.start()``)."""
    loader: UrlLoader | FileLoader
    if source.jwks_url is not None:
        loader = UrlLoader(source.jwks_url)
    else:
        assert source.jwks_file is not None
        loader = FileLoader(source.jwks_file)
    return JwtAuth(source, JwksCache(source.name, loader))


def jwks_lifecycle(
    caches: list[JwksCache],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx``: start loading every key set (in the background: a request that
    comes first waits for that load), and close their clients at shutdown."""

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        loads = [asyncio.ensure_future(cache.start()) for cache in caches]
        try:
            yield
        finally:
            for load in loads:
                load.cancel()
            await asyncio.gather(*loads, return_exceptions=True)
            for cache in caches:
                await cache.close()

    return lifecycle
