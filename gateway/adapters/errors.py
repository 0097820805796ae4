"""Errors an adapter raises for a request it cannot turn into events.

Errors:
    AdapterError: base class; ``status`` is the HTTP status the ingress answers with,
        ``detail`` a one-line reason and ``field`` the offending field (or None).
    BadRequest: 400, the body is not JSON or cannot be normalized (e.g. no ``id``).
    UnsupportedMediaType: 415, the adapter cannot read the request's content type.
    TooManyEvents: 413, a batch of more events than ``[http] max_events_per_request``.

Details never quote body values or credentials, so they are safe to log and to return.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base: a request the adapter cannot turn into events. .status is the HTTP status."""

    status: int = 400

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, field={self.field!r})"


class BadRequest(AdapterError):
    """400: the body is not JSON or not normalizable; ``field`` names the offending field."""

    status = 400


class UnsupportedMediaType(AdapterError):
    """415: the request's content type is not one the adapter reads."""

    status = 415


class TooManyEvents(AdapterError):
    """413: a batch with more events than one request may carry."""

    status = 413
