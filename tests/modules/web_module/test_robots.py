"""robots.txt through Protego (RFC 9309): wildcards and ``$``, the longest match, Crawl-delay; the
rules as ``RobotsRules`` reads them, then a crawl of a real site obeying them."""

from __future__ import annotations

from pathlib import Path
from urllib.robotparser import RobotFileParser

import pytest

from common.interfaces.base_module import FetchedFile
from modules.web_module.robots import MAX_CRAWL_DELAY_S, RobotsRules
from tests.modules.web_module.test_web_module import FOLLOW, Page, Site, crawl, html, make_ctx, uris

RFC_RULES = """\
User-agent: *
Disallow: /*.pdf$
Disallow: /p/
Allow: /p/ok
Crawl-delay: 0.25

User-agent: strictbot
Disallow: /
"""


def rules_of(text: str, status: int = 200, user_agent: str = "module_system-test",
             delays: list[tuple[str, float]] | None = None) -> RobotsRules:
    """RobotsRules over a robots.txt answer given as it arrives (status, text)."""
    def fetch(url: str) -> tuple[int, str]:
        assert url.endswith("/robots.txt")
        return status, text

    return RobotsRules(user_agent, fetch, on_crawl_delay=(lambda o, d: delays.append((o, d))) if delays is not None
                       else None)


@pytest.mark.parametrize(("path", "allowed"), [
    ("/doc.pdf", False), ("/deep/er/doc.pdf", False), ("/doc.pdf?download=1", True), ("/doc.pdfx", True),
    ("/p/ok", True), ("/p/ok/more.html", True), ("/p/other.html", False), ("/p/", False), ("/", True),
    ("/page.html", True),
])
def test_wildcards_dollar_and_the_longest_match(path: str, allowed: bool) -> None:
    assert rules_of(RFC_RULES).allowed("http://example.test" + path) is allowed


def test_the_standard_library_parser_got_these_wrong() -> None:
    """Why Protego: urllib.robotparser takes rules in file order and knows no wildcard."""
    stdlib = RobotFileParser()
    stdlib.parse(RFC_RULES.splitlines())
    assert stdlib.can_fetch("module_system-test", "http://example.test/doc.pdf") is True  # RFC 9309: disallowed
    assert stdlib.can_fetch("module_system-test", "http://example.test/p/ok") is False    # RFC 9309: allowed


def test_a_group_for_the_user_agent_wins_over_star() -> None:
    rules = rules_of(RFC_RULES, user_agent="strictbot")
    assert not rules.allowed("http://example.test/page.html")
    assert rules.crawl_delay("http://example.test/") is None


def test_crawl_delay_is_read_and_handed_over_once_per_origin_capped() -> None:
    delays: list[tuple[str, float]] = []
    rules = rules_of(RFC_RULES, delays=delays)
    assert rules.crawl_delay("http://example.test/x") == 0.25
    assert rules.allowed("http://example.test/a") and rules.allowed("http://example.test/b")
    assert delays == [("http://example.test", 0.25)]
    slow: list[tuple[str, float]] = []
    rules_of("User-agent: *\nCrawl-delay: 3600\n", delays=slow).allowed("http://slow.test/")
    assert slow == [("http://slow.test", MAX_CRAWL_DELAY_S)]


@pytest.mark.parametrize(("status", "allowed"), [(401, False), (403, False), (404, True), (410, True)])
def test_answers_without_rules(status: int, allowed: bool) -> None:
    assert rules_of("User-agent: *\nDisallow: /\n" if status == 200 else "", status=status).allowed(
        "http://example.test/page.html") is allowed


def test_a_crawl_obeys_the_rules_and_the_crawl_delay(tmp_path: Path) -> None:
    with Site({
        "/robots.txt": Page(RFC_RULES, headers={"Content-Type": "text/plain"}),
        "/index.html": Page(html("Index", links=("/report.pdf", "/p/ok", "/p/secret.html", "/a.html"))),
        "/report.pdf": Page(b"%PDF-1.4", headers={"Content-Type": "application/pdf"}),
        "/p/ok": Page(html("OK")),
        "/p/secret.html": Page(html("Secret")),
        "/a.html": Page(html("A")),
    }) as site:
        ctx = make_ctx()
        files = crawl(tmp_path, [site.url + "/index.html"], ctx=ctx, follow=FOLLOW)
        assert sorted(site.paths()) == ["/a.html", "/index.html", "/p/ok", "/robots.txt"]
        assert sorted(uris(files)) == sorted(site.url + p for p in ("/index.html", "/p/ok", "/a.html"))
        assert all(isinstance(f, FetchedFile) for f in files)
        assert ctx.hosts.limiters.get(site.url).delay_s == 0.25, "Crawl-delay became the host's politeness delay"
