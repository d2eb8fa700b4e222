"""Schemathesis against ``/openapi.json``: every operation, inputs that fit the schema and inputs that do not,
never a 5xx.

The app runs over a history holding a finished run (so ids can resolve) with a token of both
scopes (so every route is reached); the examples per operation are few to keep it under a minute.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from orchestrator.history.store import history_url
from orchestrator.serve.app import Server, create_app
from orchestrator.serve.auth import load_tokens
from orchestrator.serve.runs import ServeSettings
from tests.orchestrator.serve.conftest import BOTH_TOKEN, write_project
from tests.servers.api_server import ApiServer

AUTH = {"Authorization": f"Bearer {BOTH_TOKEN}"}


def _app(root: Path, api: ApiServer) -> Iterator[FastAPI]:
    project = write_project(root, api)
    project.gate.set()
    state = project.state_dir
    server = Server(ServeSettings(project.registry, state, state / "logs", history_url(None, state), max_workers=2),
                    load_tokens(None, {"MODULE_SYSTEM_API_TOKEN": BOTH_TOKEN}), rate_limit=0)
    app = create_app(server)
    with TestClient(app) as client:
        run_id = client.post("/api/v1/batches", headers=AUTH, json={"jobs": [
            {"job_id": "drop_1", "service_id": "drop"}, {"job_id": "later_1", "service_id": "later"}]}).json()["run_id"]
        served = server.manager.get(run_id)
        assert served is not None and served.done.wait(60)
        yield app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    with ApiServer() as api:
        yield from _app(tmp_path_factory.mktemp("schemathesis"), api)


def test_no_operation_answers_a_server_error(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:  # nothing to get wrong (no parameter, no body)
            assert mode is GenerationMode.NEGATIVE
