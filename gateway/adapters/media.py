"""Reading the Content-Type header: the media type without parameters, and whether it is JSON."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.adapters.errors import UnsupportedMediaType

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"


def media_type(content_type: str | None) -> str | None:
    """``Application/JSON; charset=utf-8`` -> ``application/json``; None when absent or blank."""
    if content_type is None:
        return None
    essence = content_type.partition(";")[0].strip().lower()
    return essence or None


def is_json(essence: str) -> bool:
    """True for ``application/json``, ``text/json`` and any ``*/*+json`` media type."""
    return essence == JSON or essence == "text/json" or essence.endswith("+json")


def require_json(headers: Mapping[str, str]) -> None:
    """Accept a JSON or missing Content-Type; anything else is 415."""
    essence = media_type(headers.get("Content-Type"))
    if essence is not None and not is_json(essence):
        raise UnsupportedMediaType(
            f"content type {essence[:100]!r} is not JSON", field="Content-Type"
        )
