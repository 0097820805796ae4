"""A transport that records what a protocol writes, for driving ``CallbackProtocol`` without
a socket (tests/test_fast_http.py, test_runner.py, test_callback_protocol.py)."""

from __future__ import annotations

import asyncio


class RecordingTransport(asyncio.Transport):
    """Records what the protocol writes and whether it closed the connection; reading can be
    paused."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default
