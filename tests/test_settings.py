"""Config: TOML + env overrides, validated once, one clear error for anything wrong."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.settings import AmqpSettings, ConfigError, load_settings

DIGEST = "sha256:" + "ab" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_contract_example_loads(tmp_path: Path) -> None:
    """The contract's example config (with real digests) loads with every value kept."""
    path = write(
        tmp_path,
        f"""
[http]
host = "0.0.0.0"
port = 8080
max_body_bytes = 262144
[amqp]
url = "amqp://guest:guest@localhost:5672/"
exchange = "events"
queue_type = "quorum"
publish_timeout_s = 5.0
[state]
url = "sqlite:///./event-gateway.db"
[workers]
prefetch = 64
max_attempts = 5
retry_backoff_s = [1, 5, 30, 120]
[[sources]]
name = "camara"
adapter = "camara"
tokens = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
          {{ sha256 = "{"cd" * 32}", expires = "2026-12-31T00:00:00Z" }}]
[[sources]]
name = "notify-status"
adapter = "notify-delivery-status"
tokens = ["{DIGEST}"]
[[sources]]
name = "open"
adapter = "cloudevents"
auth = "none"
allow_from = ["203.0.113.0/24"]
""",
    )
    settings = load_settings(path, env={})
    assert settings.http.port == 8080
    assert settings.amqp.queue_type == "quorum"
    assert settings.workers.retry_backoff_s == (1.0, 5.0, 30.0, 120.0)
    camara = settings.source("camara")
    assert camara is not None
    assert len(camara.tokens) == 2
    assert camara.tokens[1].expires == datetime(2026, 12, 31, tzinfo=UTC)
    assert settings.source("open") is not None
    assert settings.source("open").auth == "none"  # type: ignore[union-attr]


def test_defaults_without_a_file_serve_three_sources_from_env() -> None:
    """No config file: the three default sources, tokens from GATEWAY_TOKENS_*."""
    settings = load_settings(
        None,
        env={
            "GATEWAY_TOKENS_CAMARA": f"{DIGEST}, sha256:{'01' * 32}",
            "GATEWAY_TOKENS_NOTIFY_STATUS": DIGEST,
            "GATEWAY_AMQP_URL": "amqp://u:p@rabbit:5672/vh",
            "GATEWAY_STATE_URL": "postgresql://gw@db/gw",
            "GATEWAY_HTTP_HOST": "127.0.0.1",
            "GATEWAY_HTTP_PORT": "9000",
            "GATEWAY_LOG_FORMAT": "console",
        },
    )
    assert [(s.name, s.adapter, len(s.tokens)) for s in settings.sources] == [
        ("camara", "camara", 2),
        ("notify-status", "notify-delivery-status", 1),
        ("notify-inbound", "notify-inbound-sms", 0),
    ]
    assert settings.amqp.url == "amqp://u:p@rabbit:5672/vh"
    assert settings.state.url == "postgresql://gw@db/gw"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9000)
    assert settings.log_format == "console"


