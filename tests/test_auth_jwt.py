"""``auth = "jwt"``: tokens checked against a JWKS served by a local HTTP server (or a file),
through the real ingress and broker; and the JWKS cache's refetch rules on their own."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth import Outcome
from gateway.auth_jwt import JwksCache, JwksUnavailable, JwtAuth, UrlLoader, parse_jwks
from gateway.settings import Source
from tests.broker import delete_everything, drain, message_count, unique_prefix
from tests.conftest import FIXTURES, Ingress
from tests.source_support import ClientFactory, start_ingress

ISSUER = "https://auth.example.com"
AUDIENCE = "https://gateway.example.com/callbacks/camara"
CE = "application/cloudevents+json"
BODY = (FIXTURES / "camara-roaming-on.json").read_bytes()
ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Key:
    """A signing key and its public JWK."""

    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        algorithm = jwt.get_algorithm_by_name(self.alg)
        data: dict[str, Any] = json.loads(algorithm.to_jwk(public))
        return {**data, "kid": self.kid, "use": "sig"}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers={"kid": self.kid})


def rsa_key(kid: str, alg: str = "RS256") -> Key:
    return Key(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> Key:
    return Key(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed_key(kid: str) -> Key:
    return Key(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}.{b64(signature)}"


@dataclass
class Jwks:
    """A JWKS endpoint whose keys the test can change; counts its requests."""

    keys: list[Key]
    hits: int = 0
    delay_s: float = 0.0
    extra: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, _request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # a slow endpoint, so requests overlap
        return web.json_response({"keys": [k.jwk for k in self.keys] + self.extra})


RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")
PS = rsa_key("ps-1", "PS256")
ED = ed_key("ed-1")


@pytest.fixture
async def jwks(aiohttp_server: ServerFactory) -> tuple[Jwks, str]:
    """The JWKS endpoint, serving RSA, EC, PS256 and EdDSA keys."""
    state = Jwks([RSA, EC, PS, ED])
    app = web.Application()
    app.router.add_get("/jwks.json", state.handle)
    server = await aiohttp_server(app)
    return state, str(server.make_url("/jwks.json"))


def jwt_source(**overrides: Any) -> Source:
    return Source("camara", "camara", auth="jwt", issuer=ISSUER, audience=(AUDIENCE,), **overrides)


@pytest.fixture
async def prefix_() -> AsyncIterator[str]:
    name = unique_prefix()
    yield name
    await delete_everything(name, extra_queues=[f"{name}.capture"])


@pytest.fixture
async def ingress_jwt(
    aiohttp_client: ClientFactory,
    amqp: AbstractRobustConnection,
    prefix_: str,
    jwks: tuple[Jwks, str],
) -> Ingress:
    """The ingress with one jwt source whose JWKS comes from the local endpoint."""
    return await start_ingress(aiohttp_client, prefix_, amqp, (jwt_source(jwks_url=jwks[1]),))


async def post(ingress: Ingress, token: str) -> tuple[int, bytes]:
    return await ingress.post("camara", BODY, CE, Authorization=f"Bearer {token}")


@pytest.mark.parametrize("key", [RSA, EC, PS, ED], ids=["RS256", "ES256", "PS256", "EdDSA"])
async def test_valid_tokens_are_accepted(ingress_jwt: Ingress, key: Key) -> None:
    """RS256, ES256, PS256 and EdDSA tokens from the JWKS open the door."""
    status, _ = await post(ingress_jwt, key.token())
    assert status == 204
    assert len(await drain(ingress_jwt.channel, ingress_jwt.capture, 1)) == 1


@functools.cache
def _refused_tokens() -> dict[str, str]:
    now = int(time.time())
    public_pem = RSA.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    signing_input = unsigned({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, claims)[:-1]
    confused = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    stranger = rsa_key("rsa-1")  # same kid, key not in the JWKS
    return {
        "wrong issuer": RSA.token(iss="https://evil.example.com"),
        "wrong audience": RSA.token(aud="https://elsewhere.example.com"),
        "expired beyond leeway": RSA.token(exp=now - 120, iat=now - 600),
        "not yet valid": RSA.token(nbf=now + 600),
        "no exp": RSA.token(exp=None),
        "no iss": RSA.token(iss=None),
        "alg none": unsigned({"alg": "none", "kid": "rsa-1"}, claims),
        "alg none, no kid": unsigned({"alg": "none"}, claims),
        "HS256 with the public key": signing_input + b64(confused),
        "HS256 with the public key, no kid": unsigned({"alg": "HS256"}, claims, confused),
        "RS384 not allowed": jwt.encode(claims, RSA.private, "RS384", headers={"kid": "rsa-1"}),
        "signed by another key": stranger.token(),
        "ES256 header on an RSA kid": unsigned({"alg": "ES256", "kid": "rsa-1"}, claims, b"x"),
        "garbage": "not.a.jwt",
    }


@pytest.mark.parametrize("case", list(_refused_tokens()))
async def test_bad_tokens_are_refused(ingress_jwt: Ingress, case: str) -> None:
    """Wrong iss/aud, expired, alg none, the HS256-with-public-key confusion, ...: 401."""
    status, body = await post(ingress_jwt, _refused_tokens()[case])
    assert status == 401
    assert orjson.loads(body)["detail"] == "valid credentials for this source are required"
    assert await message_count(ingress_jwt.channel, ingress_jwt.capture) == 0
    assert await message_count(ingress_jwt.channel, ingress_jwt.rejected) == 0


async def test_expiry_within_leeway_is_accepted(ingress_jwt: Ingress) -> None:
    """A token that expired less than leeway_s (60) ago still passes."""
    now = int(time.time())
    status, _ = await post(ingress_jwt, RSA.token(exp=now - 10, iat=now - 300))
    assert status == 204


async def test_new_kid_is_picked_up_once_the_jwks_changes(
    ingress_jwt: Ingress, jwks: tuple[Jwks, str]
) -> None:
    """A token with an unknown kid refetches the JWKS: a rotated-in key works at once; a
    second unknown kid within the minute does not fetch again (401)."""
    state, _ = jwks
    assert (await post(ingress_jwt, RSA.token()))[0] == 204
    assert state.hits == 1  # the start-up load
    rotated = rsa_key("rsa-2")
    state.keys.append(rotated)
    assert (await post(ingress_jwt, rotated.token()))[0] == 204
    assert state.hits == 2
    late = ec_key("ec-2")
    state.keys.append(late)
    assert (await post(ingress_jwt, late.token()))[0] == 401
    assert state.hits == 2


async def test_concurrent_requests_share_one_refetch(
    ingress_jwt: Ingress, jwks: tuple[Jwks, str]
) -> None:
    """Twenty requests with the same new kid cause one JWKS fetch, and all pass."""
    state, _ = jwks
    assert (await post(ingress_jwt, RSA.token()))[0] == 204
    rotated = ec_key("ec-rotated")
    state.keys.append(rotated)
    state.delay_s = 0.2
    token = rotated.token()
    statuses = await asyncio.gather(*(post(ingress_jwt, token) for _ in range(20)))
    assert [s for s, _ in statuses] == [204] * 20
    assert state.hits == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_jwks_is_503_not_401(
    aiohttp_client: ClientFactory, amqp: AbstractRobustConnection, prefix_: str
) -> None:
    """While the JWKS cannot be fetched a token cannot be checked: 503 + Retry-After."""
    url = f"http://127.0.0.1:{_closed_port()}/jwks.json"
    ingress = await start_ingress(aiohttp_client, prefix_, amqp, (jwt_source(jwks_url=url),))
    for _ in range(2):  # the first refetches, the second is within the minute
        status, body = await post(ingress, RSA.token())
        assert status == 503
        assert orjson.loads(body)["status"] == 503
    response = await ingress.client.post(
        "/callbacks/camara",
        data=BODY,
        headers={"Content-Type": CE, "Authorization": f"Bearer {RSA.token()}"},
    )
    assert response.status == 503
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert await message_count(ingress.channel, ingress.capture) == 0


async def test_jwks_file_is_read_and_reread_for_a_new_kid(
    aiohttp_client: ClientFactory,
    amqp: AbstractRobustConnection,
    prefix_: str,
    tmp_path: Path,
) -> None:
    """jwks_file works like jwks_url: read at start, read again for an unknown kid."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [RSA.jwk]}))
    ingress = await start_ingress(aiohttp_client, prefix_, amqp, (jwt_source(jwks_file=str(path)),))
    assert (await post(ingress, RSA.token()))[0] == 204
    assert (await post(ingress, EC.token()))[0] == 401  # not in the file (refetch used)
    path.write_text(json.dumps({"keys": [RSA.jwk, ED.jwk]}))
    assert (await post(ingress, ED.token()))[0] == 401  # within the minute: not re-read


