"""The ``api`` source's cursor through the CLI, on dated job ids: each day's run sends the newest
``updated_at`` the last successful run read as ``since``, lands only the new records under keys
of their own, and a failed run leaves the watermark where it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.helpers import Project, list_keys
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply


class Orders:
    """``GET /orders?since=T``: the records with ``updated_at > T``, oldest first, two per page
    (``page`` pagination); ``failing`` answers 500 on every second page."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.failing = False

    def __call__(self, request: ApiRequest) -> ApiReply:
        since = request.query.get("since")
        newer = [r for r in self.records if since is None or r["updated_at"] > since]
        page = int(request.query.get("page", "1"))
        if self.failing and page == 2:
            return json_reply({"error": "boom"}, status=500)
        return json_reply({"items": newer[(page - 1) * 2: page * 2]})

    def add(self, *stamps: str) -> None:
        for stamp in stamps:
            self.records.append({"id": len(self.records) + 1, "updated_at": stamp})


@pytest.fixture()
def orders() -> Iterator[tuple[ApiServer, Orders]]:
    feed = Orders()
    with ApiServer() as server:
        server.route("/orders", feed)
        yield server, feed


def sinces(server: ApiServer) -> list[str | None]:
    return [r.query.get("since") for r in server.requests if r.query.get("page") == "1"]


def run_day(project: Project, day: str) -> tuple[int, dict[str, Any]]:
    batch = project.write_batch([{"job_id": f"orders_{day}", "service_id": "orders"}], name=f"{day}.json")
    result = project.run("--batch-file", str(batch), "--report", f"{day}-report.json")
    return result.returncode, project.report(f"{day}-report.json")


def test_each_day_reads_from_the_last_successful_watermark(project: Project, s3: Any, bucket: str,
                                                            orders: tuple[ApiServer, Orders]) -> None:
    server, feed = orders
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"orders": {"type": "api", "retry": {"attempts": 1}, "source": {
            "base_url": server.url, "endpoints": ["/orders"], "records_path": "items",
            "paginate": {"type": "page"}, "cursor": {"field": "updated_at", "param": "since"}}}},
    })
    feed.add("2026-12-01T08:00:00Z", "2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z")
    code, _ = run_day(project, "2026_12_01")
    assert code == 0
    state = json.loads(s3.get_object(Bucket=bucket, Key="_state/orders/orders.json")["Body"].read())
    assert state["cursors"] == {"/orders": "2026-12-01T10:00:00Z"}

    feed.add("2026-12-02T08:00:00Z")
    code, report = run_day(project, "2026_12_02")
    assert code == 0
    assert sinces(server) == [None, "2026-12-01T10:00:00Z"]
    keys = list_keys(s3, bucket, "data/api/orders/responses/")
    new = [k for k in keys if "-since-2026-12-01T10_00_00Z-" in k]
    assert len(new) == 1 and len(keys) == 3  # day 1's two pages are still there
    assert [r["id"] for r in json.loads(s3.get_object(Bucket=bucket, Key=new[0])["Body"].read())["items"]] == [4]

    feed.add("2026-12-03T08:00:00Z", "2026-12-03T09:00:00Z", "2026-12-03T10:00:00Z")
    feed.failing = True
    code, report = run_day(project, "2026_12_03")
    assert code == 1 and report["jobs"][0]["status"] == "failed"
    state = json.loads(s3.get_object(Bucket=bucket, Key="_state/orders/orders.json")["Body"].read())
    assert state["cursors"] == {"/orders": "2026-12-02T08:00:00Z"}  # not advanced by the failed run

    feed.failing = False
    code, _ = run_day(project, "2026_12_04")
    assert code == 0
    assert sinces(server)[-1] == "2026-12-02T08:00:00Z"
    state = json.loads(s3.get_object(Bucket=bucket, Key="_state/orders/orders.json")["Body"].read())
    assert state["cursors"] == {"/orders": "2026-12-03T10:00:00Z"}


def test_a_cursor_without_records_path_is_a_config_error(project: Project, bucket: str) -> None:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"orders": {"type": "api", "source": {
            "base_url": "http://127.0.0.1:9", "endpoints": ["/orders"],
            "cursor": {"field": "updated_at", "param": "since"}}}},
    })
    batch = project.write_batch([{"job_id": "j", "service_id": "orders"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    assert "orders" in result.stderr and "records_path" in result.stderr and "Traceback" not in result.stderr
