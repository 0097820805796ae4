"""What the callback handlers read of a request, whichever HTTP layer parsed it.

``aiohttp.web.Request`` is one; ``gateway.fast_http.FastRequest`` (a callback the lean
protocol of ``gateway.callback_protocol`` parsed whole) is the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping


class CallbackRequest(Protocol):
    """The parts of a request ``gateway.callbacks`` uses."""

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def remote(self) -> str | None: ...

    @property
    def query(self) -> MultiMapping[str]: ...

    @property
    def path(self) -> str: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...


# A source's ``POST`` handler, as both HTTP layers call it.
CallbackHandler = Callable[[CallbackRequest], Awaitable[web.StreamResponse]]