def test_parse_jwks_skips_hmac_and_encryption_keys() -> None:
    """oct (HMAC) keys, enc keys and unknown algorithms are never loaded."""
    doc = {
        "keys": [
            {"kty": "oct", "k": b64(b"secret"), "kid": "h"},
            {**RSA.jwk, "kid": "enc", "use": "enc"},
            {**RSA.jwk, "kid": "rs512", "alg": "RS512"},
            RSA.jwk,
            {"kty": "RSA", "kid": "broken"},
        ]
    }
    assert [key.kid for key in parse_jwks(orjson.dumps(doc))] == ["rsa-1"]
    with pytest.raises(ValueError, match="no usable"):
        parse_jwks(orjson.dumps({"keys": [{"kty": "oct", "k": b64(b"secret")}]}))
    with pytest.raises(ValueError, match="not a JWKS"):
        parse_jwks(b"[]")


class FakeLoader:
    """A loader whose documents (or failures) the test sets; counts its calls."""

    def __init__(self) -> None:
        self.document: bytes | None = orjson.dumps({"keys": [RSA.jwk]})
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.document is None:
            raise OSError("connection refused")
        return self.document


async def test_cache_refetches_at_most_once_a_minute() -> None:
    """Unknown kids refetch at most once per interval; the start-up load is not counted."""
    loader, now = FakeLoader(), [1000.0]
    cache = JwksCache("s", loader, clock=lambda: now[0])
    await cache.start()
    assert len(await cache.keys_for("rsa-1", "RS256")) == 1
    assert await cache.keys_for("ec-1", "ES256") == []  # refetch allowed at once
    assert loader.calls == 2
    assert await cache.keys_for("ec-1", "ES256") == []
    assert loader.calls == 2
    now[0] += 60
    loader.document = orjson.dumps({"keys": [RSA.jwk, EC.jwk]})
    assert len(await cache.keys_for("ec-1", "ES256")) == 1
    assert loader.calls == 3
    assert await cache.keys_for("rsa-1", "ES256") == []  # a key only for its own algorithm


