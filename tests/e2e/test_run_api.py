"""A batch over a JSON API (bearer auth, Link pagination, 429, 5xx, a bad record), through the CLI,
landing as INTERFACE section 5 says, with the API's own request log as the witness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from modules.api_module.pagination import page_name
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply
from tests.e2e.helpers import Project, list_keys

TOKEN = "wx-tok-7Hq2-e2e-never-logged"
RECORD_SCHEMA = {"type": "object", "required": ["city", "temp"],
                 "properties": {"city": {"type": "string"}, "temp": {"type": "number"}}}
PARIS, OSLO, FORECAST = "/v1/weather?city=paris", "/v1/weather?city=oslo", "/v1/forecast"


def weather(req: ApiRequest) -> ApiReply:
    """Paris: three pages chained by Link headers, page 2 holding a bad record. Oslo: 429 first."""
    city = req.query.get("city", "")
    if city == "oslo":
        if req.count == 1:
            return json_reply({"error": "slow down"}, 429, {"Retry-After": "1"})
        return json_reply({"data": [{"city": "oslo", "temp": -3}]})
    page = int(req.query.get("page", "1"))
    temp: Any = "hot" if page == 2 else 10 + page
    headers = {"Link": f'</v1/weather?city={city}&page={page + 1}>; rel="next"'} if page < 3 else {}
    return json_reply({"data": [{"city": city, "temp": 1}, {"city": city, "temp": temp}]}, headers=headers)


def forecast(req: ApiRequest) -> ApiReply:
    """500 on the first two calls, then one page."""
    return json_reply({"error": "boom"}, 500) if req.count <= 2 else json_reply({"data": [{"city": "all", "temp": 0}]})


def bearer_only(handler: Any) -> Any:
    def guarded(req: ApiRequest) -> ApiReply:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return json_reply({"error": "missing or bad token"}, 401)
        return handler(req)
    return guarded


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.route("/v1/weather", bearer_only(weather))
        server.route("/v1/forecast", bearer_only(forecast))
        yield server


def registry(project: Project, landing: str, api: ApiServer) -> dict[str, Any]:
    (project.root / "weather.schema.json").write_text(json.dumps(RECORD_SCHEMA))
    project.env.update({"API_URL": api.url, "WEATHER_TOKEN": TOKEN})
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": landing, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 5}, "timeout_s": 10},
        "services": {
            "api_weather": {
                "type": "api",
                "source": {"base_url": "${API_URL}", "endpoints": [PARIS, OSLO, FORECAST],
                           "auth": {"type": "bearer", "token": "${WEATHER_TOKEN}"},
                           "paginate": {"type": "link_header"}, "records_path": "data"},
                "transfers": 3,
                "validate": {"json_schema": "weather.schema.json"},
            },
            "api_public": {"type": "api", "source": {"base_url": "${API_URL}", "endpoints": ["/v1/weather?city=rome"]}},
        },
    }


def test_batch_over_an_api_lands_as_specified(project: Project, s3, bucket: str, api: ApiServer) -> None:  # noqa: ANN001
    project.write_registry(registry(project, bucket, api))
    batch = project.write_batch([{"job_id": "weather_1", "service_id": "api_weather"},
                                 {"job_id": "public_1", "service_id": "api_public"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json", "--max-workers", "2")
    assert result.returncode == 1, result.stderr  # a rejected page and a failed job

    ok, rejected = "data/api/api_weather/responses/", "data/api/api_weather/rejected/"
    keys = list_keys(s3, bucket)
    assert keys == sorted([
        "_manifests/api_public/public_1.json",
        "_manifests/api_weather/weather_1.json",
        ok + page_name(PARIS, 1), ok + page_name(PARIS, 3), ok + page_name(OSLO, 1), ok + page_name(FORECAST, 1),
        rejected + page_name(PARIS, 2), rejected + page_name(PARIS, 2) + ".errors.json",
    ])
    page3 = json.loads(s3.get_object(Bucket=bucket, Key=ok + page_name(PARIS, 3))["Body"].read())
    assert page3 == {"data": [{"city": "paris", "temp": 1}, {"city": "paris", "temp": 13}]}
    errors = json.loads(s3.get_object(Bucket=bucket, Key=rejected + page_name(PARIS, 2) + ".errors.json")["Body"].read())
    assert [e["location"] for e in errors["errors"]] == ["records[1]: $.temp"]
    assert errors["source_uri"] == f"{api.url}/v1/weather?city=paris&page=2"

    report = project.report()
    jobs = {j["job_id"]: j for j in report["jobs"]}
    assert jobs["weather_1"]["status"] == "succeeded" and jobs["weather_1"]["attempts"] == 1
    assert jobs["weather_1"]["files"] == {"uploaded": 4, "skipped_same": 0, "skipped_unchanged": 0, "rejected": 1, "failed": 0}
    assert jobs["public_1"]["status"] == "failed" and "HTTP 401" in jobs["public_1"]["error"]
    assert jobs["public_1"]["attempts"] == 1, "a 401 is not worth a job-level retry"
    assert report["totals"]["retries"] >= 3  # one 429 and two 500s

    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/api_weather/weather_1.json")["Body"].read())
    by_uri = {f["source_uri"]: f for f in manifest["files"]}
    assert by_uri[f"{api.url}/v1/forecast"]["status"] == "uploaded"
    assert by_uri[f"{api.url}/v1/weather?city=paris&page=2"]["status"] == "rejected"
    assert manifest["source"]["auth"] == {"type": "bearer"}

    # the API's own log: what was asked, and nothing more
    authed = [r for r in api.requests if r.headers.get("authorization") == f"Bearer {TOKEN}"]
    paris = [r.target for r in authed if r.query.get("city") == "paris"]
    assert paris == [PARIS, PARIS + "&page=2", PARIS + "&page=3"], "pages in order, no page 4"
    oslo = [r for r in authed if r.target == OSLO]
    assert len(oslo) == 2 and oslo[1].at - oslo[0].at >= 0.9, "the retry after a 429 waits Retry-After: 1"
    assert [r.target for r in authed if r.path == "/v1/forecast"] == [FORECAST] * 3
    anonymous = [r for r in api.requests if "authorization" not in r.headers]
    assert [r.target for r in anonymous] == ["/v1/weather?city=rome"], "the 401 is not retried"
    assert len(api.requests) == len(authed) + len(anonymous)

    # the token is nowhere
    outputs = [result.stdout, result.stderr]
    outputs += [p.read_text() for p in project.root.rglob("*") if p.is_file() and p.suffix in (".log", ".json")]
    outputs += [s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode() for k in keys]
    assert not any(TOKEN in text for text in outputs)
    job_log = (project.root / "temp" / "logs" / "weather_1_api_weather_api.log").read_text()
    assert "api_page_fetched" in job_log, "worker threads log into the job's file"


def test_a_wrong_auth_block_stops_the_run_with_exit_2(project: Project, bucket: str, api: ApiServer) -> None:
    reg = registry(project, bucket, api)
    reg["services"]["api_weather"]["source"]["auth"] = {"type": "bearer"}
    project.write_registry(reg)
    batch = project.write_batch([{"job_id": "j", "service_id": "api_weather"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    assert "api_weather" in result.stderr and "auth.token" in result.stderr and "required" in result.stderr
    assert api.requests == []
