"""One frozen settings object per process, read once from TOML and the environment.

Errors:
    ConfigError: the file or an override is missing, malformed or inconsistent. The CLI prints
    its message on one line and exits 2.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

ADAPTER_NAMES = ("camara", "cloudevents", "notify-delivery-status", "notify-inbound-sms")
DEFAULT_SOURCES = (
    ("camara", "camara", "GATEWAY_TOKENS_CAMARA"),
    ("notify-status", "notify-delivery-status", "GATEWAY_TOKENS_NOTIFY_STATUS"),
    ("notify-inbound", "notify-inbound-sms", "GATEWAY_TOKENS_NOTIFY_INBOUND"),
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TYPE_PATTERN = re.compile(r"[^.\s]+(\.[^.\s]+)*")
AUTH_SCHEMES = ("bearer", "jwt", "standard-webhooks", "none")
PUBLISHERS = ("fast", "standard")
# What each adapter may send when a source names no ``types`` (§8). The Notify adapters
# produce exactly these; the notify.* namespace is theirs alone whatever a source says.
DEFAULT_TYPES: dict[str, tuple[str, ...]] = {
    "camara": ("org.camaraproject.#",),
    "cloudevents": ("#",),
    "notify-delivery-status": (
        "notify.*.delivery-status",
        "notify.email.complaint",
        "notify.letter.returned",
    ),
    "notify-inbound-sms": ("notify.sms.inbound",),
}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"


class ConfigError(Exception):
    """The configuration cannot be used; the message says what and where, on one line."""


@dataclass(frozen=True)
class TokenDigest:
    """A SHA-256 digest of an accepted bearer token, optionally with an expiry."""

    digest: bytes = field(repr=False)
    expires: datetime | None = None


@dataclass(frozen=True)
class Source:
    """One ``[[sources]]`` entry. ``types`` empty means the adapter's defaults (§8)."""

    name: str
    adapter: str
    tokens: tuple[TokenDigest, ...] = ()
    auth: str = "bearer"  # bearer | jwt | standard-webhooks | none
    types: tuple[str, ...] = ()
    allow_from: tuple[Network, ...] = ()
    rate_limit: float | None = None
    max_future_skew_s: float = 300.0
    jwks_url: str | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    leeway_s: float = 60.0
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    signature_tolerance_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.types:
            object.__setattr__(self, "types", DEFAULT_TYPES.get(self.adapter, ("#",)))


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 262144
    max_events_per_request: int = 1000
    max_inflight_bytes: int = 4194304
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_connections: int = 1024
    trusted_proxies: tuple[Network, ...] = ()
    # Callbacks on the lean HTTP/1.1 protocol (gateway.callback_protocol); false: aiohttp only.
    fast_path: bool = True


@dataclass(frozen=True)
class AmqpSettings:
    url: str = field(default=DEFAULT_AMQP_URL, repr=False)
    exchange: str = "events"
    queue_type: str = "quorum"
    publish_timeout_s: float = 5.0
    # Every node of the cluster, ``url`` first; empty means just ``url``.
    urls: tuple[str, ...] = field(default=(), repr=False)
    rejected_max_bytes: int = 2**30
    rejected_ttl_s: int = 604800
    unrouted_max_bytes: int = 2**30
    publisher: str = "fast"  # or "standard" (plain aio-pika)

    def __post_init__(self) -> None:
        # ``url`` is always the first of ``urls``. Built with ``urls`` alone, ``url`` follows
        # it; ``replace(amqp, url=X)`` means "use X" (a test's proxy, say), so X goes first.
        if not self.urls:
            object.__setattr__(self, "urls", (self.url,))
        elif self.url not in self.urls:
            if self.url == DEFAULT_AMQP_URL:
                object.__setattr__(self, "url", self.urls[0])
            else:
                object.__setattr__(self, "urls", (self.url,))
        elif self.url != self.urls[0]:
            others = tuple(u for u in self.urls if u != self.url)
            object.__setattr__(self, "urls", (self.url, *others))


@dataclass(frozen=True)
class StateSettings:
    url: str = field(default="sqlite:///./event-gateway.db", repr=False)


@dataclass(frozen=True)
class WorkerSettings:
    prefetch: int = 64
    max_attempts: int = 5
    retry_backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    metrics_port: int | None = None
    drain_timeout_s: float = 20.0
    retry_jitter: float = 0.1