async def test_cache_unavailable_until_a_load_succeeds() -> None:
    """No key set loaded: JwksUnavailable with the wait until the next allowed fetch."""
    loader, now = FakeLoader(), [1000.0]
    loader.document = None
    cache = JwksCache("s", loader, clock=lambda: now[0])
    await cache.start()
    with pytest.raises(JwksUnavailable):
        await cache.keys_for("rsa-1", "RS256")
    now[0] += 20
    with pytest.raises(JwksUnavailable) as raised:
        await cache.keys_for("rsa-1", "RS256")
    assert raised.value.retry_after_s == pytest.approx(40)
    assert loader.calls == 2
    now[0] += 40
    loader.document = orjson.dumps({"keys": [RSA.jwk]})
    assert len(await cache.keys_for("rsa-1", "RS256")) == 1


async def test_a_failed_refetch_keeps_the_keys_it_had() -> None:
    """Known kids keep working while the endpoint is down; an unknown kid is then 503."""
    loader = FakeLoader()
    cache = JwksCache("s", loader)
    await cache.start()
    loader.document = None
    with pytest.raises(JwksUnavailable):
        await cache.keys_for("new", "RS256")
    assert len(await cache.keys_for("rsa-1", "RS256")) == 1


async def test_verified_tokens_are_remembered_until_exp_and_a_new_key_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token is verified once and then remembered until exp + leeway, or until the next
    key set loads (a removed key must not keep opening the door)."""
    verifications = []
    decode = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        verifications.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr("gateway.auth_jwt.jwt.decode", counting)
    loader, now = FakeLoader(), [time.time()]
    cache = JwksCache("s", loader)
    auth = JwtAuth(jwt_source(jwks_file="unused"), cache, clock=lambda: now[0])
    await cache.start()
    token = RSA.token(exp=int(now[0]) + 100)
    headers = {"Authorization": f"Bearer {token}"}
    moment = datetime.now(UTC)
    for _ in range(3):
        assert (await auth.check(headers, None, None, moment)).outcome is Outcome.ACCEPTED
    assert len(verifications) == 1
    now[0] += 100 + 60 + 1  # past exp + leeway: verified again (and PyJWT decides)
    await auth.check(headers, None, None, moment)
    assert len(verifications) == 2
    loader.document = orjson.dumps({"keys": [EC.jwk]})  # the RSA key is withdrawn
    assert await cache.keys_for("unknown-kid", "RS256") == []  # triggers the reload
    assert (await auth.check(headers, None, None, moment)).outcome is Outcome.REFUSED


async def test_close_cancels_a_load_in_flight() -> None:
    """Shutting down while the JWKS endpoint hangs leaves no load running."""
    started, hang = asyncio.Event(), asyncio.Event()

    async def hanging() -> bytes:
        started.set()
        await hang.wait()
        return b""

    cache = JwksCache("s", hanging)
    start = asyncio.ensure_future(cache.start())
    await started.wait()
    await cache.close()
    start.cancel()
    await asyncio.gather(start, return_exceptions=True)
    assert not cache.loaded
    assert all(task.done() or task is asyncio.current_task() for task in asyncio.all_tasks())


async def test_a_large_jwks_is_read_whole_and_an_oversized_one_refused(
    aiohttp_server: ServerFactory,
) -> None:
    """A JWKS of many keys arrives in several chunks and loads; over 1 MiB is refused."""
    many = [{**RSA.jwk, "kid": f"k-{n}"} for n in range(200)]  # ~90 KB
    documents = {"/ok": orjson.dumps({"keys": many}), "/huge": b" " * (2 << 20)}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=documents[request.path], content_type="application/json")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    server = await aiohttp_server(app)
    loader = UrlLoader(str(server.make_url("/ok")))
    try:
        assert len(parse_jwks(await loader())) == 200
    finally:
        await loader.close()
    huge = UrlLoader(str(server.make_url("/huge")))
    try:
        with pytest.raises(ValueError, match="larger than"):
            await huge()
    finally:
        await huge.close()
