"""common.html_tree: the parse bound, encodings, text, and CSS selectors held to soupsieve's verdicts.

The selectors ran on BeautifulSoup trees (soupsieve) before; a differential test keeps the
lxml/cssselect translation (combinators right to left, fixed positions as positional steps)
matching the same elements on generated documents. Another holds the streaming pass of
``query_html`` to the answers of the tree on the same documents.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import soupsieve
from bs4 import BeautifulSoup

from common.html_tree import (
    MAX_HTML_BYTES,
    MAX_HTML_DEPTH,
    MAX_HTML_NODES,
    HtmlQuery,
    HtmlTooLarge,
    compile_css,
    element_text,
    parse_html,
    query_html,
    tree_findings,
    visible_text_length,
)

SELECTORS = [
    "a", "a.article", "div p", "div > p", "p + p", "p ~ span", "div div a", "ul > li a", "section p + ul li",
    "ul li:first-child", "li:last-child", "li:nth-child(2)", "li:nth-child(2n+1)", "li:nth-child(odd)",
    "li:nth-child(even)", "li:nth-child(-n+2)", "li:nth-last-child(2)", "p:only-child", "li:nth-of-type(3)",
    "span:first-of-type", "span:last-of-type", "span:only-of-type", "p:first-child + p", "[data-x]",
    "[data-x='1']", "[class~=b]", "a[href^='http']", "a[href$='.pdf']", "a[href*='x']", "[lang|=en]",
    "div:has(> p)", "div:has(span)", ":is(h1, h2)", "p:not(.a)", "div p:not(:first-child)", "#main a",
    "body > div > p + p", "html", ":root", "section > :nth-child(3)", "div.a.b", "A[HREF]", "DIV P",
    "li:last-of-type", "div ~ div > p:last-child", "section ul:first-of-type li:nth-child(2) a",
]


def random_document(seed: int) -> str:
    """A nested document of div/section/p/span/ul/li/a/h1/h2 with classes, links and a data-n
    attribute numbering every element, so that matches can be compared by number."""
    rng = random.Random(seed)
    counter = iter(range(1, 10_000))

    def element(depth: int) -> str:
        tag = rng.choice(["div", "section", "p", "span", "ul", "a", "h1", "h2"] if depth < 5 else ["span", "a", "p"])
        attrs = f' data-n="{next(counter)}"'
        if rng.random() < 0.5:
            attrs += f' class="{" ".join(rng.sample(["a", "b", "article", "c"], rng.randint(1, 2)))}"'
        if rng.random() < 0.2:
            attrs += f' data-x="{rng.randint(0, 2)}"'
        if rng.random() < 0.1:
            attrs += f' lang="{rng.choice(["en", "en-GB", "fr"])}"'
        if tag == "a":
            attrs += f' href="{rng.choice(["http://x.example/a", "/doc.pdf", "mailto:z", "#top"])}"'
        if tag == "ul":
            items = "".join(f'<li data-n="{next(counter)}">item <a data-n="{next(counter)}" href="/i{i}">{i}</a></li>'
                            for i in range(rng.randint(1, 5)))
            return f"<ul{attrs}>{items}</ul>"
        if tag in ("p", "span", "a", "h1", "h2") or depth >= 5:
            inner = "".join(element(depth + 1) for _ in range(rng.randint(0, 2))) if tag == "span" and depth < 5 else ""
            return f"<{tag}{attrs}>text {rng.randint(0, 99)} {inner}</{tag}>"
        return f"<{tag}{attrs}>" + "".join(element(depth + 1) for _ in range(rng.randint(1, 4))) + f"</{tag}>"

    body = "".join(element(0) for _ in range(6))
    return f'<!doctype html><html><head><title>t</title></head><body><div id="main" data-n="0">{body}</div></body></html>'


@pytest.mark.parametrize("seed", range(12))
def test_selectors_match_what_soupsieve_matched(tmp_path: Path, seed: int) -> None:
    html = random_document(seed)
    path = tmp_path / "doc.html"
    path.write_text(html)
    root = parse_html(path)
    soup = BeautifulSoup(html.encode(), "lxml")
    for selector in SELECTORS:
        ours = [e.get("data-n", e.tag) for e in compile_css(selector).select(root)]
        theirs = [e.get("data-n", e.name) for e in soupsieve.select(selector, soup)]
        assert ours == theirs, f"{selector!r} on document {seed}"
        first = compile_css(selector).select_one(root)
        assert (first.get("data-n", first.tag) if first is not None else None) == (theirs[0] if theirs else None)


def test_text_matches_beautifulsoups_get_text(tmp_path: Path) -> None:
    html = ("<html><head><title> The \n title </title></head><body><div id='d'>a <b>b</b>\tc"
            "<script>s()</script><style>p{}</style><template>t<p>u</p></template><noscript>n</noscript>"
            "<ruby>漢<rt>kan</rt><rp>(</rp></ruby><!-- c --><textarea>x</textarea>tail</div>"
            "<script id='s'>var x = 1;</script></body></html>")
    path = tmp_path / "t.html"
    path.write_text(html)
    root, soup = parse_html(path), BeautifulSoup(html.encode(), "lxml")
    for selector in ("#d", "title", "#s", "template", "body"):
        expected = " ".join(soupsieve.select_one(selector, soup).get_text(" ").split())
        assert element_text(compile_css(selector).select_one(root)) == expected, selector


def test_visible_text_length_skips_hidden_elements_and_stops_when_enough(tmp_path: Path) -> None:
    path = tmp_path / "v.html"
    path.write_text("<html><head><title>not counted</title></head><body><script>hidden()</script>"
                    "<p>one  two</p><noscript>hidden</noscript><p>three</p></body></html>")
    root = parse_html(path)
    assert visible_text_length(root) == len("one two three")
    assert visible_text_length(root, enough=3) == 3


@pytest.mark.parametrize(("data", "text"), [
    ("<p>caf\u00e9 \u20ac</p>".encode(), "caf\u00e9 \u20ac"),                                # undeclared UTF-8
    ("<p>caf\u00e9 \u20ac</p>".encode("cp1252"), "caf\u00e9 \u20ac"),                        # not UTF-8: windows-1252
    ('<meta charset="koi8-r"><p>\u043c\u0438\u0440</p>'.encode("koi8-r"), "\u043c\u0438\u0440"),  # declared
    ("\ufeff<p>caf\u00e9</p>".encode("utf-16"), "caf\u00e9"),                                # byte order mark
    ('<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"><p>\u00e9t\u00e9</p>'.encode("latin-1"),
     "\u00e9t\u00e9"),
])
def test_encodings(tmp_path: Path, data: bytes, text: str) -> None:
    path = tmp_path / "e.html"
    path.write_bytes(data)
    assert element_text(compile_css("p").select_one(parse_html(path))) == text


def test_the_parse_bound(tmp_path: Path) -> None:
    path = tmp_path / "b.html"
    path.write_bytes(b" " * (MAX_HTML_BYTES + 1))
    with pytest.raises(HtmlTooLarge, match=f"over {MAX_HTML_BYTES} bytes"):
        parse_html(path)
    path.write_text("<html><body>" + "<br>x" * (MAX_HTML_NODES // 2 + 20_000) + "</body></html>")
    with pytest.raises(HtmlTooLarge, match=f"more than {MAX_HTML_NODES} nodes"):
        parse_html(path)
    path.write_text("<html><body>" + "<div>" * MAX_HTML_DEPTH + "deep" + "</div>" * MAX_HTML_DEPTH + "</body></html>")
    with pytest.raises(HtmlTooLarge, match="nested deeper"):
        parse_html(path)
    path.write_text("<html><body>" + "<div>" * (MAX_HTML_DEPTH - 3) + "x" + "</div>" * (MAX_HTML_DEPTH - 3)
                    + "<p>after</p></body></html>")
    assert element_text(compile_css("p").select_one(parse_html(path))) == "after"
    path.write_bytes(b"")
    assert parse_html(path).tag == "html"


def test_invalid_or_unsupported_selectors_are_value_errors() -> None:
    for selector in ("a[[[", "p::before", "p:-soup-contains('x')", ""):
        with pytest.raises(ValueError, match="invalid CSS selector"):
            compile_css(selector)


STREAMABLE = ["a", "a.article", "div p", "div > p", "div div a", "ul > li a", "[data-x]", "[data-x='1']", "[class~=b]",
              "a[href^='http']", "a[href$='.pdf']", "a[href*='x']", "[lang|=en]", ":is(h1, h2)", "p:not(.a)", "#main a",
              "html", "div.a.b", "A[HREF]", "DIV P", "*", "body > div span", "title", "a, span.c", "template p"]
NOT_STREAMABLE = ["p + p", "p ~ span", "li:first-child", "li:nth-child(2)", "div:has(> p)", "div p:not(:first-child)",
                  ":root", "p:empty", ":not(div p)"]
#: Documents with the corners of the text and link rules: hidden elements, no body, text after
#: the body, nested link matches without href, a <base> after the links, only white space.
CORNERS = [
    ("<html><head><title> The \n title </title></head><body><div id='d'>a <b>b</b>\tc<script>s()</script>"
    "<style>p{}</style><template>t<p>u</p></template><noscript>n</noscript><ruby>x<rt>kan</rt><rp>(</rp></ruby>"
    "<!-- c --><textarea>x</textarea>tail</div><script id='s'>var x = 1;</script></body></html>"),
    "<title>only a title</title>", "<title>t</title><p>one <a href=x>two</a> three",
    "<html><body><p>in</p></body></html><p>after body</p> trailing words", "", "   ", "plain text, no tags",
    ("<html><head><title>x</title></head><body><div class=w><a href='/1'>1</a><span><a href='/2'>2</a><a>no</a></span>"
    "</div><div class=w><div class=w><a href=/3>3</a></div></div><base href='http://b/'></body></html>"),
    "<html><head><title></title></head><body><template><body>x</body></template>text</body></html>",
    "<table><tr><td>a<td>b<tr><td>c</table>tail<ul><li>one<li>two</ul>",
]


def test_streamable_selectors_are_told_apart() -> None:
    assert [s for s in STREAMABLE if not compile_css(s).streamable] == []
    assert [s for s in NOT_STREAMABLE if compile_css(s).streamable] == []


@pytest.mark.parametrize("seed", range(-len(CORNERS), 24))
def test_the_streaming_pass_answers_as_the_tree_does(tmp_path: Path, seed: int) -> None:
    """Links, first texts, present selectors, title and visible text: the same answers from the
    streaming pass (nothing kept but open elements) as from the whole tree."""
    html = CORNERS[seed] if seed < 0 else random_document(seed)
    if seed % 3 == 0:
        html = html.replace("<head>", "<head><base href='/sub/'>")
    if seed % 4 == 1:
        html = html.replace("<body>", "<body>lead <script>x y</script> after <noscript>n n</noscript> more")
    if seed % 5 == 2:
        html = html.replace("<title>t</title>", "")
    path = tmp_path / "doc.html"
    path.write_text(html)
    root = parse_html(path)
    h1 = compile_css("h1")
    for selector in STREAMABLE:
        css = compile_css(selector)
        for enough in (1, 60, 10**9):
            query = HtmlQuery(links=css, texts={"first": css, "h1": h1}, present=(css, h1), title=True,
                              text_chars=enough)
            tree, streamed = tree_findings(root, query), query_html(path, query, stream=True)
            assert streamed.hrefs == tree.hrefs and streamed.base_href == tree.base_href, selector
            assert streamed.texts == tree.texts and streamed.present == tree.present, selector
            assert streamed.title == tree.title, selector
            # the count is exact below `enough`; at or over it, both only say "enough"
            assert min(streamed.text_chars, enough) == min(tree.text_chars, enough), (selector, enough)


def test_the_streaming_pass_keeps_the_bound(tmp_path: Path) -> None:
    """The same documents over the node and nesting bounds raise the same errors streamed."""
    query = HtmlQuery(links=compile_css("a"), text_chars=10)
    path = tmp_path / "b.html"
    path.write_text("<html><body>" + "<br>x" * (MAX_HTML_NODES // 2 + 20_000) + "</body></html>")
    with pytest.raises(HtmlTooLarge, match=f"more than {MAX_HTML_NODES} nodes"):
        query_html(path, query, stream=True)
    path.write_text("<html><body>" + "<div>" * MAX_HTML_DEPTH + "deep" + "</div>" * MAX_HTML_DEPTH + "</body></html>")
    with pytest.raises(HtmlTooLarge, match="nested deeper"):
        query_html(path, query, stream=True)
    path.write_text("<html><body>" + "<a href=/x>x</a>" * 10 + "<p>" + "word " * 400_000 + "</p></body></html>")
    assert path.stat().st_size > 1024 * 1024  # a large document: streamed without being asked
    found = query_html(path, HtmlQuery(links=compile_css("a"), texts={"p": compile_css("p")}, text_chars=10))
    assert found.hrefs == ("/x",) * 10 and found.texts["p"] == " ".join(["word"] * 400_000)
