"""Which CloudEvent types a source may send: RabbitMQ topic patterns, compiled once.

A pattern is dot-separated words; ``*`` stands for exactly one word and ``#`` for zero or
more, as in a topic exchange binding (``com.example.#`` matches ``com.example`` and
``com.example.a.b``, not ``com.examples.x``). The ``notify`` namespace belongs to the Notify
adapters: any other source is refused a ``notify`` type whatever its patterns say.

Imports no web stack: the built-in workers apply the same rule (``consumers.source_policy``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NOTIFY_ADAPTERS = frozenset({"notify-delivery-status", "notify-inbound-sms"})
NOTIFY_NAMESPACE = "notify"


def pattern_regex(pattern: str) -> str:
    """The regular expression of one topic pattern, matched against ``"." + type``.

    Each word carries its leading dot, so ``#`` matching no word leaves no dot behind.
    """
    parts: list[str] = []
    previous = ""
    for word in pattern.split("."):
        if word == "#":
            if previous != "#":  # "#.#" is "#"; collapsing it keeps the backtracking linear
                parts.append(r"(?:\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(word))
        previous = word
    return "".join(parts)


def words_match(pattern: tuple[str, ...], words: list[str]) -> bool:
    """Topic matching by dynamic programming over (pattern word, type word): linear in their
    product whatever the pattern, for patterns with several ``#`` (a regular expression of
    ``#.a.#.a.#…`` backtracks exponentially on a type that almost matches)."""
    reachable = [True] + [False] * len(words)  # reachable[j]: pattern so far matches words[:j]
    for word in pattern:
        if word == "#":
            for j in range(1, len(words) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(words), 0, -1):
                reachable[j] = reachable[j - 1] and (word == "*" or word == words[j - 1])
            reachable[0] = False
    return reachable[-1]


class TypePatterns:
    """A set of topic patterns: one compiled expression for those with at most one ``#``
    (the usual ``org.example.#``: linear for the regex engine), word matching for the rest."""

    __slots__ = ("_match", "_multi", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        simple = [p for p in self.patterns if p.split(".").count("#") <= 1]
        self._multi = tuple(
            tuple(p.split(".")) for p in self.patterns if p.split(".").count("#") > 1
        )
        # No pattern matches nothing: "(?!)" never matches.
        alternatives = "|".join(pattern_regex(p) for p in simple) or "(?!)"
        self._match = re.compile(f"(?:{alternatives})").fullmatch

    def matches(self, event_type: str) -> bool:
        """True when some pattern matches ``event_type``."""
        if self._match("." + event_type) is not None:
            return True
        if not self._multi:
            return False
        words = event_type.split(".")
        return any(words_match(pattern, words) for pattern in self._multi)


class SourceTypes:
    """What one source may send: its ``types``, minus the ``notify`` namespace unless the
    source is a Notify adapter."""

    __slots__ = ("_notify_allowed", "_patterns")

    def __init__(self, adapter: str, patterns: Iterable[str]) -> None:
        self._patterns = TypePatterns(patterns)
        self._notify_allowed = adapter in NOTIFY_ADAPTERS

    def allows(self, event_type: str) -> bool:
        """True when this source may send an event of ``event_type``."""
        if not self._notify_allowed and event_type.partition(".")[0] == NOTIFY_NAMESPACE:
            return False
        return self._patterns.matches(event_type)
