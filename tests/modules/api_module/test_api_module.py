"""ApiModule against real JSON APIs on 127.0.0.1 (ThreadingHTTPServer in a thread): auth of every
type, pagination of every type, retries, per-endpoint failures, concurrency limits, records
validation, cancellation, and secrets kept out of logs and errors."""

from __future__ import annotations

import base64
import json
import pickle
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from structlog.testing import capture_logs

from common.config_model import ValidateConfig
from common.exceptions import ConfigError, ListingIncomplete, is_transient
from common.frozen import freeze
from common.host_limiter import HostLimiters, JobHosts
from common.interfaces.base_module import FetchedFile, FetchFailed, JobContext
from common.job_config import resolve_source
from common.plugins import default_catalog
from common.retry import RetryPolicy
from common.run_resources import RunResources
from common.secret import Secret
from common.validators import ValidatorSet
from module_system.contract import ModuleContract
from modules.api_module.exceptions import (
    ApiAuthError,
    ApiRateLimitedError,
    ApiSourceError,
    ApiTransientError,
)
from modules.api_module.main import ApiModule
from modules.api_module.pagination import endpoint_slug, page_name
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply

RECORD_SCHEMA = {"type": "object", "required": ["city", "temp"], "properties": {"temp": {"type": "number"}}}
TOKEN = "tok-Vq93-api-bearer-never-logged"


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


def make_ctx(schema: Mapping[str, Any] | None = None, attempts: int = 3, retries: list[int] | None = None,
             max_backoff_s: float = 2.0, transfers: int = ApiModule.default_transfers,
             max_connections: int | None = ApiModule.default_max_connections, requests_per_s: float | None = None,
             limiters: HostLimiters | None = None, resources: RunResources | None = None) -> JobContext:
    """A job's context as the executor builds it: ``transfers`` lanes, the service's per-host rules
    over ``limiters`` and ``resources`` (the run's: pass them to several jobs to share them)."""
    validate = ValidateConfig(json_schema_path=None, json_schema=freeze(schema) if schema else None, csv=None, html=None)
    counter = (lambda: retries.append(1)) if retries is not None else None
    stop = threading.Event()
    return JobContext(run_id="run-1", job_id="job-1", service_id="svc-api", module="api",
                      validators=ValidatorSet(validate), timeout_s=5, stop=stop,
                      retry=RetryPolicy(attempts=attempts, backoff_s=0.01, max_backoff_s=max_backoff_s, counter=counter),
                      transfers=transfers, resources=resources or RunResources(),
                      hosts=JobHosts(limiters or HostLimiters(stop), concurrency=max_connections,
                                     requests_per_s=requests_per_s))


def make_module(api: ApiServer, ctx: JobContext | None = None, **source: Any) -> ApiModule:
    raw = {"base_url": api.url, **source}
    return ApiModule(resolve_source(raw, ApiModule.source_schema), ctx or make_ctx())


def fetch_all(module: ApiModule, workdir: Path) -> list[FetchedFile | FetchFailed]:
    try:
        return list(module.fetch(workdir))
    finally:
        module.close()


def by_name(items: list[FetchedFile | FetchFailed]) -> dict[str, FetchedFile | FetchFailed]:
    return {item.name: item for item in items}


def link_pages(pages: int, relative: bool = True) -> Any:
    """A route serving ``pages`` pages of ``{"data": [...]}`` chained by Link headers."""
    def handler(req: ApiRequest) -> ApiReply:
        n = int(req.query.get("page", "1"))
        headers = {}
        if n < pages:
            target = f"?page={n + 1}" if relative else f"http://{req.headers['host']}{req.path}?page={n + 1}"
            headers["Link"] = f'<{target}>; rel="next", <?page=1>; rel="first"'
        return json_reply({"data": [{"city": f"c{n}", "temp": n}]}, headers=headers)
    return handler


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("auth", "key", "message"), [
    ({"type": "bearer"}, "auth.token", "required key is missing"),
    ({"type": "basic", "username": "u", "password": "p", "token": "t"}, "auth.token", "unknown key"),
    ({"type": "magic"}, "auth.type", "must be one of"),
    ({"type": "oauth2_client_credentials", "token_url": "http://t", "client_id": "c"}, "auth.client_secret",
     "required key is missing"),
])
def test_a_wrong_auth_block_names_the_key(auth: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}'?: {message}"):
        resolve_source({"base_url": "http://h", "endpoints": ["/a"], "auth": auth}, ApiModule.source_schema)


