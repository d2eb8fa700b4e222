"""Secrets: values that never print.

Registry strings whose schema says ``"x-secret": true`` (passwords, tokens, keys) are
held as :class:`Secret`. ``str()``/``repr()`` give ``'***'``; only :meth:`Secret.reveal`
hands the value to the library that needs it. Every revealed value is also remembered
so that the log redaction processor can scrub it from any record that quotes it.
"""

from __future__ import annotations

import threading
from typing import Any

_known: set[str] = set()
_lock = threading.Lock()


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if value:
            with _lock:
                _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))


def reveal(value: Any) -> Any:
    """``value.reveal()`` for a Secret, ``value`` itself otherwise."""
    return value.reveal() if isinstance(value, Secret) else value


def known_secrets() -> frozenset[str]:
    """Every secret value loaded in this process (for redaction)."""
    with _lock:
        return frozenset(_known)


def redact(text: str) -> str:
    """``text`` with every known secret value replaced by ``***``."""
    for value in known_secrets():
        if value in text:
            text = text.replace(value, "***")
    return text
