"""The web row's reference: a tiny Scrapy ``CrawlSpider`` writing every page to local disk.

    python -m bench.scrapy_crawl --start http://127.0.0.1:PORT/p/0.html --out DIR [--concurrency 16]

Follows every link inside ``nav`` from the start page on (Scrapy's duplicate filter fetches
each URL once), ``CONCURRENT_REQUESTS`` and ``CONCURRENT_REQUESTS_PER_DOMAIN`` =
``--concurrency``, ``DOWNLOAD_DELAY=0``, ``ROBOTSTXT_OBEY=False``, no depth limit, and writes
each page's body to ``DIR/<last path segment>``. Prints one JSON line: pages written.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scrapy.crawler import CrawlerProcess
from scrapy.http import Response
from scrapy.linkextractors import LinkExtractor
from scrapy.spiders import CrawlSpider, Rule


class SiteSpider(CrawlSpider):
    name = "bench_site"
    rules = (Rule(LinkExtractor(restrict_css="nav"), callback="save", follow=True),)

    def __init__(self, start: str, out: str, *args: Any, **kwargs: Any) -> None:
        self.start_urls = [start]
        self.out = Path(out)
        self.pages = 0
        super().__init__(*args, **kwargs)

    def parse_start_url(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        return self.save(response)

    def save(self, response: Response) -> Iterator[Any]:
        (self.out / response.url.rsplit("/", 1)[-1]).write_bytes(response.body)
        self.pages += 1
        return iter(())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    process = CrawlerProcess(settings={
        "CONCURRENT_REQUESTS": args.concurrency, "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
        "DOWNLOAD_DELAY": 0, "ROBOTSTXT_OBEY": False, "LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False,
    })
    crawler = process.create_crawler(SiteSpider)
    process.crawl(crawler, start=args.start, out=args.out)
    process.start()
    print(json.dumps({"pages": len(list(Path(args.out).iterdir()))}))


if __name__ == "__main__":
    main()
