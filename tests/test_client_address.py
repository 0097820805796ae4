"""``allow_from`` and ``[http] trusted_proxies``: the pure address rules, then the real
ingress answering 403 (nothing kept) to a client outside the list."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.client_address import allowed, client_address, parse_address
from gateway.settings import Source
from tests.broker import delete_everything, drain, message_count, unique_prefix
from tests.conftest import FIXTURES, Ingress, digest
from tests.source_support import ClientFactory, networks, start_ingress

PROXIES = networks("10.0.0.0/8", "fd00::/8")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.5", [], "203.0.113.5"),
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # untrusted peer: XFF ignored
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.1", ["1.1.1.1, 198.51.100.7"], "198.51.100.7"),  # left part: client-written
        ("10.0.0.1", ["198.51.100.7, 10.0.0.2"], "198.51.100.7"),  # two proxies
        ("10.0.0.1", ["1.1.1.1", "198.51.100.7"], "198.51.100.7"),  # repeated header
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all proxies: the left-most
        ("10.0.0.1", ["junk"], None),
        ("10.0.0.1", ["203.0.113.9, junk"], None),
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
        ("::ffff:10.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        (None, [], None),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], client: str | None) -> None:
    """The client is the right-most address not a trusted proxy; junk ends the walk."""
    got = client_address(peer, forwarded, PROXIES)
    assert (str(got) if got is not None else None) == client


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("unknown", None),
        ("", None),
    ],
)
def test_parse_address(text: str, address: str | None) -> None:
    """Forwarded entries may carry ports or brackets; anything else is no address."""
    got = parse_address(text)
    assert (str(got) if got is not None else None) == address


def test_allowed() -> None:
    """Inside a listed network or not; an IPv4 client never matches an IPv6 network."""
    nets = networks("203.0.113.0/24", "2001:db8::/32")
    assert allowed(ipaddress.ip_address("203.0.113.200"), nets)
    assert not allowed(ipaddress.ip_address("203.0.114.1"), nets)
    assert allowed(ipaddress.ip_address("2001:db8::9"), nets)
    assert not allowed(None, nets)


BODY = (FIXTURES / "camara-roaming-on.json").read_bytes()
CE = "application/cloudevents+json"
TOKEN = {"Authorization": "Bearer partner-token"}


async def _ingress(
    aiohttp_client: ClientFactory,
    amqp: AbstractRobustConnection,
    prefix: str,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> Ingress:
    tokens = (digest("partner-token"),)
    remote = networks("203.0.113.0/24")
    sources = (
        Source("local", "camara", tokens, allow_from=networks("127.0.0.1/32")),
        Source("remote", "camara", tokens, allow_from=remote),
        Source("open-remote", "camara", auth="none", allow_from=remote),
    )
    return await start_ingress(aiohttp_client, prefix, amqp, sources, trusted_proxies=trusted)


@pytest.fixture
async def prefix_() -> AsyncIterator[str]:
    name = unique_prefix()
    yield name
    await delete_everything(name, extra_queues=[f"{name}.capture"])


async def test_allow_list_without_a_trusted_proxy(
    aiohttp_client: ClientFactory, amqp: AbstractRobustConnection, prefix_: str
) -> None:
    """The TCP peer decides; a client's own X-Forwarded-For is not believed."""
    ingress = await _ingress(aiohttp_client, amqp, prefix_, ())
    assert (await ingress.post("local", BODY, CE, **TOKEN))[0] == 204
    status, body = await ingress.post("remote", BODY, CE, **TOKEN)
    assert status == 403
    assert orjson.loads(body)["status"] == 403
    spoofed = {**TOKEN, "X-Forwarded-For": "203.0.113.9"}
    assert (await ingress.post("remote", BODY, CE, **spoofed))[0] == 403
    status, _ = await ingress.post("open-remote", BODY, CE, **{"X-Forwarded-For": "203.0.113.9"})
    assert status == 403
    assert len(await drain(ingress.channel, ingress.capture, 1)) == 1
    assert await message_count(ingress.channel, ingress.rejected) == 0  # 403s are not kept


async def test_allow_list_behind_a_trusted_proxy(
    aiohttp_client: ClientFactory, amqp: AbstractRobustConnection, prefix_: str
) -> None:
    """Behind a trusted proxy the right-most untrusted X-Forwarded-For address decides."""
    ingress = await _ingress(aiohttp_client, amqp, prefix_, networks("127.0.0.0/8"))
    via_proxy = {**TOKEN, "X-Forwarded-For": "203.0.113.9"}
    assert (await ingress.post("remote", BODY, CE, **via_proxy))[0] == 204
    no_token = {"X-Forwarded-For": "203.0.113.9"}
    assert (await ingress.post("open-remote", BODY, CE, **no_token))[0] == 204
    outsider = {**TOKEN, "X-Forwarded-For": "203.0.113.9, 198.51.100.1"}
    assert (await ingress.post("remote", BODY, CE, **outsider))[0] == 403
    assert (await ingress.post("remote", BODY, CE, **TOKEN))[0] == 403  # the proxy itself
    # The allow-list comes before the credential: a right address still needs its token.
    assert (await ingress.post("remote", BODY, CE, **{"X-Forwarded-For": "203.0.113.9"}))[0] == 401
    assert len(await drain(ingress.channel, ingress.capture, 2)) == 2
    assert await message_count(ingress.channel, ingress.rejected) == 0