@dataclass(frozen=True)
class Settings:
    http: HttpSettings = HttpSettings()
    amqp: AmqpSettings = AmqpSettings()
    state: StateSettings = StateSettings()
    workers: WorkerSettings = WorkerSettings()
    sources: tuple[Source, ...] = ()
    log_format: str = "json"

    def source(self, name: str) -> Source | None:
        for source in self.sources:
            if source.name == name:
                return source
        return None


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (``path`` or ``GATEWAY_CONFIG``), then apply env overrides."""
    env = os.environ if env is None else env
    path = path or env.get("GATEWAY_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_toml(Path(path))
    try:
        return _build(raw, env)
    except ConfigError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _build(raw: dict[str, Any], env: Mapping[str, str]) -> Settings:
    _only(raw, {"http", "amqp", "state", "workers", "sources", "log_format"}, "top level")
    http_raw = _table(raw, "http")
    amqp_raw = _table(raw, "amqp")
    state_raw = _table(raw, "state")
    workers_raw = _table(raw, "workers")
    _only(http_raw, {f.name for f in fields(HttpSettings)}, "[http]")
    _only(amqp_raw, {f.name for f in fields(AmqpSettings)} - {"urls"}, "[amqp]")
    _only(state_raw, {"url"}, "[state]")
    _only(workers_raw, {f.name for f in fields(WorkerSettings)}, "[workers]")

    http = HttpSettings(
        host=_str(env.get("GATEWAY_HTTP_HOST", http_raw.get("host", "0.0.0.0")), "http.host"),
        port=_port(env.get("GATEWAY_HTTP_PORT", http_raw.get("port", 8080)), "http.port"),
        max_body_bytes=_positive_int(http_raw.get("max_body_bytes", 262144), "http.max_body_bytes"),
        max_events_per_request=_positive_int(
            http_raw.get("max_events_per_request", 1000), "http.max_events_per_request"
        ),
        max_inflight_bytes=_positive_int(
            http_raw.get("max_inflight_bytes", 4194304), "http.max_inflight_bytes"
        ),
        header_timeout_s=_positive_float(
            http_raw.get("header_timeout_s", 10.0), "http.header_timeout_s"
        ),
        body_timeout_s=_positive_float(http_raw.get("body_timeout_s", 30.0), "http.body_timeout_s"),
        keepalive_timeout_s=_positive_float(
            http_raw.get("keepalive_timeout_s", 75.0), "http.keepalive_timeout_s"
        ),
        max_connections=_positive_int(
            http_raw.get("max_connections", 1024), "http.max_connections"
        ),
        trusted_proxies=_networks(http_raw.get("trusted_proxies", []), "http.trusted_proxies"),
        fast_path=_bool(http_raw.get("fast_path", True), "http.fast_path"),
    )
    amqp_urls = _urls(env.get("GATEWAY_AMQP_URL"), amqp_raw.get("url", AmqpSettings.url))
    publisher = _str(amqp_raw.get("publisher", "fast"), "amqp.publisher")
    if publisher not in PUBLISHERS:
        raise ConfigError(f"amqp.publisher must be 'fast' or 'standard', not {publisher!r}")
    queue_type = _str(amqp_raw.get("queue_type", "quorum"), "amqp.queue_type")
    if queue_type not in ("quorum", "classic"):
        raise ConfigError(f"amqp.queue_type must be 'quorum' or 'classic', not {queue_type!r}")
    exchange = _str(amqp_raw.get("exchange", "events"), "amqp.exchange")
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,100}", exchange):
        raise ConfigError(f"amqp.exchange {exchange!r} is not a valid exchange name")
    amqp = AmqpSettings(
        url=amqp_urls[0],
        urls=amqp_urls,
        rejected_max_bytes=_positive_int(
            amqp_raw.get("rejected_max_bytes", 2**30), "amqp.rejected_max_bytes"
        ),
        rejected_ttl_s=_positive_int(amqp_raw.get("rejected_ttl_s", 604800), "amqp.rejected_ttl_s"),
        unrouted_max_bytes=_positive_int(
            amqp_raw.get("unrouted_max_bytes", 2**30), "amqp.unrouted_max_bytes"
        ),
        publisher=publisher,
        exchange=exchange,
        queue_type=queue_type,
        publish_timeout_s=_positive_float(
            amqp_raw.get("publish_timeout_s", 5.0), "amqp.publish_timeout_s"
        ),
    )
    state_url = _str(
        env.get("GATEWAY_STATE_URL", state_raw.get("url", StateSettings.url)), "state.url"
    )
    if not state_url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError("state.url must start with sqlite:// or postgresql://")
    backoff_raw = workers_raw.get("retry_backoff_s", [1, 5, 30, 120])
    if not isinstance(backoff_raw, list) or not backoff_raw:
        raise ConfigError("workers.retry_backoff_s must be a non-empty list of seconds")
    metrics_port = workers_raw.get("metrics_port")
    workers = WorkerSettings(
        prefetch=_positive_int(workers_raw.get("prefetch", 64), "workers.prefetch"),
        max_attempts=_positive_int(workers_raw.get("max_attempts", 5), "workers.max_attempts"),
        retry_backoff_s=tuple(
            _non_negative_float(v, "workers.retry_backoff_s[]") for v in backoff_raw
        ),
        metrics_port=None if metrics_port is None else _port(metrics_port, "workers.metrics_port"),
        drain_timeout_s=_positive_float(
            workers_raw.get("drain_timeout_s", 20.0), "workers.drain_timeout_s"
        ),
        retry_jitter=_fraction(workers_raw.get("retry_jitter", 0.1), "workers.retry_jitter"),
    )
    log_format = _str(env.get("GATEWAY_LOG_FORMAT", raw.get("log_format", "json")), "log_format")
    if log_format not in ("json", "console"):
        raise ConfigError(f"GATEWAY_LOG_FORMAT must be 'json' or 'console', not {log_format!r}")

    if "sources" in raw:
        sources = _sources(raw["sources"])
    else:
        sources = tuple(
            Source(name, adapter, _env_tokens(env.get(var, ""), var))
            for name, adapter, var in DEFAULT_SOURCES
        )
    return Settings(
        http=http,
        amqp=amqp,
        state=StateSettings(state_url),
        workers=workers,
        sources=sources,
        log_format=log_format,
    )


def _sources(value: Any) -> tuple[Source, ...]:
    if not isinstance(value, list):
        raise ConfigError("sources must be an array of tables ([[sources]])")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(value):
        where = f"sources[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        _only(item, _SOURCE_KEYS, where)
        name = _str(item.get("name"), f"{where}.name")
        if not _SOURCE_NAME.fullmatch(name):
            raise ConfigError(f"{where}.name {name!r} must be letters, digits, '.', '_' or '-'")
        if name in seen:
            raise ConfigError(f"{where}.name {name!r} is used twice")
        seen.add(name)
        adapter = _str(item.get("adapter"), f"{where}.adapter")
        if adapter not in ADAPTER_NAMES:
            raise ConfigError(
                f"{where}.adapter {adapter!r} is unknown (one of: {', '.join(ADAPTER_NAMES)})"
            )
        out.append(_source(item, name, adapter, where))
    return tuple(out)


_SOURCE_KEYS = {
    "name",
    "adapter",
    "tokens",
    "auth",
    "types",
    "allow_from",
    "rate_limit",
    "max_future_skew_s",
    "jwks_url",
    "jwks_file",
    "issuer",
    "audience",
    "leeway_s",
    "secrets",
    "signature_tolerance_s",
}


def _source(item: dict[str, Any], name: str, adapter: str, where: str) -> Source:
    auth = _str(item.get("auth", "bearer"), f"{where}.auth")
    if auth not in AUTH_SCHEMES:
        raise ConfigError(f"{where}.auth must be one of {', '.join(AUTH_SCHEMES)}, not {auth!r}")
    tokens_raw = item.get("tokens", [])
    if not isinstance(tokens_raw, list):
        raise ConfigError(f"{where}.tokens must be a list")
    tokens = tuple(_token(t, f"{where}.tokens[{j}]") for j, t in enumerate(tokens_raw))
    types = _string_list(item.get("types", []), f"{where}.types")
    for pattern in types:
        if not _TYPE_PATTERN.fullmatch(pattern):
            raise ConfigError(f"{where}.types: {pattern!r} is not a dot-separated topic pattern")
    allow_from = _networks(item.get("allow_from", []), f"{where}.allow_from")
    rate_limit = item.get("rate_limit")
    jwks_url = _optional_str(item.get("jwks_url"), f"{where}.jwks_url")
    jwks_file = _optional_str(item.get("jwks_file"), f"{where}.jwks_file")
    issuer = _optional_str(item.get("issuer"), f"{where}.issuer")
    audience_raw = item.get("audience", [])
    audience = _string_list(
        [audience_raw] if isinstance(audience_raw, str) else audience_raw, f"{where}.audience"
    )
    secrets = tuple(
        _webhook_secret(s, f"{where}.secrets[{j}]")
        for j, s in enumerate(_string_list(item.get("secrets", []), f"{where}.secrets"))
    )
    if auth == "none" and not allow_from:
        raise ConfigError(f"{where}: auth = 'none' needs allow_from (anyone could send otherwise)")
    if auth == "jwt":
        if (jwks_url is None) == (jwks_file is None):
            raise ConfigError(f"{where}: auth = 'jwt' needs exactly one of jwks_url or jwks_file")
        if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
            raise ConfigError(f"{where}.jwks_url must be an http(s) URL")
        if issuer is None or not audience:
            raise ConfigError(f"{where}: auth = 'jwt' needs issuer and audience")
    if auth == "standard-webhooks" and not secrets:
        raise ConfigError(f"{where}: auth = 'standard-webhooks' needs secrets = ['whsec_...']")
    return Source(
        name,
        adapter,
        tokens,
        auth,
        types=types,
        allow_from=allow_from,
        rate_limit=None
        if rate_limit is None
        else _positive_float(rate_limit, f"{where}.rate_limit"),
        max_future_skew_s=_non_negative_float(
            item.get("max_future_skew_s", 300.0), f"{where}.max_future_skew_s"
        ),
        jwks_url=jwks_url,
        jwks_file=jwks_file,
        issuer=issuer,
        audience=audience,
        leeway_s=_non_negative_float(item.get("leeway_s", 60.0), f"{where}.leeway_s"),
        secrets=secrets,
        signature_tolerance_s=_positive_float(
            item.get("signature_tolerance_s", 300.0), f"{where}.signature_tolerance_s"
        ),
    )


def _webhook_secret(value: str, where: str) -> bytes:
    """A Standard Webhooks secret: ``whsec_`` + base64 of the key bytes."""
    if not value.startswith("whsec_"):
        raise ConfigError(f"{where} must start with whsec_")
    try:
        key = base64.b64decode(value[6:], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where} is not whsec_ followed by base64") from None
    if not key:
        raise ConfigError(f"{where} is empty")
    return key


def _urls(env_value: str | None, raw: Any) -> tuple[str, ...]:
    """``[amqp] url``: one URL or a list (the nodes of one cluster); the env var is a
    comma-separated list."""
    if env_value is not None:
        urls = [part.strip() for part in env_value.split(",") if part.strip()]
    elif isinstance(raw, list):
        urls = list(raw)
    else:
        urls = [raw]
    if not urls:
        raise ConfigError("amqp.url must name at least one broker URL")
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
            raise ConfigError("amqp.url must start with amqp:// or amqps://")
    return tuple(urls)


def _networks(value: Any, where: str) -> tuple[Network, ...]:
    out = []
    for text in _string_list(value, where):
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not an IP address or CIDR") from None
    return tuple(out)


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _optional_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"{where} must be a fraction between 0 and 1, not {value!r}")
    return float(value)


def _token(value: Any, where: str) -> TokenDigest:
    expires: datetime | None = None
    if isinstance(value, dict):
        _only(value, {"sha256", "expires"}, where)
        hexdigest = value.get("sha256")
        if not isinstance(hexdigest, str):
            raise ConfigError(f"{where}.sha256 must be a string of 64 hex digits")
        text = hexdigest if hexdigest.startswith("sha256:") else f"sha256:{hexdigest}"
        if "expires" in value:
            expires = _datetime(value["expires"], f"{where}.expires")
    elif isinstance(value, str):
        text = value
    else:
        raise ConfigError(f"{where} must be 'sha256:<hex>' or {{ sha256 = ..., expires = ... }}")
    text = text.strip().lower()
    if not _DIGEST.fullmatch(text):
        raise ConfigError(f"{where} is not a digest of the form sha256:<64 hex digits>")
    return TokenDigest(bytes.fromhex(text[7:]), expires)


def _env_tokens(value: str, var: str) -> tuple[TokenDigest, ...]:
    return tuple(_token(part.strip(), var) for part in value.split(",") if part.strip())


def _datetime(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{where} is not an RFC 3339 date-time: {value!r}") from None
    else:
        raise ConfigError(f"{where} must be an RFC 3339 date-time")
    if parsed.tzinfo is None:
        raise ConfigError(f"{where} needs a time zone (e.g. 2026-12-31T00:00:00Z)")
    return parsed


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive integer, not {value!r}")
    return value


def _port(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{where} must be a port number 0-65535, not {value!r}")
    return value


def _positive_float(value: Any, where: str) -> float:
    # ``not value > 0`` also refuses TOML's nan (it would pass every comparison check).
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where} must be a positive number, not {value!r}")
    return float(value)


def _non_negative_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{where} must be a number of seconds >= 0, not {value!r}")
    return float(value)
