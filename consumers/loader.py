"""``module:function`` -> the async handler it names, for ``consume --handler``.

Errors:
    HandlerLoadError: the reference is malformed, the module cannot be imported, the
    attribute is missing, or it is not an async function. The message says which, on one
    line; the CLI prints it and exits 2.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, cast

from consumers.retry import error_line
from consumers.worker import Handler

_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class HandlerLoadError(Exception):
    """The ``--handler`` reference does not name an async function."""


def load_handler(reference: str) -> Handler:
    """Import ``package.module:function`` (the function may be ``Class.method``)."""
    if not _REFERENCE.fullmatch(reference):
        raise HandlerLoadError(
            f"--handler must look like package.module:function, not {reference!r}"
        )
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise HandlerLoadError(f"cannot import module {module_name!r}: {error_line(exc)}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerLoadError(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not _is_async_callable(target):
        raise HandlerLoadError(
            f"{reference} is not an async function (need: async def handle(event) -> None)"
        )
    return cast(Handler, target)


def _is_async_callable(target: Any) -> bool:
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - an instance with async __call__
    return not inspect.isclass(target) and call is not None and inspect.iscoroutinefunction(call)
