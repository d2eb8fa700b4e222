"""Throughput of the ``api`` module against a local API with a fixed latency per request.

    python bench/api_bench.py                       # 20 endpoints x 10 pages, 50 ms, transfers 10
    python bench/api_bench.py --endpoints 200 --pages 1 --concurrency 20 --repeat 5

Serves ``--endpoints`` endpoints of ``--pages`` pages each, chained by ``Link`` headers,
from :class:`tests.servers.api_server.ApiServer` (a ThreadingHTTPServer on 127.0.0.1
that sleeps ``--latency`` seconds in every request). Measures, in the same run, over the
same URLs:

* a plain sequential loop: one ``requests.Session``, one GET after the other;
* ``ApiModule.fetch`` driven directly with a JobContext (no S3, no validation), with
  ``transfers`` and ``limits.max_connections`` = ``--concurrency``: files streamed, hashed and written to a temp dir.

Prints requests/s of both (the best of ``--repeat`` runs) and their ratio, which
approaches ``--concurrency`` when latency dominates. Checks the server saw exactly the
expected requests. A benchmark, not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
import structlog

from common.config_model import ValidateConfig
from common.host_limiter import HostLimiters, JobHosts
from common.interfaces.base_module import FetchedFile, JobContext
from common.job_config import resolve_source
from common.retry import RetryPolicy
from common.validators import ValidatorSet
from modules.api_module.main import ApiModule
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply


def serve_pages(pages: int) -> Callable[[ApiRequest], ApiReply]:
    def handler(req: ApiRequest) -> ApiReply:
        page = int(req.query.get("page", "1"))
        headers = {"Link": f'<{req.path}?e={req.query["e"]}&page={page + 1}>; rel="next"'} if page < pages else {}
        records = [{"endpoint": req.query["e"], "page": page, "i": i, "value": i * 1.5} for i in range(20)]
        return json_reply({"data": records}, headers=headers)
    return handler


def urls(base: str, endpoints: int, pages: int) -> list[str]:
    return [f"{base}/items?e={e}" + (f"&page={p}" if p > 1 else "") for e in range(endpoints) for p in range(1, pages + 1)]


def run_sequential(api: ApiServer, targets: list[str]) -> float:
    start = time.perf_counter()
    with requests.Session() as session:
        for url in targets:
            response = session.get(url, timeout=30)
            response.raise_for_status()
            _ = response.content
    return time.perf_counter() - start


def run_module(api: ApiServer, endpoints: int, pages: int, concurrency: int) -> tuple[float, int]:
    source = resolve_source({"base_url": api.url, "endpoints": [f"/items?e={e}" for e in range(endpoints)],
                             "paginate": {"type": "link_header"}},
                            ApiModule.source_schema)
    stop = threading.Event()
    ctx = JobContext(run_id="bench", job_id="bench", service_id="bench_api", module="api",
                     validators=ValidatorSet(ValidateConfig(None, None, None, None)),
                     retry=RetryPolicy(attempts=3, backoff_s=0.1, stop=stop), timeout_s=30, stop=stop,
                     transfers=concurrency, hosts=JobHosts(HostLimiters(stop), concurrency=concurrency))
    module = ApiModule(source, ctx)
    with tempfile.TemporaryDirectory(prefix="api-bench-") as workdir:
        start = time.perf_counter()
        files = 0
        try:
            for item in module.fetch(Path(workdir)):
                if not isinstance(item, FetchedFile):
                    raise SystemExit(f"bench: a page failed: {item}")
                files += 1
                item.path.unlink()  # as the framework does once the file is uploaded
        finally:
            module.close()
        return time.perf_counter() - start, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server sleeps per request")
    parser.add_argument("--concurrency", type=int, default=10, help="transfers and limits.max_connections of the job")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    total = args.endpoints * args.pages
    with ApiServer(latency_s=args.latency) as api:
        api.route("/items", serve_pages(args.pages))
        targets = urls(api.url, args.endpoints, args.pages)
        sequential, module = [], []
        for _ in range(args.repeat):
            before = len(api.requests)
            sequential.append(run_sequential(api, targets))
            assert len(api.requests) - before == total, "sequential loop: unexpected request count"
            before = len(api.requests)
            seconds, files = run_module(api, args.endpoints, args.pages, args.concurrency)
            assert files == total and len(api.requests) - before == total, "module: unexpected request count"
            module.append(seconds)
        peak = api.peak_in_flight

    seq_rps, mod_rps = total / min(sequential), total / min(module)
    print(f"api bench: {args.endpoints} endpoints x {args.pages} pages = {total} requests, "
          f"{args.latency * 1000:.0f} ms latency, best of {args.repeat}")
    print(f"  sequential requests loop : {min(sequential):7.3f} s  {seq_rps:8.1f} req/s")
    print(f"  ApiModule.fetch (c={args.concurrency:<3})  : {min(module):7.3f} s  {mod_rps:8.1f} req/s"
          f"  (peak in flight at the server: {peak})")
    print(f"  speed-up                 : {mod_rps / seq_rps:7.2f} x  (ideal: {min(args.concurrency, args.endpoints)} x)")


if __name__ == "__main__":
    main()
