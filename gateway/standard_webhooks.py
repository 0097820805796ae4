"""The Standard Webhooks signature check (https://www.standardwebhooks.com/): pure, no I/O.

A sender signs ``{webhook-id}.{webhook-timestamp}.{raw body}`` with HMAC-SHA256 under the
key of a ``whsec_<base64>`` secret and sends ``webhook-signature: v1,<base64> ...``: a
space-separated list, so a sender rotating its secret can send one signature per key. Svix
sends the same headers under ``svix-`` names. The request passes when the timestamp is
within the tolerance of now and some ``v1`` signature matches some configured key.

Every comparison is ``hmac.compare_digest`` and every check runs to the end (no early exit
on the first mismatch); whatever is wrong, the answer is just ``False``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

PREFIXES = ("webhook-", "svix-")
SIGNATURE_VERSION = "v1"
# More signatures than any rotation needs only cost CPU: the rest are ignored.
MAX_SIGNATURES = 16
_MAX_TIMESTAMP_DIGITS = 12


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: the signature a sender puts in ``webhook-signature``."""
    mac = hmac.new(key, _signed_content(msg_id, str(timestamp), body), hashlib.sha256)
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac.digest()).decode('ascii')}"


def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: tuple[bytes, ...],
    *,
    now: float,
    tolerance_s: float,
) -> bool:
    """True when ``headers`` carry a fresh, valid signature of ``body`` by one of ``keys``.

    ``headers`` must look names up case-insensitively (aiohttp's ``request.headers`` does).
    """
    found = _signature_headers(headers)
    if found is None or not keys:
        return False
    msg_id, timestamp, signatures = found
    if not (timestamp.isdigit() and timestamp.isascii()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        return False
    fresh = abs(now - int(timestamp)) <= tolerance_s
    content = _signed_content(msg_id, timestamp, body)
    expected = [hmac.new(key, content, hashlib.sha256).digest() for key in keys]
    matched = False
    for presented in _presented(signatures):
        for digest in expected:
            if hmac.compare_digest(presented, digest):
                matched = True
    return matched and fresh


def _signature_headers(headers: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(id, timestamp, signatures) from the ``webhook-`` headers, else the ``svix-`` ones."""
    for prefix in PREFIXES:
        msg_id = headers.get(prefix + "id")
        timestamp = headers.get(prefix + "timestamp")
        signatures = headers.get(prefix + "signature")
        if msg_id and timestamp and signatures:
            return msg_id, timestamp.strip(), signatures
    return None


def _presented(signatures: str) -> list[bytes]:
    """The decoded ``v1`` signatures of the header (others and malformed ones skipped)."""
    out = []
    for item in signatures.split()[:MAX_SIGNATURES]:
        version, _, encoded = item.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def _signed_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    # aiohttp keeps header bytes that are not UTF-8 as lone surrogates: give them back as sent.
    return f"{msg_id}.{timestamp}.".encode("utf-8", "surrogateescape") + body
