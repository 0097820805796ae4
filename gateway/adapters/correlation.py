"""The CAMARA ``x-correlator`` request header, kept on every event of the request.

CAMARA Commonalities: listeners "have to be ready to support and receive" it; its schema is
``^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$``. A value of that shape becomes the extension attribute
``xcorrelator`` (unless the event already carries one); any other value is not copied, so
an odd header never costs the sender its event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from gateway.cloudevent import CloudEvent

HEADER = "x-correlator"
ATTRIBUTE = "xcorrelator"
_CORRELATOR = re.compile(r"[a-zA-Z0-9\-_:;./<>{}]{1,256}")


def add_correlator(events: Iterable[CloudEvent], headers: Mapping[str, str]) -> None:
    """Copy a well-formed ``x-correlator`` header onto each event as ``xcorrelator``."""
    value = headers.get(HEADER)
    if value is None or not _CORRELATOR.fullmatch(value):
        return
    for event in events:
        event.setdefault(ATTRIBUTE, value)
