"""One frozen settings object per process, read once from TOML and the environment.

Errors:
    ConfigError: the file or an override is missing, malformed or inconsistent. The CLI prints
    its message on one line and exits 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
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


class ConfigError(Exception):
    """The configuration cannot be used; the message says what and where, on one line."""


@dataclass(frozen=True)
class TokenDigest:
    """A SHA-256 digest of an accepted bearer token, optionally with an expiry."""

    digest: bytes = field(repr=False)
    expires: datetime | None = None


@dataclass(frozen=True)
class Source:
    name: str
    adapter: str
    tokens: tuple[TokenDigest, ...] = ()
    auth: str = "bearer"  # or "none"


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 262144


@dataclass(frozen=True)
class AmqpSettings:
    url: str = field(default="amqp://guest:guest@localhost:5672/", repr=False)
    exchange: str = "events"
    queue_type: str = "quorum"
    publish_timeout_s: float = 5.0


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
    _only(http_raw, {"host", "port", "max_body_bytes"}, "[http]")
    _only(amqp_raw, {"url", "exchange", "queue_type", "publish_timeout_s"}, "[amqp]")
    _only(state_raw, {"url"}, "[state]")
    _only(
        workers_raw,
        {"prefetch", "max_attempts", "retry_backoff_s", "metrics_port", "drain_timeout_s"},
        "[workers]",
    )

    http = HttpSettings(
        host=_str(env.get("GATEWAY_HTTP_HOST", http_raw.get("host", "0.0.0.0")), "http.host"),
        port=_port(env.get("GATEWAY_HTTP_PORT", http_raw.get("port", 8080)), "http.port"),
        max_body_bytes=_positive_int(http_raw.get("max_body_bytes", 262144), "http.max_body_bytes"),
    )
    amqp_url = _str(env.get("GATEWAY_AMQP_URL", amqp_raw.get("url", AmqpSettings.url)), "amqp.url")
    if not amqp_url.startswith(("amqp://", "amqps://")):
        raise ConfigError("amqp.url must start with amqp:// or amqps://")
    queue_type = _str(amqp_raw.get("queue_type", "quorum"), "amqp.queue_type")
    if queue_type not in ("quorum", "classic"):
        raise ConfigError(f"amqp.queue_type must be 'quorum' or 'classic', not {queue_type!r}")
    exchange = _str(amqp_raw.get("exchange", "events"), "amqp.exchange")
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,100}", exchange):
        raise ConfigError(f"amqp.exchange {exchange!r} is not a valid exchange name")
    amqp = AmqpSettings(
        url=amqp_url,
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
        _only(item, {"name", "adapter", "tokens", "auth"}, where)
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
        auth = _str(item.get("auth", "bearer"), f"{where}.auth")
        if auth not in ("bearer", "none"):
            raise ConfigError(f"{where}.auth must be 'bearer' or 'none', not {auth!r}")
        tokens_raw = item.get("tokens", [])
        if not isinstance(tokens_raw, list):
            raise ConfigError(f"{where}.tokens must be a list")
        tokens = tuple(_token(t, f"{where}.tokens[{j}]") for j, t in enumerate(tokens_raw))
        out.append(Source(name, adapter, tokens, auth))
    return tuple(out)


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
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} must be a positive number, not {value!r}")
    return float(value)


def _non_negative_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where} must be a number of seconds >= 0, not {value!r}")
    return float(value)
