"""A batch through the CLI from a JSON API that flaps between failing and answering.

Every exact request target fails on its odd-numbered requests (500, or 503 with
``Retry-After: 0``) and answers on the even ones, so every page of four endpoints (three
Link-header pages each) fails once before it is served. The server records the SHA-256
of each body it served with 200: the witness that what landed is what was sent, once.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from modules.api_module.pagination import page_name
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply
from tests.e2e.helpers import Project, list_keys
from tests.faults.conftest import print_figures, versions_per_key

STATIONS = ("north", "south", "east", "west")
ENDPOINTS = tuple(f"/v1/readings?station={s}" for s in STATIONS)
PAGES = 3
BAD_PAGE = (ENDPOINTS[2], 2)  # one record breaks the schema
RECORD_SCHEMA = {"type": "object", "required": ["station", "value"],
                 "properties": {"station": {"type": "string"}, "value": {"type": "number"}}}
OK, REJECTED = "data/api/api_flaky/responses/", "data/api/api_flaky/rejected/"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FlappingApi:
    """The route of ``/v1/readings``: odd requests per target fail, even ones answer."""

    def __init__(self) -> None:
        self.injected: list[tuple[tuple[str, int], int]] = []
        """((endpoint, page), status) of each failure sent."""
        self.served: dict[tuple[str, int], list[str]] = defaultdict(list)
        """(endpoint, page) -> SHA-256 of each 200 body sent for it."""
        self._lock = threading.Lock()

    def __call__(self, req: ApiRequest) -> ApiReply:
        station, page = req.query["station"], int(req.query.get("page", "1"))
        endpoint = f"/v1/readings?station={station}"
        if req.count % 2 == 1:
            status = 500 if STATIONS.index(station) % 2 == 0 else 503
            with self._lock:
                self.injected.append(((endpoint, page), status))
            return json_reply({"error": "flap"}, status, {"Retry-After": "0"} if status == 503 else None)
        body = page_body(endpoint, station, page)
        with self._lock:
            self.served[(endpoint, page)].append(sha(body))
        headers = {"Content-Type": "application/json"}
        if page < PAGES:
            headers["Link"] = f'</v1/readings?station={station}&page={page + 1}>; rel="next"'
        return ApiReply(200, body, headers)


def page_body(endpoint: str, station: str, page: int) -> bytes:
    """Deterministic page bytes (~20 KiB), odd spacing included: bytes, not JSON, must match."""
    rng = random.Random(f"{station}-{page}")
    records: list[dict[str, Any]] = [{"station": station, "value": round(rng.uniform(-50, 50), 3),
                                      "seq": (page - 1) * 400 + i} for i in range(400)]
    if (endpoint, page) == BAD_PAGE:
        records[123]["value"] = "n/a"
    return json.dumps({"data": records, "page": page}, indent=1).encode()


@pytest.fixture()
def flapping() -> FlappingApi:
    return FlappingApi()


@pytest.fixture()
def api(flapping: FlappingApi) -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.route("/v1/readings", flapping)
        yield server


def registry(project: Project, bucket: str, api: ApiServer) -> dict[str, Any]:
    (project.root / "reading.schema.json").write_text(json.dumps(RECORD_SCHEMA))
    project.env["API_URL"] = api.url
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 6, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {
            "api_flaky": {
                "type": "api",
                "source": {"base_url": "${API_URL}", "endpoints": list(ENDPOINTS),
                           "paginate": {"type": "link_header"}, "records_path": "data"},
                "transfers": 4,
                "validate": {"json_schema": "reading.schema.json"},
            },
        },
    }


def test_flapping_api_pages_land_whole_and_once(project: Project, s3, versioned_bucket: str,  # noqa: ANN001
                                                api: ApiServer, flapping: FlappingApi) -> None:
    bucket = versioned_bucket
    project.write_registry(registry(project, bucket, api))
    batch = project.write_batch([{"job_id": "flaky_api_1", "service_id": "api_flaky"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr  # one rejected page, nothing failed

    pages = [(endpoint, n) for endpoint in ENDPOINTS for n in range(1, PAGES + 1)]
    valid = [p for p in pages if p != BAD_PAGE]
    # every page failed once, then was served exactly once
    first_run = list(flapping.injected)
    injected = len(first_run)
    assert sorted(p for p, _ in first_run) == sorted(pages)
    assert {p: len(shas) for p, shas in flapping.served.items()} == dict.fromkeys(pages, 1)
    report = project.report()
    [job] = report["jobs"]
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["error"] is None
    assert job["files"]["uploaded"] == len(valid) and job["files"]["rejected"] == 1
    assert job["files"]["failed"] == 0
    assert report["totals"]["retries"] >= injected > 0

    # byte-identical to what the server sent: object == served == metadata sha256
    keys = list_keys(s3, bucket, "data/")
    key_of = {p: (REJECTED if p == BAD_PAGE else OK) + page_name(*p) for p in pages}
    assert keys == sorted([*key_of.values(), key_of[BAD_PAGE] + ".errors.json"])
    intact = set()
    for page, key in key_of.items():
        obj = s3.get_object(Bucket=bucket, Key=key)
        assert sha(obj["Body"].read()) == flapping.served[page][0] == obj["Metadata"]["sha256"], key
        intact.add(page)
    errors = json.loads(s3.get_object(Bucket=bucket, Key=key_of[BAD_PAGE] + ".errors.json")["Body"].read())
    assert [e["location"] for e in errors["errors"]] == ["records[123]: $.value"]

    # nothing twice: one manifest entry and one S3 version per key
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/api_flaky/flaky_api_1.json")["Body"].read())
    entries = [f["key"] for f in manifest["files"]]
    assert len(entries) == len(set(entries)) == len(pages)
    versions = versions_per_key(s3, bucket, "data/")
    assert set(versions) == set(keys) and set(versions.values()) == {1}

    # a re-run (the API still flapping) uploads nothing new
    rerun = project.run("--batch-file", str(batch), "--report", "report2.json")
    assert rerun.returncode == 1, rerun.stderr
    [again] = project.report("report2.json")["jobs"]
    assert again["files"]["uploaded"] == 0 and again["files"]["skipped_same"] == len(valid)
    assert again["files"]["rejected"] == 1 and again["files"]["failed"] == 0
    assert set(versions_per_key(s3, bucket, OK).values()) == {1}
    assert {p: len(set(shas)) for p, shas in flapping.served.items()} == dict.fromkeys(pages, 1), "stable bytes"

    print_figures("api (flapping 500/503)", pages=len(pages), faults_injected=injected,
                  faults_survived=sum(1 for page, _ in first_run if page in intact),
                  retries=report["totals"]["retries"], files_lost=len(pages) - len(intact),
                  duplicates=sum(v - 1 for v in versions.values()))
