"""The ``.html`` checker: required CSS selectors, visible text length and a title.

Rules (``validate.html``, see :class:`~common.config_model.HtmlRules`):

``required``
    CSS selectors (:func:`common.html_tree.compile_css`) that must each match at least
    one element. Each miss is one problem whose location names the selector.
``min_text_chars``
    Least characters of visible text: the text of ``<body>`` (the whole document when
    there is none) without ``script``, ``style``, ``noscript`` and ``template``
    elements or comments, whitespace runs counted as one space.
``require_title``
    A ``<title>`` with non-blank text.

Pages are parsed by :func:`common.html_tree.read_html`, which reads any HTML without
failing, takes the encoding from the BOM, ``<meta charset>`` or the bytes, and keeps
memory within its bound: a page over that bound is one problem (location ``document``)
and is not checked further. At most :data:`~common.problems.MAX_PROBLEMS_PER_FILE`
problems are kept; one last problem tells how many more were found. The selectors are
compiled once; one checker is shared by every job and thread of the process (checks keep
no state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config_model import HtmlRules
from common.exceptions import ConfigError
from common.html_tree import (
    HIDDEN_TAGS,
    Css,
    HtmlTooLarge,
    compile_css,
    element_text,
    read_html,
    visible_text_length,
)
from common.problems import Problem, capped

__all__ = ["HIDDEN_TAGS", "HtmlChecker"]


class HtmlChecker:
    """One compiled ``validate.html`` section.

    Raises :class:`~common.exceptions.ConfigError` naming ``validate.html.required[i]``
    when a selector is not valid CSS.
    """

    def __init__(self, rules: HtmlRules) -> None:
        self.rules = rules
        self._required: list[tuple[str, Css]] = []
        for index, selector in enumerate(rules.required):
            try:
                self._required.append((selector, compile_css(selector)))
            except ValueError as exc:
                raise ConfigError(f"validate.html.required[{index}]: {exc}",
                                  key=f"validate.html.required[{index}]") from None

    def check(self, path: Path) -> list[Problem]:
        """Problems of the HTML file at ``path``; empty when it passes every rule."""
        try:
            return read_html(Path(path), self.check_tree)
        except HtmlTooLarge as exc:
            return [Problem(f"not checked: {exc}", location="document")]

    def check_tree(self, root: Any) -> list[Problem]:
        """Problems of a document already parsed by :func:`~common.html_tree.parse_html` (a
        caller that parses the page anyway, as the web crawl does, checks it on the same tree)."""
        problems: list[Problem] = []
        if self.rules.require_title:
            title = root.find(".//title")
            if title is None:
                problems.append(Problem("no <title> element", location="selector 'title'"))
            elif not element_text(title):
                problems.append(Problem("the <title> is empty", location="selector 'title'"))
        for selector, compiled in self._required:
            if compiled.select_one(root) is None:
                problems.append(Problem(f"required selector {selector!r} matches no element",
                                        location=f"selector {selector!r}"))
        if self.rules.min_text_chars:
            count = visible_text_length(root, enough=self.rules.min_text_chars)
            if count < self.rules.min_text_chars:
                problems.append(Problem(f"visible text is {count} characters, fewer than the "
                                        f"{self.rules.min_text_chars} required", location="visible text"))
        return capped(problems)
