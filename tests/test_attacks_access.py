"""Second-reader findings on the door checks: IPv4-mapped networks in ``allow_from`` and
``trusted_proxies``, credential headers that a rejected record must not keep, and ``nan`` in
a source's settings."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import orjson
import pytest

from gateway.rejected import rejected_record
from gateway.settings import ConfigError, Source, load_settings
from gateway.source_access import SourceAccess
from tests.processes import EVENT_GATEWAY, clean_env


def networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


def open_source(*allow_from: str) -> Source:
    return Source(name="open", adapter="camara", auth="none", allow_from=networks(*allow_from))


@pytest.mark.parametrize("peer", ["192.0.2.7", "::ffff:192.0.2.7"])
def test_an_ipv4_mapped_allow_from_admits_its_ipv4_clients(peer: str) -> None:
    """``allow_from = ["::ffff:192.0.2.0/120"]`` (how a dual-stack listener shows IPv4 peers)
    admits 192.0.2.7 whichever form the peer address takes, and nothing outside it."""
    access = SourceAccess(open_source("::ffff:192.0.2.0/120"), ())
    assert access.admits(peer, ())
    assert not access.admits("192.0.3.7", ())
    assert not access.admits("::ffff:192.0.3.7", ())


def test_an_ipv4_mapped_trusted_proxy_is_believed() -> None:
    """A proxy listed as ``::ffff:10.0.0.0/104`` is trusted when it connects over IPv4, so
    the client is the address it forwarded; an untrusted peer's header is still ignored."""
    access = SourceAccess(open_source("198.51.100.0/24"), networks("::ffff:10.0.0.0/104"))
    assert access.admits("10.1.2.3", ["198.51.100.9"])
    assert access.admits("::ffff:10.1.2.3", ["203.0.113.1, 198.51.100.9"])
    assert not access.admits("10.1.2.3", ["198.51.100.9, 203.0.113.1"])
    assert not access.admits("203.0.113.1", ["198.51.100.9"])


def test_ipv6_networks_are_left_as_they_are() -> None:
    """A plain IPv6 ``allow_from`` still admits its own clients and not IPv4 ones."""
    access = SourceAccess(open_source("2001:db8::/32"), ())
    assert access.admits("2001:db8::1", ())
    assert not access.admits("192.0.2.7", ())


@pytest.mark.parametrize(
    "name",
    ["X-Authorization", "X-Forwarded-Authorization", "X_API_KEY", "X-Goog-Apikey", "Cookie2"],
)
def test_a_rejected_record_drops_other_credential_headers(name: str) -> None:
    """Credential-like headers beyond the listed ones are not kept on ``.rejected``."""
    record = orjson.loads(
        rejected_record(
            source="s",
            status=400,
            reason="r",
            received="2026-01-01T00:00:00Z",
            headers=[(name, "s3cr3t-value"), ("ce-id", "e1"), ("Content-Type", "x/y")],
            body=b"{}",
        )
    )
    assert record["headers"] == {"ce-id": "e1", "Content-Type": "x/y"}
    assert b"s3cr3t-value" not in orjson.dumps(record)


@pytest.mark.parametrize(
    "key", ["max_future_skew_s", "leeway_s", "signature_tolerance_s", "rate_limit"]
)
def test_a_nan_in_a_source_setting_is_a_config_error(tmp_path: Path, key: str) -> None:
    """TOML's ``nan`` passed every range check: ``max_future_skew_s = nan`` made every
    callback of the source a 500, ``leeway_s = nan`` let expired JWTs through. It is refused
    at start (one line, exit 2)."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[amqp]\nurl = "amqp://guest:guest@127.0.0.1:5672/"\nexchange = "x"\n'
        f'[[sources]]\nname = "s"\nadapter = "cloudevents"\n{key} = nan\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=key):
        load_settings(config, env={})
    done = subprocess.run(
        [EVENT_GATEWAY, "serve", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )
    assert done.returncode == 2
    assert len(done.stderr.decode().strip().splitlines()) == 1
    assert key in done.stderr.decode()
