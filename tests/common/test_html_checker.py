"""HtmlChecker: required selectors, visible text, the title, encodings, the cap, and ValidatorSet routing."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config_model import HtmlRules, ValidateConfig
from common.exceptions import ConfigError
from common.interfaces.base_module import FetchedFile
from common.problems import MAX_PROBLEMS_PER_FILE, Problem
from common.validators import ValidatorSet
from common.validators.html_checker import HtmlChecker

GOOD = """<!doctype html><html><head><title>Morning news</title></head><body>
<article class="story"><h1>Rain expected</h1><p>Clouds gather over the valley by noon.</p></article>
</body></html>"""


def rules(required: tuple[str, ...] = (), min_text_chars: int = 0, require_title: bool = True) -> HtmlRules:
    return HtmlRules(required=required, min_text_chars=min_text_chars, require_title=require_title)


def check(tmp_path: Path, content: str | bytes, **kw: object) -> list[Problem]:
    path = tmp_path / "page.html"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return HtmlChecker(rules(**kw)).check(path)  # type: ignore[arg-type]


def test_valid_page_has_no_problems(tmp_path: Path) -> None:
    assert check(tmp_path, GOOD, required=("title", "article.story h1", "p"), min_text_chars=40) == []


def test_each_missing_selector_is_named(tmp_path: Path) -> None:
    problems = check(tmp_path, GOOD, required=("article h1", "div.byline", "article > footer a[href]"))
    assert [p.location for p in problems] == ["selector 'div.byline'", "selector 'article > footer a[href]'"]
    assert "'div.byline'" in problems[0].message and "matches no element" in problems[0].message


@pytest.mark.parametrize(("head", "message"), [
    ("", "no <title> element"),
    ("<title>  \n </title>", "the <title> is empty"),
])
def test_title_required(tmp_path: Path, head: str, message: str) -> None:
    page = f"<html><head>{head}</head><body><p>text</p></body></html>"
    assert check(tmp_path, page) == [Problem(message, "selector 'title'")]
    assert check(tmp_path, page, require_title=False) == []


def test_visible_text_excludes_hidden_elements_and_comments(tmp_path: Path) -> None:
    hidden = "x" * 500
    page = (f"<html><head><title>Only the title</title><style>p {{color: red}} /*{hidden}*/</style></head><body>"
            f"<script>var s = '{hidden}';</script><noscript>{hidden}</noscript><template><p>{hidden}</p></template>"
            f"<!-- {hidden} --><p>Twelve   chars\n here</p></body></html>")
    problems = check(tmp_path, page, min_text_chars=30)
    assert problems == [Problem("visible text is 17 characters, fewer than the 30 required", "visible text")]
    assert check(tmp_path, page, min_text_chars=17) == []


def test_declared_encoding_is_honoured(tmp_path: Path) -> None:
    page = ('<html><head><meta charset="iso-8859-1"><title>Caf\xe9</title></head>'
            "<body><h1>\xe9t\xe9</h1></body></html>").encode("latin-1")
    assert check(tmp_path, page, required=("h1",), min_text_chars=3) == []


def test_garbage_and_empty_files_are_problems_not_crashes(tmp_path: Path) -> None:
    assert [p.location for p in check(tmp_path, b"", required=("h1",), min_text_chars=1)] == [
        "selector 'title'", "selector 'h1'", "visible text"]
    assert check(tmp_path, b"\x00\xff\xfe<<<>>>", required=("h1",))


def test_problems_are_capped(tmp_path: Path) -> None:
    required = tuple(f"div.c{i}" for i in range(MAX_PROBLEMS_PER_FILE + 50))
    problems = check(tmp_path, GOOD, required=required)
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 1
    assert problems[-1].message == "50 more problems found; only the first 100 are listed"


def test_invalid_selector_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"validate\.html\.required\[1\].*'a\['"):
        HtmlChecker(rules(required=("h1", "a[")))


def test_validator_set_routes_html_files(tmp_path: Path) -> None:
    vs = ValidatorSet(ValidateConfig(json_schema_path=None, json_schema=None, csv=None,
                                     html=rules(required=("h1",))))
    page = tmp_path / "p.html"
    page.write_text("<html><title>t</title><body>no heading</body></html>")
    for name in ("site/p.html", "site/P.HTM"):
        problems = vs.check(FetchedFile(page, name, "http://h/p", page.stat().st_size, "0" * 64))
        assert [p.location for p in problems] == ["selector 'h1'"]
    assert vs.check(FetchedFile(page, "p.txt", "http://h/p", 1, "0" * 64)) is None  # no rule checks it
    assert vs.suffixes() == (".html", ".htm")


def test_one_checker_is_shared_between_threads(tmp_path: Path) -> None:
    import threading

    checker = HtmlChecker(rules(required=("h1",), min_text_chars=10))
    good, bad = tmp_path / "good.html", tmp_path / "bad.html"
    good.write_text(GOOD)
    bad.write_text("<html><title>t</title></html>")
    results: list[tuple[int, int]] = []

    def work() -> None:
        for _ in range(20):
            results.append((len(checker.check(good)), len(checker.check(bad))))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {(0, 2)}