def test_config_path_from_env(tmp_path: Path) -> None:
    """GATEWAY_CONFIG names the file when --config is not given."""
    path = write(tmp_path, "[http]\nport = 9999\n")
    assert load_settings(None, env={"GATEWAY_CONFIG": str(path)}).http.port == 9999


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    """Neither the AMQP password nor token digests appear in the settings' repr."""
    settings = load_settings(
        None, env={"GATEWAY_AMQP_URL": "amqp://u:hunter2@h/", "GATEWAY_TOKENS_CAMARA": DIGEST}
    )
    assert "hunter2" not in repr(settings)
    assert "abab" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[http\nport=1", "not valid TOML"),
        ("[http]\nport = 70000\n", "http.port"),
        ("[http]\nprot = 1\n", "unknown key 'prot'"),
        ('[http]\nfast_path = "no"\n', "http.fast_path must be true or false"),
        ('[amqp]\nqueue_type = "stream"\n', "amqp.queue_type"),
        ('[amqp]\nurl = "http://x"\n', "amqp.url"),
        ("[amqp]\npublish_timeout_s = 0\n", "publish_timeout_s"),
        ('[state]\nurl = "mysql://x"\n', "state.url"),
        ("[workers]\nretry_backoff_s = []\n", "retry_backoff_s"),
        ('[[sources]]\nname = "a"\nadapter = "kafka"\n', "adapter 'kafka' is unknown"),
        (
            '[[sources]]\nname = "a"\nadapter = "camara"\ntokens = ["sha256:xyz"]\n',
            "sources[0].tokens[0]",
        ),
        (
            '[[sources]]\nname = "a"\nadapter = "camara"\ntokens = ["plain-token"]\n',
            "sha256:<64 hex",
        ),
        (
            '[[sources]]\nname = "a"\nadapter = "camara"\n'
            f'tokens = [{{ sha256 = "{"ab" * 32}", expires = "soon" }}]\n',
            "expires",
        ),
        (
            '[[sources]]\nname = "a"\nadapter = "camara"\n'
            '[[sources]]\nname = "a"\nadapter = "camara"\n',
            "used twice",
        ),
        ('[[sources]]\nname = "a/b"\nadapter = "camara"\n', "sources[0].name"),
        ('[[sources]]\nname = "a"\nadapter = "camara"\nauth = "basic"\n', "auth"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    """Each malformed config raises ConfigError naming the file and the problem on one line."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_fast_path_is_on_unless_turned_off(tmp_path: Path) -> None:
    """``[http] fast_path`` defaults to true; ``false`` in the file turns it off."""
    assert load_settings(write(tmp_path, "[http]\nport = 8080\n"), env={}).http.fast_path
    off = load_settings(write(tmp_path, "[http]\nfast_path = false\n"), env={})
    assert off.http.fast_path is False


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_bad_env_override_is_a_config_error() -> None:
    """A malformed env override is reported like a config error."""
    with pytest.raises(ConfigError, match=r"http\.port"):
        load_settings(None, env={"GATEWAY_HTTP_PORT": "eighty"})
    with pytest.raises(ConfigError, match="GATEWAY_TOKENS_CAMARA"):
        load_settings(None, env={"GATEWAY_TOKENS_CAMARA": "sha256:short"})


def test_new_keys_of_limits_and_sources_load(tmp_path: Path) -> None:
    """§7-§10 keys: [http] limits, [amqp] url lists and stores, per-source auth and types."""
    path = write(
        tmp_path,
        """
[http]
max_events_per_request = 10
max_inflight_bytes = 1000
header_timeout_s = 2
trusted_proxies = ["10.0.0.0/8"]
[amqp]
url = ["amqp://a:5672/", "amqp://b:5672/"]
rejected_max_bytes = 1000
publisher = "standard"
[workers]
retry_jitter = 0.2
[[sources]]
name = "partner"
adapter = "cloudevents"
auth = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
types = ["com.example.#"]
allow_from = ["203.0.113.7"]
rate_limit = 200
[[sources]]
name = "jwt"
adapter = "camara"
auth = "jwt"
jwks_file = "/etc/jwks.json"
issuer = "https://auth.example"
audience = "https://gw.example"
[[sources]]
name = "notify"
adapter = "notify-inbound-sms"
tokens = []
""",
    )
    settings = load_settings(path, env={})
    assert settings.http.max_events_per_request == 10
    assert str(settings.http.trusted_proxies[0]) == "10.0.0.0/8"
    assert settings.amqp.urls == ("amqp://a:5672/", "amqp://b:5672/")
    assert settings.amqp.url == "amqp://a:5672/"
    assert settings.amqp.publisher == "standard"
    assert settings.workers.retry_jitter == 0.2
    partner = settings.source("partner")
    assert partner is not None
    assert partner.types == ("com.example.#",)
    assert partner.rate_limit == 200.0
    assert len(partner.secrets) == 1
    assert "whsec" not in repr(partner)
    jwt = settings.source("jwt")
    assert jwt is not None
    assert jwt.audience == ("https://gw.example",)
    assert jwt.types == ("org.camaraproject.#",)
    notify = settings.source("notify")
    assert notify is not None
    assert notify.types == ("notify.sms.inbound",)


def test_amqp_url_list_from_env() -> None:
    """GATEWAY_AMQP_URL is a comma-separated list of the cluster's nodes."""
    settings = load_settings(None, env={"GATEWAY_AMQP_URL": "amqp://a/, amqp://b/"})
    assert settings.amqp.urls == ("amqp://a/", "amqp://b/")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('auth = "none"', "needs allow_from"),
        ('auth = "jwt"\nissuer = "i"\naudience = "a"', "exactly one of jwks_url or jwks_file"),
        ('auth = "jwt"\njwks_file = "f"', "needs issuer and audience"),
        ('auth = "standard-webhooks"', "needs secrets"),
        ('auth = "standard-webhooks"\nsecrets = ["nope"]', "must start with whsec_"),
        ('auth = "magic"', "auth must be one of"),
        ('allow_from = ["not-an-ip"]', "not an IP address"),
        ('types = ["a..b"]', "topic pattern"),
    ],
)
def test_bad_source_security_is_a_config_error(tmp_path: Path, source: str, message: str) -> None:
    """Each unusable §8 combination is one clear config error."""
    text = f'[[sources]]\nname = "s"\nadapter = "cloudevents"\n{source}\n'
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), env={})


def test_url_and_urls_stay_in_step() -> None:
    """``url`` is the first of ``urls``: built from either, or replaced with a URL of its own."""
    both = AmqpSettings(url="amqp://a/", urls=("amqp://a/", "amqp://b/"))
    assert both.urls == ("amqp://a/", "amqp://b/")
    assert AmqpSettings(urls=("amqp://q/",)).url == "amqp://q/"
    assert replace(both, url="amqp://proxy/").urls == ("amqp://proxy/",)
    assert replace(both, url="amqp://b/").urls == ("amqp://b/", "amqp://a/")
