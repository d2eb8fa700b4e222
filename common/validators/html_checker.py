"""The ``.html`` checker: required CSS selectors, visible text length and a title.

Rules (``validate.html``, see :class:`~common.config_model.HtmlRules`):

``required``
    CSS selectors (soupsieve, as BeautifulSoup's ``select``) that must each match at
    least one element. Each miss is one problem whose location names the selector.
``min_text_chars``
    Least characters of visible text: the text of ``<body>`` (the whole document when
    there is none) without ``script``, ``style``, ``noscript`` and ``template``
    elements or comments, whitespace runs counted as one space.
``require_title``
    A ``<title>`` with non-blank text.

Pages are parsed with BeautifulSoup's ``lxml`` parser, which reads any HTML without
failing and guesses the encoding from the BOM, ``<meta charset>`` or the bytes. At most
:data:`~common.problems.MAX_PROBLEMS_PER_FILE` problems are kept; one last problem tells
how many more were found. The selectors are compiled once; one checker is shared by
every job and thread of the process (checks keep no state).
"""

from __future__ import annotations

from pathlib import Path

import soupsieve
from bs4 import BeautifulSoup
from bs4.element import Tag

from common.config_model import HtmlRules
from common.exceptions import ConfigError
from common.problems import MAX_PROBLEMS_PER_FILE, Problem

__all__ = ["HIDDEN_TAGS", "HtmlChecker", "visible_text"]

#: Elements whose text is never shown to a reader.
HIDDEN_TAGS = ("script", "style", "noscript", "template")


class HtmlChecker:
    """One compiled ``validate.html`` section.

    Raises :class:`~common.exceptions.ConfigError` naming ``validate.html.required[i]``
    when a selector is not valid CSS.
    """

    def __init__(self, rules: HtmlRules) -> None:
        self.rules = rules
        self._required: list[tuple[str, soupsieve.SoupSieve]] = []
        for index, selector in enumerate(rules.required):
            try:
                self._required.append((selector, soupsieve.compile(selector)))
            except (soupsieve.SelectorSyntaxError, ValueError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"validate.html.required[{index}]: invalid CSS selector {selector!r}: {first}",
                                  key=f"validate.html.required[{index}]") from None

    def check(self, path: Path) -> list[Problem]:
        """Problems of the HTML file at ``path``; empty when it passes every rule."""
        soup = BeautifulSoup(Path(path).read_bytes(), "lxml")
        problems: list[Problem] = []
        if self.rules.require_title:
            title = soup.find("title")
            if not isinstance(title, Tag):
                problems.append(Problem("no <title> element", location="selector 'title'"))
            elif not title.get_text().strip():
                problems.append(Problem("the <title> is empty", location="selector 'title'"))
        for selector, compiled in self._required:
            if compiled.select_one(soup) is None:
                problems.append(Problem(f"required selector {selector!r} matches no element",
                                        location=f"selector {selector!r}"))
        if self.rules.min_text_chars:
            count = len(visible_text(soup))
            if count < self.rules.min_text_chars:
                problems.append(Problem(f"visible text is {count} characters, fewer than the "
                                        f"{self.rules.min_text_chars} required", location="visible text"))
        return _capped(problems)


def visible_text(soup: BeautifulSoup) -> str:
    """The text a reader sees, whitespace runs collapsed. Removes hidden elements from ``soup``."""
    root = soup.body if isinstance(soup.body, Tag) else soup
    for element in root.find_all(HIDDEN_TAGS):
        element.decompose()
    return " ".join(root.get_text(" ").split())


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS_PER_FILE:
        return problems
    more = len(problems) - MAX_PROBLEMS_PER_FILE
    return [*problems[:MAX_PROBLEMS_PER_FILE], Problem(f"{more} more problem(s) found, not listed")]
