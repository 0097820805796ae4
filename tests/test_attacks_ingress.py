"""Attacks on a real ``event-gateway serve`` (real broker) that once got a 500, an unhandled
exception in the log, a stall or an OOM: raw bytes in a JWT, a JWT header whose ``alg`` is not
a string, a body whose ``Content-Encoding`` cannot be decoded, ``Expect: 100-continue``, huge
request heads; and no secret, phone number or traceback in the process's output after them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.broker import AMQP_URL, delete_everything, unique_prefix
from tests.hostile import Serve
from tests.tcp_proxy import free_port

pytestmark = pytest.mark.slow

TOKEN = "attack-bearer-token-5b1e0c9d"
WHSEC_KEY = b"attack-standard-webhooks-key-0001"
PHONE = "+447700900123"
ISSUER = "https://auth.example.com"
CE = "application/cloudevents+json"
EVENT = json.dumps(
    {"specversion": "1.0", "id": "a1", "source": "/attack", "type": "com.example.attack"}
).encode()


@dataclass
class Target:
    serve: Serve
    private: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One ingress with a bearer, a jwt (JWKS file) and a standard-webhooks source."""
    tmp = tmp_path_factory.mktemp("attacks")
    prefix, port = unique_prefix(), free_port()
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    digest = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()
    whsec = "whsec_" + base64.b64encode(WHSEC_KEY).decode()
    config = tmp / "gateway.toml"
    config.write_text(
        f"""log_format = "json"
[http]
host = "127.0.0.1"
port = {port}
[amqp]
url = "{AMQP_URL}"
exchange = "{prefix}"
queue_type = "classic"
[[sources]]
name = "bear"
adapter = "cloudevents"
tokens = ["{digest}"]
[[sources]]
name = "jw"
adapter = "cloudevents"
auth = "jwt"
jwks_file = "{tmp / "jwks.json"}"
issuer = "{ISSUER}"
audience = ["gw"]
[[sources]]
name = "sw"
adapter = "cloudevents"
auth = "standard-webhooks"
secrets = ["{whsec}"]
""",
        encoding="utf-8",
    )
    serve = Serve.start(config, port, tmp)
    try:
        asyncio.run(serve.wait_ready())
        yield Target(serve, private)
    finally:
        serve.stop()
        asyncio.run(delete_everything(prefix))


