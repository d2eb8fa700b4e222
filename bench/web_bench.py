"""The web row: one ``type: web`` job crawling a local site, against Scrapy on the same site.

The site (:class:`SiteServer`, ``python -m bench.servers web``, a process of its own): a
``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, ``disable_nagle_algorithm``: headers and
body go out in two writes, which Nagle's algorithm and the client's delayed ACK would
hold back ~40 ms) serving ``--pages`` pages of ~20 KB from memory, ``/p/0.html`` to
``/p/<N-1>.html``. Page ``i`` has an ``article`` (a title, an ``h1`` and paragraphs of
seeded words) and a ``nav`` linking its children ``10i+1 .. 10i+10``, its parent and the
home page, so a crawl from ``/p/0.html`` reaches every page within 4 hops and meets each
URL several times. Besides: ``/big.html`` (a table of ``--big-mb`` MB, one followed link a
row, as tests/e2e/test_large_page.py builds it) and ``/small.html``.

Clients, each a child process:

* ``module_system``: one job, ``transfers: 16``, ``limits.max_connections: 16``, no delay,
  ``obey_robots: false``, ``follow: {selector: "nav a"}`` without a page or depth cut that
  binds, ``validate.html`` (``title``, ``article h1``, 200 characters of text), every page
  landed in S3. Checked: every page uploaded once, none rejected. ``ms_local``: the same job
  landing in a local folder (``destination: {type: local}``), as Scrapy writes to local disk.
* ``scrapy``: :mod:`bench.scrapy_crawl`, a ``CrawlSpider`` following the ``nav`` links,
  ``CONCURRENT_REQUESTS=16``, ``CONCURRENT_REQUESTS_PER_DOMAIN=16``, ``DOWNLOAD_DELAY=0``,
  ``ROBOTSTXT_OBEY=False``, each page written to local disk. Checked: every page written.
* ``ms_page_10mb``: one job crawling ``/big.html`` with three of its links followed, an
  ``extract`` record and ``validate.html`` + a JSON Schema for the record (the settings of
  tests/e2e/test_large_page.py, but for its table rule); its peak RSS is the figure. ``ms_page_small``: the same job
  on ``/small.html``, the baseline.

The ratio is pages per second over the whole process (start-up included for both).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.measure import Sample, landed, landed_files, run_process
from bench.rows import CliRun, Row, RowContext, destination, file_totals, to_row_sample
from bench.servers import REPO

__all__ = ["SiteServer", "WebRow", "big_page", "site_pages"]

SEED = 20261203
PAGE_BYTES = 20_000
FANOUT = 10
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
          "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")
RECORD_SCHEMA = {"type": "object", "required": ["headline"], "properties": {"headline": {"type": "string"}}}


def site_pages(count: int) -> dict[str, bytes]:
    """``/p/<i>.html`` for ``i < count``: ~20 KB each, linked as a tree of fan-out 10 (see the module docstring)."""
    pages = {}
    for i in range(count):
        rng = random.Random(f"{SEED}-{i}")
        links = [c for c in range(FANOUT * i + 1, FANOUT * i + FANOUT + 1) if c < count]
        links += [0, (i - 1) // FANOUT] if i else []
        nav = "".join(f'<a href="/p/{c}.html">page {c}</a> ' for c in links)
        head = (f"<!DOCTYPE html><html><head><title>Page {i}</title></head><body><article>"
                f"<h1>Item {i}</h1>")
        tail = f"</article><nav>{nav}</nav></body></html>\n"
        paragraphs, size = [], len(head) + len(tail)
        while size < PAGE_BYTES:
            text = " ".join(rng.choice(_WORDS) for _ in range(60))
            paragraph = f"<p>{text}.</p>\n"
            paragraphs.append(paragraph)
            size += len(paragraph)
        pages[f"/p/{i}.html"] = (head + "".join(paragraphs) + tail).encode()
    return pages


def big_page(size: int) -> bytes:
    """A table of rows with one followed link each, ``size`` bytes or a little more: the page of
    tests/e2e/test_large_page.py."""
    from tests.e2e.test_large_page import big_page as page

    return page(size).encode()


def small_page() -> bytes:
    return ("<html><head><title>Small</title></head><body><article><h1>One item</h1>"
            "<p>The one item of this page, described in enough words to pass.</p><table>"
            + "".join(f'<tr><td><a class="article" href="/p/{i}.html">Item {i}</a></td></tr>' for i in range(3))
            + "</table></article></body></html>").encode()


class SiteServer:
    """The site (see the module docstring), on 127.0.0.1, a random port, in daemon threads."""

    def __init__(self, pages: int, big_mb: float) -> None:
        routes = site_pages(pages)
        routes["/big.html"] = big_page(int(big_mb * 1_000_000))
        routes["/small.html"] = small_page()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                body = routes.get(self.path.split("?", 1)[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 128
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="site")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WebRow(Row):
    name = "WEB"
    clients = ("module_system", "ms_local", "scrapy", "ms_page_10mb", "ms_page_small")
    PAGES, PAGES_QUICK, BIG_MB = 2000, 200, 10.0
    CONCURRENCY = 16

    def __init__(self, ctx: RowContext) -> None:
        super().__init__(ctx)
        self.pages = self.PAGES_QUICK if ctx.quick else self.PAGES
        self.page_bytes = sum(len(b) for b in site_pages(self.pages).values())

    def prepare(self) -> None:
        self.site = self.ctx.servers.start("web", "--pages", str(self.pages), "--big-mb", str(self.BIG_MB))
        self.url = self.site.info["url"]

    def run(self, client: str, repeat: int, wrap: Sequence[str] = ()) -> Sample:
        if client == "scrapy":
            return self.run_scrapy(repeat)
        if client in ("module_system", "ms_local"):
            return self.run_crawl(repeat, wrap, local=client == "ms_local")
        return self.run_page(client, repeat, wrap)

    def run_crawl(self, repeat: int, wrap: Sequence[str], local: bool = False) -> Sample:
        """The crawl, landing in S3 (``module_system``) or, as Scrapy does, in a local folder (``ms_local``)."""
        client = "ms_local" if local else "module_system"
        bucket = self.bucket(client, repeat)
        folder = self.dir / f"{client}-{repeat}-landing"
        shutil.rmtree(folder, ignore_errors=True)
        service: dict[str, Any] = {
            "type": "web", "transfers": self.CONCURRENCY, "limits": {"max_connections": self.CONCURRENCY},
            "source": {"urls": [f"{self.url}/p/0.html"], "obey_robots": False,
                       "follow": {"selector": "nav a", "max_pages": self.pages, "max_depth": 20}},
            "validate": {"html": {"required": ["title", "article h1"], "min_text_chars": 200}},
        }
        if local:
            service["destination"] = {"type": "local", "path": str(folder)}
        cli = CliRun(self.dir, f"{client}-{repeat}", self.registry({"bench_web": service}),
                     [{"job_id": "crawl", "service_id": "bench_web"}])
        result, report = cli.run(self.ctx.servers, {"BENCH_BUCKET": bucket}, wrap=wrap, source=self.site)
        files = file_totals(report)
        objects = landed_files(folder) if local else landed(self.ctx.servers.client(), bucket)
        under = [k for k in objects if k.startswith("data/web/bench_web/scraped/")]
        ok = (result.exit_code == 0 and files.get("uploaded") == self.pages and not files.get("rejected")
              and len(under) == len(objects) == self.pages)
        note = f"{files.get('uploaded')} pages landed, {files.get('rejected', 0)} rejected, {len(objects)} files"
        if ok:
            cli.discard()
            shutil.rmtree(folder, ignore_errors=True)
        return to_row_sample(result, self.name, client, repeat, self.pages, self.page_bytes, ok, note,
                             file_statuses=files)

    def run_page(self, client: str, repeat: int, wrap: Sequence[str]) -> Sample:
        """One job on ``/big.html`` (``ms_page_10mb``) or ``/small.html``: 1 page, 3 followed, 4 records."""
        bucket = self.bucket(client, repeat)
        page = "big" if client == "ms_page_10mb" else "small"
        service = {
            "type": "web",
            "source": {"urls": [f"{self.url}/{page}.html"], "obey_robots": False,
                       "follow": {"selector": "a.article", "max_pages": 3}, "extract": {"headline": "article h1"}},
            "validate": {"html": {"required": ["title", "article h1"], "min_text_chars": 40},
                         "json_schema": "record.schema.json"},
        }
        cli = CliRun(self.dir, f"{client}-{repeat}", self.registry({"bench_page": service}),
                     [{"job_id": page, "service_id": "bench_page"}], files={"record.schema.json": RECORD_SCHEMA})
        result, report = cli.run(self.ctx.servers, {"BENCH_BUCKET": bucket}, wrap=wrap, source=self.site)
        files = file_totals(report)
        # the page and its record, 3 followed pages and theirs
        ok = result.exit_code == 0 and files.get("uploaded") == 8 and not files.get("rejected")
        note = f"{files.get('uploaded')} files uploaded (page, 3 followed, 4 records), {files.get('rejected', 0)} rejected"
        if ok:
            cli.discard()
        size = int(self.BIG_MB * 1_000_000) if page == "big" else len(small_page())
        return to_row_sample(result, self.name, client, repeat, 1, size, ok, note, file_statuses=files)

    def run_scrapy(self, repeat: int) -> Sample:
        out = self.dir / f"scrapy-{repeat}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        argv = [sys.executable, "-m", "bench.scrapy_crawl", "--start", f"{self.url}/p/0.html", "--out", str(out),
                "--concurrency", str(self.CONCURRENCY)]
        result = run_process(argv, cwd=REPO, env=self.env(), log=self.dir / f"scrapy-{repeat}.log",
                             servers=self.ctx.servers, source=self.site)
        written = sorted(p.name for p in out.iterdir())
        expected = sorted(f"{i}.html" for i in range(self.pages))
        ok = result.exit_code == 0 and written == expected
        note = f"{len(written)} pages written"
        if ok:
            shutil.rmtree(out, ignore_errors=True)
            result.log.unlink(missing_ok=True)
        return to_row_sample(result, self.name, "scrapy", repeat, self.pages, self.page_bytes, ok, note)

    def env(self) -> dict[str, str]:
        from bench.clients import base_env

        return base_env(self.ctx.servers)

    def bucket(self, client: str, repeat: int) -> str:
        name = f"bench-web-{client.replace('_', '-')}-{repeat}"
        self.ctx.servers.client().create_bucket(Bucket=name)
        return name

    @staticmethod
    def registry(services: dict[str, Any]) -> dict[str, Any]:
        return {"version": 1, "defaults": {"destination": destination()}, "services": services}


def main() -> None:
    """Print the site's page count and sizes (a look at what the row serves)."""
    pages = site_pages(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    sizes = [len(b) for b in pages.values()]
    print(json.dumps({"pages": len(pages), "bytes": sum(sizes), "min": min(sizes), "max": max(sizes)}))


if __name__ == "__main__":
    main()
