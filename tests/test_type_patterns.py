"""Topic patterns for the types a source may send: RabbitMQ's `*` and `#`, and the Notify
namespace that only the Notify adapters may use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.settings import DEFAULT_TYPES
from gateway.type_patterns import SourceTypes, TypePatterns, words_match

PATTERN_CASES = [
    ("com.example.#", "com.example", True),
    ("com.example.#", "com.example.a", True),
    ("com.example.#", "com.example.a.b.c", True),
    ("com.example.#", "com.examples.x", False),
    ("com.example.#", "xcom.example.a", False),
    ("com.example.*", "com.example.a", True),
    ("com.example.*", "com.example", False),
    ("com.example.*", "com.example.a.b", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a..c", True),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.c", True),
    ("a.#.c", "a.x.y.d", False),
    ("#.c", "c", True),
    ("#.c", "b.c", True),
    ("#.c", "bc", False),
    ("#", "anything.at.all", True),
    ("#.#", "x", True),
    ("*", "one", True),
    ("*", "one.two", False),
    ("a.b", "a.b", True),
    ("a.b", "a.bc", False),
    ("a.b", "a.b\n", False),
    ("a+b.(c)", "a+b.(c)", True),
    ("a+b.(c)", "aab.c", False),
    ("#.a.#", "a", True),
    ("#.a.#", "x.a.y.z", True),
    ("#.a.#", "x.b", False),
]


@pytest.mark.parametrize(("pattern", "event_type", "matches"), PATTERN_CASES)
def test_pattern(pattern: str, event_type: str, matches: bool) -> None:
    """Each word is literal; `*` is exactly one word, `#` zero or more."""
    assert TypePatterns([pattern]).matches(event_type) is matches


def test_several_patterns_and_none() -> None:
    """Any pattern of the set matches; an empty set matches nothing."""
    patterns = TypePatterns(["a.#", "b.*"])
    assert patterns.matches("a.x.y")
    assert patterns.matches("b.x")
    assert not patterns.matches("c.x")
    assert not TypePatterns([]).matches("a")


def test_word_matching_agrees_with_the_expression_on_the_table() -> None:
    """The matcher for patterns with several `#` gives every answer of the table above."""
    for case in PATTERN_CASES:
        pattern, event_type, matches = case
        assert words_match(tuple(pattern.split(".")), event_type.split(".")) is matches, case


def test_alternating_hashes_and_words_are_answered_at_once() -> None:
    """`#.a.#.a.#.a.#.a.#.z` against a 255-byte type that almost matches: no backtracking
    blow-up (a regular expression took 13 s of CPU here)."""
    patterns = TypePatterns(["#.a.#.a.#.a.#.a.#.z"])
    assert not patterns.matches(".".join(["a"] * 127))
    assert patterns.matches("a.a.x.a.a.z")


def test_many_hashes_do_not_backtrack_for_long() -> None:
    """A pattern of many `#` against a long type is answered at once (no blow-up)."""
    patterns = TypePatterns(["#.#.#.#.#.#.#.#.z"])
    assert not patterns.matches(".".join(["a"] * 120))


@pytest.mark.parametrize(
    ("adapter", "event_type", "allowed"),
    [
        ("camara", "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-on", True),
        ("camara", "com.example.x", False),
        ("camara", "notify.sms.delivery-status", False),
        ("cloudevents", "com.example.x", True),
        ("cloudevents", "notify.sms.inbound", False),
        ("cloudevents", "notify", False),
        ("cloudevents", "notifyx.y", True),
        ("notify-delivery-status", "notify.sms.delivery-status", True),
        ("notify-delivery-status", "notify.email.delivery-status", True),
        ("notify-delivery-status", "notify.sms.inbound", False),
        ("notify-inbound-sms", "notify.sms.inbound", True),
        ("notify-inbound-sms", "notify.sms.delivery-status", False),
    ],
)
def test_adapter_defaults(adapter: str, event_type: str, allowed: bool) -> None:
    """The default types per adapter, with notify.* kept for the Notify adapters."""
    assert SourceTypes(adapter, DEFAULT_TYPES[adapter]).allows(event_type) is allowed


def test_notify_namespace_is_refused_whatever_the_types() -> None:
    """A camara or cloudevents source listing notify.# still may not send notify.*."""
    for adapter in ("camara", "cloudevents"):
        assert not SourceTypes(adapter, ["notify.#", "#"]).allows("notify.sms.delivery-status")


def test_imports_no_web_stack() -> None:
    """Workers use these modules: importing them must not pull in aiohttp."""
    code = (
        "import sys; import gateway.type_patterns, consumers.source_policy; "
        "sys.exit('aiohttp' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