def request(
    path: str, headers: list[tuple[str, bytes | str]], body: bytes, *, close: bool = True
) -> bytes:
    """The bytes of one HTTP/1.1 POST (header values may be raw bytes)."""
    head = f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Length: {len(body)}\r\n".encode()
    for name, value in headers:
        head += name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        head += b"\r\n"
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send ``raw`` and read until the server closes the connection (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    return received


def statuses(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def post_jwt(target: Target, authorization: bytes) -> bytes:
    headers: list[tuple[str, bytes | str]] = [
        ("Authorization", authorization),
        ("Content-Type", CE),
    ]
    return exchange(target.serve.port, request("/callbacks/jw", headers, EVENT))


def test_a_jwt_holding_bytes_that_are_not_utf8_is_401(target: Target) -> None:
    """A JWT with a 0xff byte (aiohttp keeps it as a lone surrogate) is a 401, not a 500."""
    answer = post_jwt(target, b"Bearer \xff\xfe.e30.c2ln")
    assert statuses(answer) == [401]
    assert b"WWW-Authenticate: Bearer" in answer


@pytest.mark.parametrize("alg", [["RS256"], {"RS256": 1}, 256, None, True])
def test_a_jwt_whose_alg_is_not_a_string_is_401(target: Target, alg: object) -> None:
    """A JWT header whose ``alg`` is a list, object, number, null or boolean is a 401."""
    header = b64url(json.dumps({"alg": alg, "kid": "k1"}).encode())
    payload = b64url(json.dumps({"iss": ISSUER, "aud": "gw", "exp": 2**31}).encode())
    assert statuses(post_jwt(target, f"Bearer {header}.{payload}.c2ln".encode())) == [401]


def test_a_valid_jwt_is_still_accepted(target: Target) -> None:
    """The guards above leave a valid RS256 token accepted (204)."""
    token = jwt.encode(
        {"iss": ISSUER, "aud": "gw", "exp": int(time.time()) + 300},
        target.private,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert statuses(post_jwt(target, f"Bearer {token}".encode())) == [204]


def _unhandled(serve: Serve) -> list[str]:
    lines = serve.stdout.read_text(errors="replace").splitlines()
    return [line for line in lines if "nhandled" in line or "Traceback" in line]


def _wait_for_logs(serve: Serve, seconds: float) -> None:
    """Give the ingress time to log what it would log about the request just answered."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not _unhandled(serve):
        time.sleep(0.05)  # poll the log file for a line that must not come


@pytest.mark.parametrize(
    ("path", "encoding", "auth"),
    [
        ("/callbacks/bear", "gzip", [("Authorization", f"Bearer {TOKEN}")]),
        ("/callbacks/bear", "deflate", [("Authorization", f"Bearer {TOKEN}")]),
        # standard-webhooks reads the body before the signature: no credential needed
        (
            "/callbacks/sw",
            "gzip",
            [("webhook-id", "m"), ("webhook-timestamp", "1"), ("webhook-signature", "v1,AAAA")],
        ),
    ],
)
def test_a_body_whose_content_encoding_cannot_be_decoded_is_400_and_closes(
    target: Target, path: str, encoding: str, auth: list[tuple[str, bytes | str]]
) -> None:
    """A body that fails to decompress is one 400, the connection closes (a request pipelined
    behind it is not read) and nothing is logged as an unhandled exception."""
    headers = [*auth, ("Content-Type", CE), ("Content-Encoding", encoding)]
    broken = request(path, headers, b"\x1f\x8b" + b"\x00" * 40, close=False)
    behind = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    answer = exchange(target.serve.port, broken + behind)
    assert statuses(answer) == [400]
    assert b"the body did not arrive whole" in answer
    _wait_for_logs(target.serve, 1.0)
    assert _unhandled(target.serve) == []


def test_expect_100_continue_is_answered_on_a_source_path(target: Target) -> None:
    """A sender that waits for ``100 Continue`` before its body (curl, .NET, Java clients) gets
    it at once on ``/callbacks/<name>`` too, and then its 204."""
    head = (
        "POST /callbacks/bear HTTP/1.1\r\nHost: gateway\r\nExpect: 100-continue\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: {CE}\r\n"
        f"Content-Length: {len(EVENT)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", target.serve.port), timeout=5) as sock:
        sock.sendall(head)
        sock.settimeout(0.9)  # below curl's own 1 s wait: a 100 must come before it
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.settimeout(10)
        sock.sendall(EVENT)
        answer = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while chunk := sock.recv(65536):
            answer += chunk
    assert statuses(answer) == [204]


def _hwm(serve: Serve) -> int:
    return serve.vm("VmHWM")


def test_oversized_request_heads_are_cut_off_before_they_cost_memory(target: Target) -> None:
    """100 unauthenticated connections each sending a 800 KB request head (100 headers of
    8,000 bytes, within aiohttp's own limits) are closed well before ``header_timeout_s`` and
    add little to peak RSS (they took the ingress from 63 to 956 MB); a head over 64 KiB is
    answered 431, and a binary-mode event with 40 KB of attributes still gets its 204."""
    serve = target.serve
    before = _hwm(serve)
    line = b"X-Filler: " + b"v" * 8000 + b"\r\n"
    head = b"POST /callbacks/bear HTTP/1.1\r\nHost: gateway\r\n" + line * 100
    socks = [socket.create_connection(("127.0.0.1", serve.port), timeout=5) for _ in range(100)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, ConnectionError):
                sock.send(head)
        open_socks = set(socks)
        while open_socks and time.monotonic() - started < 6:  # header_timeout_s is 10
            for sock in list(open_socks):
                try:
                    if sock.recv(65536) == b"":
                        open_socks.discard(sock)
                except BlockingIOError:
                    pass
                except ConnectionError:
                    open_socks.discard(sock)
            time.sleep(0.02)  # poll the sockets until the server closed them all
        assert not open_socks, f"{len(open_socks)} connections still open"
    finally:
        for sock in socks:
            sock.close()
    assert _hwm(serve) - before < 64 * 2**20
    with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
        sock.sendall(b"POST /callbacks/bear HTTP/1.1\r\nHost: gateway\r\n" + line * 9)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert statuses(answer) == [431]
    assert b"application/problem+json" in answer
    attributes: list[tuple[str, bytes | str]] = [(f"ce-x{i}", "v" * 4000) for i in range(10)]
    binary = [
        ("Authorization", f"Bearer {TOKEN}"),
        ("ce-specversion", "1.0"),
        ("ce-id", "big-head"),
        ("ce-source", "/attack"),
        ("ce-type", "com.example.attack"),
        ("Content-Type", "application/json"),
        *attributes,
    ]
    assert statuses(exchange(serve.port, request("/callbacks/bear", binary, b"{}"))) == [204]


def test_no_secret_phone_or_traceback_reaches_the_output(target: Target) -> None:
    """After hostile requests carrying the token, a JWT, the whsec key and a phone number,
    the process's stdout and stderr hold none of them, no traceback, and every answer is a
    4xx/204 with the bare ``Server: event-gateway`` banner."""
    token = jwt.encode(
        {"iss": ISSUER, "aud": "wrong", "exp": int(time.time()) + 300},
        target.private,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    phone_event = json.dumps(
        {"specversion": "1.0", "id": PHONE, "source": PHONE, "type": "com.example.attack"}
    ).encode()
    attacks: list[tuple[str, list[tuple[str, bytes | str]], bytes]] = [
        ("/callbacks/bear", [("Authorization", f"Bearer {TOKEN}x")], EVENT),
        (
            "/callbacks/bear",
            [("Authorization", f"Bearer {TOKEN}"), ("Content-Type", CE)],
            phone_event,
        ),
        ("/callbacks/bear?access_token=" + TOKEN + "x", [("Content-Type", CE)], EVENT),
        ("/callbacks/jw", [("Authorization", f"Bearer {token}"), ("Content-Type", CE)], EVENT),
        ("/callbacks/jw", [("Authorization", b"Bearer " + token.encode() + b"\xff")], EVENT),
        (
            "/callbacks/sw",
            [("webhook-id", PHONE), ("webhook-timestamp", "1"), ("webhook-signature", "v1,AAAA")],
            EVENT,
        ),
        ("/callbacks/bear", [("Authorization", f"Bearer {TOKEN}"), ("X-Broken", b"\x00")], EVENT),
    ]
    answers = [exchange(target.serve.port, request(path, h, body)) for path, h, body in attacks]
    for answer in answers:
        (status,) = statuses(answer)
        assert status in (204, 400, 401), answer[:200]
        banner = [line for line in answer.split(b"\r\n") if line.lower().startswith(b"server:")]
        assert banner == [b"Server: event-gateway"]
    target.serve.stop()
    output = target.serve.output().decode(errors="replace")
    for secret in (TOKEN, token, base64.b64encode(WHSEC_KEY).decode(), PHONE, PHONE[1:]):
        assert secret not in output
    assert "Traceback" not in output
    assert target.serve.stderr.read_bytes() == b""
