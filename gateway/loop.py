"""The event loop every command runs on: uvloop where installed, else asyncio's.

uvloop made both the ingress and the workers about 20% faster per core. One place decides, so
the ingress, the workers and the tools run on the same loop. No web stack imported here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)
    return uvloop.run(main)
