"""The api row: one ``type: api`` job through the CLI against a plain ``requests`` thread pool.

The API (``python -m bench.servers api``, a process of its own):
:class:`tests.servers.api_server.ApiServer`, a ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive,
``TCP_NODELAY``) that sleeps ``--latency`` (20 ms) in every request. ``/items?e=<n>`` is an
endpoint of ``--pages`` JSON pages (20 records each) chained by ``Link: <...>; rel="next"``
headers. The row reads :data:`ENDPOINTS` endpoints x :data:`PAGES` pages = 2,000 pages
(``--quick``: 20 x 10) with :data:`WIDTH` requests in flight:

* ``module_system``: one job of a ``type: api`` service (``paginate: link_header``,
  ``transfers: 16``, ``limits.max_connections: 16``, ``validate.json_schema`` on every
  page), every page landed in S3. Checked: every page uploaded, none rejected.
* ``requests_pool``: ``python -m bench.api_bench pool``: a ``ThreadPoolExecutor`` of the same
  width, one ``requests.Session`` per thread, each task walking one endpoint's pages in
  order (the next page is known only from the page before) and writing each page to local
  disk. Checked: every page written.

Both read each endpoint's pages in order. The pool is what a plain thread pool does: a task
per endpoint, so the last 4 of the 100 endpoints are walked alone while 12 threads idle
(7 rounds of 20 requests). The module lets its open endpoints take turns, as a crawl frontier
does (:data:`modules.api_module.main.OPEN_PER_LANE`), and keeps its 16 lanes busy to the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from bench.measure import Sample, landed, landed_files, run_process
from bench.rows import CliRun, Row, RowContext, destination, file_totals, to_row_sample
from bench.servers import REPO

__all__ = ["ApiRow", "serve_pages", "start_api"]

ENDPOINTS, PAGES, WIDTH, LATENCY_S = 100, 20, 16, 0.02
QUICK_ENDPOINTS, QUICK_PAGES = 20, 10
PAGE_SCHEMA = {
    "type": "object", "required": ["data"], "additionalProperties": False,
    "properties": {"data": {"type": "array", "items": {
        "type": "object", "required": ["endpoint", "page", "i", "value"], "additionalProperties": False,
        "properties": {"endpoint": {"type": "string"}, "page": {"type": "integer", "minimum": 1},
                       "i": {"type": "integer"}, "value": {"type": "number"}}}}},
}


def serve_pages(pages: int) -> Callable[[Any], Any]:
    """The ``/items`` handler: page ``page`` of endpoint ``e``, a ``next`` link until ``pages``."""
    from tests.servers.api_server import json_reply

    def handler(req: Any) -> Any:
        page = int(req.query.get("page", "1"))
        headers = {"Link": f'<{req.path}?e={req.query["e"]}&page={page + 1}>; rel="next"'} if page < pages else {}
        records = [{"endpoint": req.query["e"], "page": page, "i": i, "value": i * 1.5} for i in range(20)]
        return json_reply({"data": records}, headers=headers)
    return handler


def start_api(latency_s: float, pages: int) -> Any:
    """The API server of the row (``python -m bench.servers api``)."""
    from tests.servers.api_server import ApiServer

    api = ApiServer(latency_s=latency_s)
    api.route("/items", serve_pages(pages))
    return api


class ApiRow(Row):
    name = "API"
    clients = ("module_system", "ms_local", "requests_pool")

    def __init__(self, ctx: RowContext) -> None:
        super().__init__(ctx)
        self.endpoints, self.pages = (QUICK_ENDPOINTS, QUICK_PAGES) if ctx.quick else (ENDPOINTS, PAGES)
        self.total = self.endpoints * self.pages

    def prepare(self) -> None:
        self.api = self.ctx.servers.start("api", "--latency", str(LATENCY_S), "--pages", str(self.pages))
        self.url = self.api.info["url"]

    def run(self, client: str, repeat: int, wrap: Sequence[str] = ()) -> Sample:
        if client == "requests_pool":
            return self.run_pool(repeat)
        return self.run_module(repeat, wrap, local=client == "ms_local")

    def run_module(self, repeat: int, wrap: Sequence[str], local: bool = False) -> Sample:
        """The job, landing in S3 (``module_system``) or, as the pool does, in a local folder (``ms_local``)."""
        client = "ms_local" if local else "module_system"
        bucket = f"bench-api-{client.replace('_', '-')}-{repeat}"
        self.ctx.servers.client().create_bucket(Bucket=bucket)
        folder = self.dir / f"{client}-{repeat}-landing"
        shutil.rmtree(folder, ignore_errors=True)
        service: dict[str, Any] = {
            "type": "api", "transfers": WIDTH, "limits": {"max_connections": WIDTH},
            "source": {"base_url": self.url, "endpoints": [f"/items?e={e}" for e in range(self.endpoints)],
                       "paginate": {"type": "link_header"}},
            "validate": {"json_schema": "page.schema.json"},
        }
        if local:
            service["destination"] = {"type": "local", "path": str(folder)}
        registry = {"version": 1, "defaults": {"destination": destination()}, "services": {"bench_api": service}}
        cli = CliRun(self.dir, f"{client}-{repeat}", registry, [{"job_id": "pages", "service_id": "bench_api"}],
                     files={"page.schema.json": PAGE_SCHEMA})
        result, report = cli.run(self.ctx.servers, {"BENCH_BUCKET": bucket}, wrap=wrap, source=self.api)
        files = file_totals(report)
        objects = landed_files(folder) if local else landed(self.ctx.servers.client(), bucket)
        ok = (result.exit_code == 0 and files.get("uploaded") == self.total and not files.get("rejected")
              and len(objects) == self.total)
        note = f"{files.get('uploaded')} pages landed, {files.get('rejected', 0)} rejected, {len(objects)} files"
        if ok:
            cli.discard()
            shutil.rmtree(folder, ignore_errors=True)
        return to_row_sample(result, self.name, client, repeat, self.total, sum(objects.values()), ok, note,
                             file_statuses=files)

    def run_pool(self, repeat: int) -> Sample:
        out = self.dir / f"pool-{repeat}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        argv = [sys.executable, "-m", "bench.api_bench", "pool", "--base", self.url, "--endpoints", str(self.endpoints),
                "--workers", str(WIDTH), "--out", str(out)]
        from bench.clients import base_env

        result = run_process(argv, cwd=REPO, env=base_env(self.ctx.servers), log=self.dir / f"pool-{repeat}.log",
                             servers=self.ctx.servers, source=self.api)
        written = list(out.iterdir())
        size = sum(p.stat().st_size for p in written)
        ok = result.exit_code == 0 and len(written) == self.total
        note = f"{len(written)} pages written"
        if ok:
            shutil.rmtree(out, ignore_errors=True)
            result.log.unlink(missing_ok=True)
        return to_row_sample(result, self.name, "requests_pool", repeat, self.total, size, ok, note)


def pool(base: str, endpoints: int, workers: int, out: Path) -> int:
    """The reference client: ``workers`` threads, a session each, one endpoint's pages per task."""
    import requests

    local = threading.local()

    def walk(endpoint: int) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        url: str | None = f"{base}/items?e={endpoint}"
        page = 0
        while url:
            response = session.get(url, timeout=30)
            response.raise_for_status()
            page += 1
            (out / f"e{endpoint}-p{page}.json").write_bytes(response.content)
            following = response.links.get("next", {}).get("url")
            url = urljoin(url, following) if following else None
        return page

    with ThreadPoolExecutor(workers) as executor:
        return sum(executor.map(walk, range(endpoints)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("pool", help="the requests thread pool (the row's reference client)")
    run.add_argument("--base", required=True)
    run.add_argument("--endpoints", type=int, default=ENDPOINTS)
    run.add_argument("--workers", type=int, default=WIDTH)
    run.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pages = pool(args.base, args.endpoints, args.workers, args.out)
    print(json.dumps({"pages": pages, "seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main()
