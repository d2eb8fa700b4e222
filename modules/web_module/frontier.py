"""The crawl frontier: which URL to request next, breadth first, the same scope on every run.

The web module asks for many pages at once, and they come back in any order. The frontier
keeps the crawl what it was when pages were fetched one at a time:

* URLs are handed out (:meth:`Frontier.pop`) in breadth-first order, links in document order,
  each once: start URLs first, then the links of the start URLs, then theirs...
* the links of a finished page join the frontier only once every page handed out before it
  has finished too (:meth:`Frontier.done` holds them until then), so ``max_pages`` and
  ``max_depth`` cut the crawl at the same URLs whatever order the answers came in;
* a link is queued only when ``allows`` says so (allowed hosts) and while fewer than
  ``max_pages`` links were queued; later ones are counted in :attr:`Frontier.beyond`.

Used by the generator thread of ``WebModule.fetch`` alone (not thread-safe).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Frontier", "Visit"]


@dataclass(frozen=True)
class Visit:
    """One URL to request."""

    seq: int
    """Its place in the crawl order (0, 1, 2... as handed out)."""
    url: str
    depth: int
    """Link hops from a start URL (start URLs: 0)."""
    start: bool
    """A start URL: failing to fetch it fails the source."""


class Frontier:
    def __init__(self, starts: Iterable[str], allows: Callable[[str], bool], max_pages: int) -> None:
        self._allows = allows
        self._max_pages = max_pages
        self._todo: deque[Visit] = deque()
        self._queued: set[str] = set()
        self._next_seq = 0
        for url in starts:
            if url not in self._queued:
                self._queue(url, 0, start=True)
        self._finished: dict[int, tuple[int, Sequence[str]]] = {}
        """Finished visits whose links wait for an earlier visit to finish: seq -> (depth, links)."""
        self._retired = 0
        """Visits ``0 .. _retired - 1`` are finished and their links queued."""
        self.linked = 0
        """Links queued so far (at most ``max_pages``)."""
        self.beyond = 0
        """Allowed links left out once ``max_pages`` links were queued (once per page linking them)."""

    def _queue(self, url: str, depth: int, start: bool = False) -> None:
        self._queued.add(url)
        self._todo.append(Visit(self._next_seq, url, depth, start))
        self._next_seq += 1

    def pop(self) -> Visit | None:
        """The next URL to request, or None while there is none (more may come from pages in flight)."""
        return self._todo.popleft() if self._todo else None

    def __len__(self) -> int:
        """URLs waiting to be handed out."""
        return len(self._todo)

    @property
    def full(self) -> bool:
        """``max_pages`` links are queued: no later page's links will be followed."""
        return self.linked >= self._max_pages

    def done(self, visit: Visit, links: Sequence[str] = ()) -> None:
        """``visit`` is finished (fetched, failed or skipped) with these links to follow."""
        self._finished[visit.seq] = (visit.depth, links)
        while self._retired in self._finished:
            depth, found = self._finished.pop(self._retired)
            self._retired += 1
            for link in found:
                if link in self._queued or not self._allows(link):
                    continue
                if self.full:
                    self.beyond += 1
                    continue
                self._queue(link, depth + 1)
                self.linked += 1
