"""Links of an index page (an Apache/nginx autoindex, an S3-style HTML listing, a vendor's download page).

:func:`index_links` reads the ``<a href>`` of a page and keeps those that point *below* the
folder of the index URL (wget's ``--no-parent`` rule, as rclone's ``http`` backend does): a
link to ``../``, to another host, to the page itself or to a sort order (``?C=N;O=D``) is not
a file of the listing. A link ending in ``/`` is a sub-folder (walked when ``recursive``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import lxml.html

from modules.web_module.pages import normalize_url

__all__ = ["IndexLink", "folder_of", "index_links", "relative_name"]


@dataclass(frozen=True)
class IndexLink:
    url: str
    """Absolute, normalised, without a fragment."""
    folder: bool
    """The link ends in ``/``: a sub-index, not a file."""


def folder_of(url: str) -> str:
    """The folder URL of ``url`` (itself when it ends in ``/``), without query."""
    parts = urlsplit(url)
    path = parts.path if parts.path.endswith("/") else parts.path.rsplit("/", 1)[0] + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def relative_name(url: str, root: str) -> str:
    """The file name of ``url`` below the folder URL ``root``: its path relative to it, percent
    escapes decoded (``2026/11/a%20b.csv`` -> ``2026/11/a b.csv``)."""
    path, base = urlsplit(url).path, urlsplit(root).path
    rel = path[len(base):] if path.startswith(base) else path.rsplit("/", 1)[-1]
    return unquote(rel.strip("/"))


def index_links(html: bytes, page_url: str, root: str) -> Iterator[IndexLink]:
    """The links of the index page ``html`` (fetched from ``page_url``) below the folder ``root``,
    each once, in document order. A page lxml cannot parse has none."""
    try:
        document = lxml.html.document_fromstring(html, base_url=page_url)
    except (lxml.etree.ParserError, ValueError):
        return
    seen: set[str] = set()
    page = normalize_url(page_url)
    for href in document.xpath("//a/@href"):
        url = normalize_url(str(href).split("#", 1)[0], page_url)
        if url is None or url == page or url in seen or not url.startswith(root) or url == root:
            continue
        parts = urlsplit(url)
        if parts.query:  # autoindex sort links (?C=N;O=D), search forms: not files
            continue
        seen.add(url)
        yield IndexLink(url, folder=parts.path.endswith("/"))
