"""Standard Webhooks signatures: the specification's own test vectors, tampering, stale
timestamps, wrong secrets and rotation; then through the real ingress and broker.

The vectors (secret, message id, timestamp, payload and expected signature) are those of the
Standard Webhooks reference libraries' tests:
https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/python/tests/test_webhooks.py
(``test_sign_function``, ``test_invalid_signature_raises_error``,
``test_multi_sig_payload_is_valid``) and the same values in
https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/go/webhook_test.go
(``TestWebhookSign``, ``TestWebhook``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection
from multidict import CIMultiDict

from gateway.settings import Source
from gateway.standard_webhooks import sign, verify
from tests.broker import delete_everything, drain, message_count, unique_prefix
from tests.conftest import FIXTURES, Ingress
from tests.source_support import ClientFactory, start_ingress

# The specification's vectors.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The libraries' "invalid signature" vector: the expected one with its last byte changed.
INVALID = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
DECOY = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
DECOY_V2 = "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
OTHER_KEY = b"another secret key of 32 bytes.."


def headers(
    signature: str, msg_id: str = MSG_ID, ts: int = TIMESTAMP, prefix: str = "webhook-"
) -> CIMultiDict[str]:
    return CIMultiDict(
        {f"{prefix}id": msg_id, f"{prefix}timestamp": str(ts), f"{prefix}signature": signature}
    )


def ok(
    hdrs: CIMultiDict[str],
    body: bytes = PAYLOAD,
    keys: tuple[bytes, ...] = (KEY,),
    now: float = TIMESTAMP,
) -> bool:
    return verify(hdrs, body, keys, now=now, tolerance_s=300)


def test_sign_matches_the_specification_vector() -> None:
    """sign() gives exactly the signature the specification's libraries expect."""
    assert sign(KEY, MSG_ID, TIMESTAMP, PAYLOAD) == EXPECTED


def test_the_specification_vector_verifies() -> None:
    """The vector verifies, with webhook-* and with svix-* header names."""
    assert ok(headers(EXPECTED))
    assert ok(headers(EXPECTED, prefix="svix-"))
    assert ok(CIMultiDict({k.upper(): v for k, v in headers(EXPECTED).items()}))


def test_the_invalid_vector_and_multi_signature_vector() -> None:
    """The libraries' invalid signature fails; their multi-signature header passes."""
    assert not ok(headers(INVALID))
    assert ok(headers(" ".join([DECOY, DECOY_V2, EXPECTED, DECOY])))
    assert not ok(headers(" ".join([DECOY, DECOY_V2, DECOY])))


@pytest.mark.parametrize("index", [0, 5, len(PAYLOAD) - 1])
def test_one_byte_body_change_fails(index: int) -> None:
    """Changing any single byte of the body breaks the signature."""
    body = bytearray(PAYLOAD)
    body[index] ^= 0x01
    assert not ok(headers(EXPECTED), bytes(body))


def test_id_and_timestamp_are_signed() -> None:
    """Another message id, or the signature moved to another timestamp, fails."""
    assert not ok(headers(EXPECTED, msg_id="msg_other"))
    assert not ok(headers(EXPECTED, ts=TIMESTAMP + 1), now=TIMESTAMP + 1)


@pytest.mark.parametrize(
    ("offset", "valid"), [(-301, False), (-300, True), (0, True), (300, True), (301, False)]
)
def test_timestamp_tolerance(offset: int, valid: bool) -> None:
    """A timestamp more than the tolerance away from now, either way, fails."""
    assert ok(headers(EXPECTED), now=TIMESTAMP - offset) is valid


def test_wrong_secret_fails() -> None:
    """A signature made with another secret fails."""
    assert not ok(headers(EXPECTED), keys=(OTHER_KEY,))
    assert not ok(headers(sign(OTHER_KEY, MSG_ID, TIMESTAMP, PAYLOAD)))


def test_rotation_two_secrets_several_signatures() -> None:
    """With two configured secrets either signs; a header may carry both signatures."""
    old, new = sign(KEY, MSG_ID, TIMESTAMP, PAYLOAD), sign(OTHER_KEY, MSG_ID, TIMESTAMP, PAYLOAD)
    both = (KEY, OTHER_KEY)
    assert ok(headers(old), keys=both)
    assert ok(headers(new), keys=both)
    assert ok(headers(f"{new} {old}"), keys=both)
    assert ok(headers(f"{new} {old}"), keys=(OTHER_KEY,))
    assert not ok(headers(f"{new} {old}"), keys=(b"a third key",))


