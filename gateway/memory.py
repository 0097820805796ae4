"""Giving freed memory back to the system after a burst of large request bodies.

CPython returns freed objects to glibc's malloc, which keeps the pages for reuse: after 100
hostile 256 KiB bodies the ingress stayed ~35 MB above its resting size for good. Once the
in-flight budget drains after a large burst, ``malloc_trim(0)`` hands those pages back
(measured: see README, "Limits and abuse"). At most once per ``INTERVAL_S``; a no-op where
the C library has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

INTERVAL_S = 1.0


def _malloc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrimmer:
    """``request()`` asks for a trim; it runs once, ``INTERVAL_S`` later, on the event loop."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self._trim = _malloc_trim()
        self._interval_s = interval_s
        self._pending: asyncio.TimerHandle | None = None

    def request(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._pending = loop.call_later(self._interval_s, self._run)

    def _run(self) -> None:
        self._pending = None
        assert self._trim is not None
        self._trim()