@pytest.mark.parametrize(("paginate", "key"), [
    ({"type": "cursor", "start": 2}, "paginate.start"),
    ({"type": "page", "size": 10}, "paginate.size_param"),
    ({"type": "link_header", "max_pages": 0}, "paginate.max_pages"),
])
def test_a_wrong_paginate_block_names_the_key(paginate: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        resolve_source({"base_url": "http://h", "endpoints": ["/a"], "paginate": paginate}, ApiModule.source_schema)


def test_secrets_are_marked_and_wrapped_and_the_entry_point_resolves() -> None:
    props = ApiModule.source_schema["properties"]["auth"]["properties"]
    assert {k for k, v in props.items() if v.get("x-secret")} == {"token", "value", "password", "client_secret"}
    source = resolve_source({"base_url": "http://h", "endpoints": ["/a"], "auth": {"type": "bearer", "token": TOKEN}},
                            ApiModule.source_schema)
    assert isinstance(source["auth"]["token"], Secret) and TOKEN not in repr(source)
    assert "max_concurrency" not in source and source["verify_tls"] is True
    assert default_catalog().load("api") is ApiModule


def test_slugs_are_stable_safe_and_unique() -> None:
    assert endpoint_slug("/v1/weather?city=paris") == endpoint_slug("/v1/weather?city=paris")
    assert endpoint_slug("/a/b") != endpoint_slug("/a-b")
    assert page_name("/../etc/passwd?x=1", 2).startswith("etc-passwd-x-1-") and page_name("/", 1).endswith("-p1.json")


# --------------------------------------------------------------------------- one page, auth


def test_a_page_lands_with_its_name_content_hash_uri_and_query(api: ApiServer, tmp_path: Path) -> None:
    body = {"city": "paris", "temp": 11.5}
    api.route("/v1/weather", lambda req: json_reply(body, headers={"ETag": '"v1"'}))
    module = make_module(api, endpoints=["/v1/weather?city=paris"], query={"units": "metric", "raw": True})
    [page] = fetch_all(module, tmp_path)
    assert isinstance(page, FetchedFile)
    assert page.name == page_name("/v1/weather?city=paris", 1) and page.name.startswith("v1-weather-city-paris-")
    assert json.loads(page.path.read_bytes()) == body and page.size == page.path.stat().st_size
    assert page.source_uri == f"{api.url}/v1/weather?city=paris&units=metric&raw=true"
    assert page.identity == {"etag": '"v1"'}
    assert api.requests[0].query == {"city": "paris", "units": "metric", "raw": "true"}


def _require(header: str, value: str) -> Any:
    def handler(req: ApiRequest) -> ApiReply:
        if req.headers.get(header.lower()) != value:
            return json_reply({"error": "unauthorized", "got": req.headers.get(header.lower())}, 401)
        return json_reply([{"ok": True}])
    return handler


@pytest.mark.parametrize(("auth", "header", "value"), [
    ({"type": "bearer", "token": TOKEN}, "Authorization", f"Bearer {TOKEN}"),
    ({"type": "header", "name": "X-Api-Key", "value": TOKEN}, "X-Api-Key", TOKEN),
    ({"type": "basic", "username": "ann", "password": TOKEN}, "Authorization",
     "Basic " + base64.b64encode(f"ann:{TOKEN}".encode()).decode()),
])
def test_static_auth_types_send_their_header(api: ApiServer, tmp_path: Path, auth: dict[str, str], header: str,
                                             value: str) -> None:
    api.route("/secure", _require(header, value))
    got = fetch_all(make_module(api, endpoints=["/secure"], auth=auth), tmp_path)
    assert [type(f) for f in got] == [FetchedFile]


def test_a_refused_token_fails_every_endpoint_unretried_and_redacted(api: ApiServer, tmp_path: Path) -> None:
    api.route("/secure", _require("Authorization", f"Bearer {TOKEN}"))
    api.route("/echo", lambda req: json_reply({"echo": req.headers.get("authorization")}, 403))
    with capture_logs() as logs, pytest.raises(ApiSourceError) as info:
        fetch_all(make_module(api, make_ctx(transfers=1), endpoints=["/echo", "/secure"],
                              auth={"type": "bearer", "token": "bad-token-Qm4"}), tmp_path)
    message = str(info.value)
    assert "all 2 endpoint(s)" in message and "HTTP 403" in message and "***" in message, message
    assert "bad-token-Qm4" not in message + repr(logs), "the echoed token is scrubbed from the excerpt"
    assert not is_transient(info.value)
    assert [r.path for r in api.requests] == ["/echo", "/secure"], "4xx are not retried"


# --------------------------------------------------------------------------- oauth2


class TokenEndpoint:
    """/token issuing t1, t2, ...; the API accepts only tokens still in ``valid``."""

    def __init__(self, api: ApiServer, expires_in: float | None = 3600, status: int = 200) -> None:
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self.expires_in, self.status = expires_in, status
        self._lock = threading.Lock()
        api.route("/token", self.token)

    def token(self, req: ApiRequest) -> ApiReply:
        if self.status != 200:
            return json_reply({"error": "invalid_client"}, self.status)
        with self._lock:
            value = f"oauth-token-{len(self.issued) + 1}-secret"
            self.issued.append(value)
            self.valid.add(value)
        doc: dict[str, Any] = {"access_token": value, "token_type": "Bearer"}
        if self.expires_in is not None:
            doc["expires_in"] = self.expires_in
        return json_reply(doc)

    def guard(self, req: ApiRequest) -> ApiReply:
        token = req.headers.get("authorization", "").removeprefix("Bearer ")
        return json_reply([{"token": token[-9:]}]) if token in self.valid else json_reply({"error": "expired"}, 401)

    def oauth(self, api: ApiServer, client_id: str, **extra: str) -> dict[str, str]:
        return {"type": "oauth2_client_credentials", "token_url": f"{api.url}/token", "client_id": client_id,
                "client_secret": "cs-" + client_id, **extra}


def test_oauth2_token_fetched_once_per_run_and_shared_across_jobs(api: ApiServer, tmp_path: Path) -> None:
    tokens = TokenEndpoint(api)
    api.route("/data", tokens.guard)
    auth = tokens.oauth(api, "shared-client", scope="read:all")
    resources = RunResources()  # one run
    results: list[list[Any]] = []
    jobs = [threading.Thread(target=lambda i=i: results.append(fetch_all(
        make_module(api, make_ctx(resources=resources), endpoints=[f"/data?e={k}" for k in range(3)], auth=auth),
        tmp_path / str(i)))) for i in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert [len(r) for r in results] == [3, 3] and all(isinstance(f, FetchedFile) for r in results for f in r)
    [token_request] = api.requests_to("/token")
    form = dict(pair.split("=") for pair in token_request.body.decode().split("&"))
    assert form == {"grant_type": "client_credentials", "scope": "read%3Aall"}
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(b"shared-client:cs-shared-client").decode()
    fetch_all(make_module(api, endpoints=["/data"], auth=auth), tmp_path / "next-run")
    assert len(api.requests_to("/token")) == 2, "a new run asks for its own token"


def test_oauth2_token_refreshed_on_expiry_and_client_auth_in_body(api: ApiServer, tmp_path: Path) -> None:
    tokens = TokenEndpoint(api, expires_in=0)
    chain = {None: "a", "a": "b", "b": None}

    def feed(req: ApiRequest) -> ApiReply:
        denied = tokens.guard(req)
        return denied if denied.status != 200 else json_reply({"next": chain[req.query.get("cursor")]})

    api.route("/data", feed)
    module = make_module(api, endpoints=["/data"], auth=tokens.oauth(api, "expiring", client_auth="body"),
                         paginate={"type": "cursor", "cursor_path": "next"})
    assert len(fetch_all(module, tmp_path)) == 3
    assert len(tokens.issued) == 3, "an expired token is fetched again before each use"
    used = [r.headers["authorization"] for r in api.requests_to("/data")]
    assert used == [f"Bearer {t}" for t in tokens.issued]
    assert "client_secret=cs-expiring" in api.requests_to("/token")[0].body.decode()


def test_oauth2_refreshes_once_after_401_then_fails_only_that_endpoint(api: ApiServer, tmp_path: Path) -> None:
    tokens = TokenEndpoint(api)
    api.route("/data", tokens.guard)
    api.route("/never", lambda req: json_reply({"error": "no"}, 401))
    auth = tokens.oauth(api, "revoking")
    resources = RunResources()  # both jobs in one run: the second uses the first one's token
    first = fetch_all(make_module(api, make_ctx(resources=resources), endpoints=["/data"], auth=auth), tmp_path / "a")
    assert isinstance(first[0], FetchedFile) and len(tokens.issued) == 1
    tokens.valid.clear()  # the server revokes every token: the cached one now gets a 401
    second = fetch_all(make_module(api, make_ctx(transfers=1, resources=resources), endpoints=["/data", "/never"],
                                     auth=auth), tmp_path / "b")
    assert [type(f) for f in second] == [FetchedFile, FetchFailed] and "HTTP 401" in second[1].error
    assert len(api.requests_to("/data")) == 3, "ok, 401 with the revoked token, ok with a fresh one"
    assert len(api.requests_to("/never")) == 2, "a 401 after a fresh token is not retried again"
    assert len(tokens.issued) == 3


def test_oauth2_token_endpoint_refusal_fails_the_job_without_leaking(api: ApiServer, tmp_path: Path) -> None:
    tokens = TokenEndpoint(api, status=401)
    api.route("/data", tokens.guard)
    with capture_logs() as logs, pytest.raises(ApiAuthError) as info:
        fetch_all(make_module(api, endpoints=["/data", "/data?x=2"], auth=tokens.oauth(api, "refused")), tmp_path)
    assert "HTTP 401" in str(info.value) and not is_transient(info.value)
    assert "cs-refused" not in str(info.value) + repr(logs)
    assert api.requests_to("/data") == [] and len(api.requests_to("/token")) == 1


# --------------------------------------------------------------------------- pagination


@pytest.mark.parametrize("relative", [True, False])
def test_link_header_pages_followed_to_the_last(api: ApiServer, tmp_path: Path, relative: bool) -> None:
    api.route("/v1/items", link_pages(3, relative))
    got = fetch_all(make_module(api, endpoints=["/v1/items"], paginate={"type": "link_header"}), tmp_path)
    assert [f.name for f in got] == [page_name("/v1/items", n) for n in (1, 2, 3)]
    assert [r.target for r in api.requests] == ["/v1/items", "/v1/items?page=2", "/v1/items?page=3"]


def test_link_to_another_origin_is_not_followed(api: ApiServer, tmp_path: Path) -> None:
    with ApiServer() as elsewhere:
        elsewhere.route("/steal", lambda req: json_reply([]))
        api.route("/a", lambda req: json_reply([1], headers={"Link": f'<{elsewhere.url}/steal>; rel="next"'}))
        api.route("/b", lambda req: json_reply([2]))
        got = fetch_all(make_module(api, endpoints=["/a", "/b"], paginate={"type": "link_header"},
                                    auth={"type": "bearer", "token": TOKEN}), tmp_path)
        assert elsewhere.requests == []
    failed = [f for f in got if isinstance(f, FetchFailed)]
    assert len(got) == 3 and len(failed) == 1 and "not followed" in failed[0].error


def test_page_pagination_stops_at_the_first_empty_page(api: ApiServer, tmp_path: Path) -> None:
    items = list(range(5))
    api.route("/list", lambda req: json_reply(items[int(req.query["p"]) * 2: int(req.query["p"]) * 2 + 2]))
    paginate = {"type": "page", "param": "p", "start": 0, "size_param": "per_page", "size": 2}
    got = fetch_all(make_module(api, endpoints=["/list"], paginate=paginate), tmp_path)
    assert [json.loads(f.path.read_bytes()) for f in got] == [[0, 1], [2, 3], [4]]
    assert [dict(r.query) for r in api.requests] == [{"p": str(p), "per_page": "2"} for p in range(4)]


def test_page_pagination_with_records_path_and_max_pages(api: ApiServer, tmp_path: Path) -> None:
    api.route("/rec", lambda req: json_reply({"data": {"items": [] if req.query["page"] == "3" else [1]}}))
    api.route("/endless", lambda req: json_reply({"data": {"items": [1]}}))
    module = make_module(api, endpoints=["/rec", "/endless"], records_path="$.data.items",
                         paginate={"type": "page", "max_pages": 4})
    got: list[Any] = []
    with capture_logs() as logs, pytest.raises(ListingIncomplete, match=r"max_pages \(4\).*\(/endless\)") as info:
        try:
            got.extend(module.fetch(tmp_path))  # every page read is yielded before the error
        finally:
            module.close()
    assert sorted(f.name for f in got) == sorted([page_name("/rec", n) for n in (1, 2)] +
                                                 [page_name("/endless", n) for n in (1, 2, 3, 4)])
    assert len(api.requests_to("/rec")) == 3 and len(api.requests_to("/endless")) == 4
    assert any(e["event"] == "api_max_pages_reached" for e in logs)
    assert info.value.endpoints == ["/endless"] and not is_transient(info.value)


@pytest.mark.parametrize(("last", "cursor_path"), [(None, "$.meta.next"), ("", "meta.next")])
def test_cursor_pagination_until_the_cursor_runs_out(api: ApiServer, tmp_path: Path, last: Any,
                                                     cursor_path: str) -> None:
    chain = {None: "abc", "abc": "d e", "d e": last}
    api.route("/feed", lambda req: json_reply({"items": [1], "meta": {"next": chain[req.query.get("c")]}}))
    got = fetch_all(make_module(api, endpoints=["/feed?kind=x"], paginate={"type": "cursor", "param": "c",
                                                                          "cursor_path": cursor_path}), tmp_path)
    assert len(got) == 3
    assert [r.query.get("c") for r in api.requests] == [None, "abc", "d e"]
    assert all(r.query["kind"] == "x" for r in api.requests)


# --------------------------------------------------------------------------- validation


def test_records_path_validates_each_record_with_its_index(api: ApiServer, tmp_path: Path) -> None:
    page = {"data": [{"city": "a", "temp": 1}, {"city": "b"}, {"city": "c", "temp": "hot"}]}
    api.route("/w", lambda req: json_reply(page))
    api.route("/odd", lambda req: json_reply({"rows": []}))
    module = make_module(api, make_ctx(RECORD_SCHEMA), endpoints=["/w", "/odd"], records_path="data")
    files = by_name(fetch_all(module, tmp_path))
    problems = module.validate(files[page_name("/w", 1)])
    assert [(p.location, p.message) for p in problems] == [
        ("records[1]: $", "'temp' is a required property"), ("records[2]: $.temp", "'hot' is not of type 'number'")]
    [missing] = module.validate(files[page_name("/odd", 1)])
    assert "records_path 'data' is not in the page" in missing.message
    whole = make_module(api, make_ctx(RECORD_SCHEMA), endpoints=["/w"])
    assert {p.location for p in whole.validate(files[page_name("/w", 1)])} == {"$"}, "no records_path: whole page"


# --------------------------------------------------------------------------- failures and retries


def test_404_endpoint_fails_alone_with_a_short_excerpt(api: ApiServer, tmp_path: Path) -> None:
    api.route("/ok", lambda req: json_reply([1]))
    api.route("/gone", lambda req: ApiReply(404, b"x" * 5000))
    got = by_name(fetch_all(make_module(api, endpoints=["/ok", "/gone"]), tmp_path))
    assert isinstance(got[page_name("/ok", 1)], FetchedFile)
    failed = got[page_name("/gone", 1)]
    assert isinstance(failed, FetchFailed) and failed.source_uri == f"{api.url}/gone"
    assert "HTTP 404" in failed.error and failed.error.count("x") <= 200


def test_429_and_5xx_are_retried_and_counted(api: ApiServer, tmp_path: Path) -> None:
    api.route("/busy", lambda req: json_reply({}, 429, {"Retry-After": "0"}) if req.count == 1 else json_reply([1]))
    api.route("/flaky", lambda req: json_reply({}, 500 + req.count) if req.count <= 2 else json_reply([2]))
    retries: list[int] = []
    got = fetch_all(make_module(api, make_ctx(retries=retries), endpoints=["/busy", "/flaky"]), tmp_path)
    assert len(got) == 2 and all(isinstance(f, FetchedFile) for f in got)
    assert len(retries) == 3 and len(api.requests) == 5


def test_every_endpoint_failing_transiently_raises_a_transient_error(api: ApiServer, tmp_path: Path) -> None:
    api.route("/down", lambda req: json_reply({}, 503))
    with pytest.raises(ApiTransientError) as info:
        fetch_all(make_module(api, make_ctx(attempts=2), endpoints=["/down", "/down?b=1"]), tmp_path)
    assert is_transient(info.value) and "all 2 endpoint(s)" in str(info.value)
    assert len(api.requests) == 4
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is ApiTransientError and clone.fields == info.value.fields
    limited = pickle.loads(pickle.dumps(ApiRateLimitedError("m", url="u", status=429, retry_after=1.5)))
    assert limited.retry_after == 1.5 and is_transient(limited)


def test_a_page_over_max_response_bytes_fails_its_endpoint(api: ApiServer, tmp_path: Path) -> None:
    api.route("/big", lambda req: json_reply(["y" * 5000]))
    api.route("/small", lambda req: json_reply([1]))
    got = by_name(fetch_all(make_module(api, endpoints=["/big", "/small"], max_response_bytes=1000), tmp_path))
    assert "max_response_bytes" in got[page_name("/big", 1)].error
    assert isinstance(got[page_name("/small", 1)], FetchedFile)
    assert sorted(p.name for p in tmp_path.iterdir()) == [got[page_name("/small", 1)].path.name], "no partial file left"


# --------------------------------------------------------------------------- concurrency, stopping


def test_the_host_cap_is_never_exceeded_across_jobs_and_lanes(tmp_path: Path) -> None:
    limiters, resources = HostLimiters(), RunResources()  # one run: both jobs share them
    with ApiServer(latency_s=0.05) as slow:
        slow.route("/e", lambda req: json_reply([req.query["n"]]))
        jobs = [threading.Thread(target=fetch_all, args=(make_module(
            slow, make_ctx(transfers=4, max_connections=3, limiters=limiters, resources=resources),
            endpoints=[f"/e?n={n}" for n in range(12)]), tmp_path / str(j)))
            for j in range(2)]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
        assert len(slow.requests) == 24
        assert 2 <= slow.peak_in_flight <= 3
        assert slow.connections <= 3, "the run's pooled sessions reuse their connections"


def test_endpoints_take_turns_one_page_each(api: ApiServer, tmp_path: Path) -> None:
    for e in range(3):
        api.route(f"/e{e}", link_pages(2))
    got = fetch_all(make_module(api, make_ctx(transfers=1), endpoints=[f"/e{e}" for e in range(3)],
                                paginate={"type": "link_header"}), tmp_path)
    assert [r.target for r in api.requests] == ["/e0", "/e1", "/e2", "/e0?page=2", "/e1?page=2", "/e2?page=2"]
    assert [f.name for f in got] == [page_name(f"/e{e}", n) for n in (1, 2) for e in range(3)]


def test_every_endpoint_is_started_before_any_second_page_and_lanes_stay_full(tmp_path: Path) -> None:
    """With fewer endpoints than 4 per lane, all start first; then the lanes stay busy until the
    last pages (one endpoint per lane would walk the fifth endpoint alone at the end)."""
    with ApiServer(latency_s=0.03) as slow:
        for e in range(5):
            slow.route(f"/e{e}", link_pages(4))
        got = fetch_all(make_module(slow, make_ctx(transfers=4, max_connections=4),
                                    endpoints=[f"/e{e}" for e in range(5)], paginate={"type": "link_header"}),
                        tmp_path)
        assert len(got) == 20
        targets = [r.target for r in slow.requests]
        assert sorted(targets[:5]) == [f"/e{e}" for e in range(5)]
        assert slow.peak_in_flight == 4
        for e in range(5):  # each endpoint's pages in order
            assert [t for t in targets if t.startswith(f"/e{e}")] == [f"/e{e}"] + [f"/e{e}?page={n}" for n in (2, 3, 4)]


def test_closing_early_stops_submitting_and_leaves_no_thread(tmp_path: Path) -> None:
    with ApiServer(latency_s=0.05) as slow:
        slow.route("/e", lambda req: json_reply([1]))
        module = make_module(slow, make_ctx(transfers=4), endpoints=[f"/e?n={n}" for n in range(40)])
        files = module.fetch(tmp_path)
        first = next(files)
        assert isinstance(first, FetchedFile)
        files.close()
        module.close()
        asked = len(slow.requests)
        assert asked < 40
        assert not [t for t in threading.enumerate() if t.name.startswith("job-1-lane")]
        assert len(slow.requests) == asked, "nothing is requested after close returns"
        assert [p.name for p in tmp_path.iterdir()] in ([], [first.path.name]), "unyielded pages are removed"


def test_ctx_stop_ends_fetch_at_a_file_boundary(tmp_path: Path) -> None:
    with ApiServer(latency_s=0.02) as slow:
        slow.route("/e", lambda req: json_reply([1]))
        ctx = make_ctx(transfers=2)
        module = make_module(slow, ctx, endpoints=[f"/e?n={n}" for n in range(30)])
        got = []
        for item in module.fetch(tmp_path):
            got.append(item)
            ctx.stop.set()
        module.close()
        assert len(got) == 1 and len(slow.requests) < 30


def test_verify_tls_false_logs_a_warning(api: ApiServer, tmp_path: Path) -> None:
    api.route("/a", lambda req: json_reply([1]))
    with capture_logs() as logs:
        fetch_all(make_module(api, endpoints=["/a", "/a"], verify_tls=False), tmp_path)
    assert any(e["event"] == "api_tls_verification_disabled" and e["log_level"] == "warning" for e in logs)
    assert len(api.requests) == 1, "a repeated endpoint is fetched once"


# --------------------------------------------------------------------------- the contract suite


class TestApiContract(ModuleContract):
    """The shared module contract, each seeded file served as one endpoint (``/files/<name>``)."""

    @pytest.fixture(autouse=True)
    def _server(self) -> Iterator[None]:
        with ApiServer() as server:
            self.server = server
            yield

    @pytest.fixture
    def module_cls(self) -> type[ApiModule]:
        return ApiModule

    def make_source(self, tmp_path: Path, files: Mapping[str, bytes]) -> dict[str, Any]:
        self.endpoints = {"/files/" + quote(name): name for name in files}
        for endpoint, name in self.endpoints.items():
            self.server.route(endpoint, lambda req, data=files[name]: ApiReply(200, data))
        # The contract's context has one lane: the same order on every fetch (else completion order).
        return {"base_url": self.server.url, "endpoints": sorted(self.endpoints)}

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        self.server.stop()
        return {"base_url": self.server.url, "endpoints": ["/gone"]}

    #: The API lands each endpoint's body as it is: no JSON rule in run_validate, nothing rejected.
    expected_rejected = frozenset()

    def expected_files(self, seeded: Mapping[str, bytes]) -> Mapping[str, bytes]:
        """Each file is named after its endpoint (``<slug>-p1.json``), not the seeded name."""
        return {page_name("/files/" + quote(name), 1): data for name, data in seeded.items()}
