"""A validation problem: data, not an exception."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MAX_PROBLEMS_PER_FILE", "Problem", "capped", "more_problems"]


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


def more_problems(count: int) -> Problem:
    """The last problem of a capped list: how many more were found and not listed."""
    return Problem(f"{count} more problem{'s' if count != 1 else ''} found; only the first "
                   f"{MAX_PROBLEMS_PER_FILE} are listed")


def capped(problems: Iterable[Problem]) -> list[Problem]:
    """The first :data:`MAX_PROBLEMS_PER_FILE` of ``problems`` (read lazily: the rest are only
    counted), plus :func:`more_problems` when there were more."""
    found = iter(problems)
    kept = list(itertools.islice(found, MAX_PROBLEMS_PER_FILE))
    more = sum(1 for _ in found)
    return [*kept, more_problems(more)] if more else kept
