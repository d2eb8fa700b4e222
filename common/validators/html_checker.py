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

Pages are read by :func:`common.html_tree.query_html`, which reads any HTML without
failing, takes the encoding from the BOM, ``<meta charset>`` or the bytes, and keeps
memory within its bound: a page over that bound is one problem (location ``document``)
and is not checked further. When every ``required`` selector is streamable (names,
classes, ids, attributes, descendant and child combinators) the page is checked in one
streaming pass, without its tree; otherwise on the tree. At most :data:`~common.problems.MAX_PROBLEMS_PER_FILE`
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
    HtmlFindings,
    HtmlQuery,
    HtmlTooLarge,
    compile_css,
    query_html,
    tree_findings,
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

        self.query = HtmlQuery(present=tuple(css for _, css in self._required), title=rules.require_title,
                               text_chars=rules.min_text_chars)
        """What the rules need to know of a page (a caller reading the page anyway adds it to its own query)."""

    def check(self, path: Path) -> list[Problem]:
        """Problems of the HTML file at ``path``; empty when it passes every rule."""
        try:
            return self.judge(query_html(Path(path), self.query))
        except HtmlTooLarge as exc:
            return [Problem(f"not checked: {exc}", location="document")]

    def check_tree(self, root: Any) -> list[Problem]:
        """Problems of a document already parsed by :func:`~common.html_tree.parse_html`."""
        return self.judge(tree_findings(root, self.query))

    def judge(self, findings: HtmlFindings) -> list[Problem]:
        """Problems of a page whose :attr:`query` (or a query including it: the web crawl asks
        for its links and fields in the same pass) was answered with ``findings``."""
        problems: list[Problem] = []
        if self.rules.require_title:
            if findings.title is None:
                problems.append(Problem("no <title> element", location="selector 'title'"))
            elif not findings.title:
                problems.append(Problem("the <title> is empty", location="selector 'title'"))
        for (selector, _), present in zip(self._required, findings.present, strict=True):
            if not present:
                problems.append(Problem(f"required selector {selector!r} matches no element",
                                        location=f"selector {selector!r}"))
        if self.rules.min_text_chars:
            count = findings.text_chars
            if count < self.rules.min_text_chars:
                problems.append(Problem(f"visible text is {count} characters, fewer than the "
                                        f"{self.rules.min_text_chars} required", location="visible text"))
        return capped(problems)
