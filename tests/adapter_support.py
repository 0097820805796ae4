"""What the adapter tests share: request headers, a JSON sender and the error it raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from gateway.adapters import AdapterError, Context, Normalize
from gateway.cloudevent import CloudEvent

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED = "2026-03-01T12:00:00.000Z"


def fixture(name: str, **changes: Any) -> dict[str, Any]:
    """Load one JSON fixture, with some members changed."""
    loaded: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    loaded.update(changes)
    return loaded


def headers(
    content_type: str | None = "application/json", *pairs: tuple[str, str]
) -> CIMultiDict[str]:
    """Request headers with an optional Content-Type and extra (name, value) pairs."""
    result: CIMultiDict[str] = CIMultiDict()
    if content_type is not None:
        result["Content-Type"] = content_type
    for name, value in pairs:
        result.add(name, value)
    return result


@dataclass(frozen=True)
class Adapter:
    """One adapter under test, called as its source would call it."""

    normalize: Normalize
    ctx: Context

    def send(self, body: Any, content_type: str | None = "application/json") -> list[CloudEvent]:
        """POST ``body`` as JSON."""
        return self.normalize(headers(content_type), orjson.dumps(body), self.ctx)

    def rejection(self, body: Any, content_type: str | None = "application/json") -> AdapterError:
        """The AdapterError raised for this body (bytes are sent as they are)."""
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        with pytest.raises(AdapterError) as info:
            self.normalize(headers(content_type), raw, self.ctx)
        return info.value
