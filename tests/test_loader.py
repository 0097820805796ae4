"""``consumers.loader``: ``module:function`` to an async handler, with clear errors."""

from __future__ import annotations

import pytest

from consumers.loader import HandlerLoadError, load_handler
from tests import custom_handler


def test_loads_an_async_function() -> None:
    """A module path and function name give that function."""
    assert load_handler("tests.custom_handler:record") is custom_handler.record


def test_loads_an_object_with_async_call() -> None:
    """A dotted attribute path works, and so does an instance with ``async __call__``."""
    assert load_handler("tests.custom_handler:COUNTER") is custom_handler.COUNTER


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tests.custom_handler", "must look like package.module:function"),
        ("tests.custom_handler:", "must look like"),
        (":record", "must look like"),
        ("a b:c", "must look like"),
        ("tests.no_such_module:fn", "cannot import module 'tests.no_such_module'"),
        ("tests.custom_handler:missing", "has no attribute 'missing'"),
        ("tests.custom_handler:not_async", "is not an async function"),
        ("tests.custom_handler:NOT_CALLABLE", "is not an async function"),
        ("tests.custom_handler:CounterHandler", "is not an async function"),
    ],
)
def test_bad_references_raise_handler_load_error(reference: str, message: str) -> None:
    """Each way a reference can be wrong is one named error with a one-line message."""
    with pytest.raises(HandlerLoadError, match=message) as info:
        load_handler(reference)
    assert "\n" not in str(info.value)