@pytest.mark.parametrize(
    "hdrs",
    [
        CIMultiDict(),
        CIMultiDict({"webhook-id": MSG_ID, "webhook-signature": EXPECTED}),
        CIMultiDict({"webhook-timestamp": str(TIMESTAMP), "webhook-signature": EXPECTED}),
        CIMultiDict({"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP)}),
        headers(EXPECTED.replace("v1,", "v2,")),
        headers(EXPECTED.replace("v1,", "")),
        headers("v1,not base64!"),
        headers("v1,"),
        headers(EXPECTED, ts=-TIMESTAMP),
    ],
)
def test_malformed_headers_fail(hdrs: CIMultiDict[str]) -> None:
    """Missing headers, other versions and malformed values fail without raising."""
    assert not ok(hdrs)


def test_non_numeric_timestamp_fails() -> None:
    """A timestamp that is not whole seconds fails."""
    for bad in ("hello", "1614265330.5", "١٦١٤٢٦٥٣٣٠", "9" * 40):
        hdrs = headers(EXPECTED)
        hdrs["webhook-timestamp"] = bad
        assert not ok(hdrs)


CE = "application/cloudevents+json"
EVENT = (FIXTURES / "camara-roaming-on.json").read_bytes()
ROTATED_KEY = b"rotated key, also at least 24 bytes"


@pytest.fixture
async def signed(
    aiohttp_client: ClientFactory, amqp: AbstractRobustConnection
) -> AsyncIterator[Ingress]:
    """An ingress with a standard-webhooks source holding two secrets (rotation)."""
    prefix = unique_prefix()
    source = Source(
        "saas",
        "cloudevents",
        auth="standard-webhooks",
        secrets=(KEY, ROTATED_KEY),
        types=("org.camaraproject.#",),
    )
    yield await start_ingress(aiohttp_client, prefix, amqp, (source,))
    await delete_everything(prefix, extra_queues=[f"{prefix}.capture"])


def signed_headers(body: bytes, *signing_keys: bytes, ts: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    signature = " ".join(sign(k, "msg_1", stamp, body) for k in signing_keys)
    return {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": signature}


async def test_signed_request_is_accepted(signed: Ingress) -> None:
    """A fresh signature by either secret (or both in one header) is accepted."""
    for keys in ((KEY,), (ROTATED_KEY,), (ROTATED_KEY, KEY)):
        status, _ = await signed.post("saas", EVENT, CE, **signed_headers(EVENT, *keys))
        assert status == 204
    assert len(await drain(signed.channel, signed.capture, 3)) == 3


@pytest.mark.parametrize("case", ["one byte changed", "stale", "wrong secret", "unsigned"])
async def test_bad_signatures_are_401_and_nothing_is_kept(signed: Ingress, case: str) -> None:
    """Tampered body, stale timestamp, wrong secret, no signature: 401, nothing published or
    kept, and the same answer each time."""
    body = EVENT
    hdrs = signed_headers(EVENT, KEY)
    if case == "one byte changed":
        body = EVENT.replace(b"123656", b"123657")
    elif case == "stale":
        hdrs = signed_headers(EVENT, KEY, ts=int(time.time()) - 301)
    elif case == "wrong secret":
        hdrs = signed_headers(EVENT, OTHER_KEY)
    else:
        hdrs = {}
    status, problem = await signed.post("saas", body, CE, **hdrs)
    assert status == 401
    assert orjson.loads(problem)["detail"] == "valid credentials for this source are required"
    assert await message_count(signed.channel, signed.capture) == 0
    assert await message_count(signed.channel, signed.rejected) == 0


async def test_signed_request_of_a_forbidden_type_is_403_and_kept_without_signature(
    signed: Ingress,
) -> None:
    """Authenticated but not allowed to send the type: 403, kept, signature header dropped."""
    body = orjson.dumps({**orjson.loads(EVENT), "type": "com.example.other"})
    status, _ = await signed.post("saas", body, CE, **signed_headers(body, KEY))
    assert status == 403
    [kept] = await drain(signed.channel, signed.rejected, 1)
    record = orjson.loads(kept.body)
    assert record["status"] == 403
    assert not any("signature" in name.lower() for name in record["headers"])
