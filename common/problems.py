"""A validation problem: data, not an exception."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file."""

    message: str
    """What is wrong, in one line."""
    location: str | None = None
    """Where: ``row 12, column 'amount'``, ``line 3: $.items[0].price``, ``selector 'h1'``."""

    def to_dict(self) -> dict[str, str | None]:
        return {"location": self.location, "message": self.message}


#: At most this many problems are kept per file; the count of the rest is reported.
MAX_PROBLEMS_PER_FILE = 100
