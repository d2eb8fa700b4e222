"""Fixtures of the ``serve`` tests: a project whose batches really run, and the server over it.

The registry has three services landing in a local folder:

* ``drop``: a local folder with two files (one valid JSON file, one rejected by its schema);
* ``later``: a local folder that does not exist until a test makes it (:meth:`ServeProject.make_later`),
  so its job fails first and succeeds when re-run;
* ``slow``: an API endpoint on a local :class:`ApiServer` whose answer waits for
  :attr:`ServeProject.gate`, so a job stays ``running`` until the test lets it finish.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply

READ_TOKEN = "read-token-0123456789abcdef"
OPERATE_TOKEN = "operate-token-0123456789abcdef"
BOTH_TOKEN = "both-token-0123456789abcdef"


@dataclass
class ServeProject:
    root: Path
    api: ApiServer
    gate: threading.Event = field(default_factory=threading.Event)

    @property
    def registry(self) -> Path:
        return self.root / "project_registry.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def make_later(self) -> None:
        (self.root / "later").mkdir(exist_ok=True)
        (self.root / "later" / "fixed.json").write_text('{"id": 3, "name": "fixed"}')

    def report(self, run_id: str) -> dict[str, Any]:
        return json.loads((self.state_dir / f"report_{run_id}.json").read_text())


def write_project(root: Path, api: ApiServer) -> ServeProject:
    project = ServeProject(root, api)
    (root / "drop").mkdir()
    (root / "drop" / "good.json").write_text('{"id": 1, "name": "good"}')
    (root / "drop" / "bad.json").write_text('{"id": "not a number"}')
    (root / "item.schema.json").write_text(json.dumps({
        "type": "object", "required": ["id", "name"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}))
    local = {"type": "local", "path": str(root / "landing")}
    checked = {"json_schema": str(root / "item.schema.json")}
    project.registry.write_text(yaml.safe_dump({"version": 1, "services": {
        "drop": {"type": "local", "source": {"path": str(root / "drop"), "min_age_s": 0},
                 "destination": local, "validate": checked},
        "later": {"type": "local", "source": {"path": str(root / "later"), "min_age_s": 0},
                  "destination": local, "validate": checked},
        "slow": {"type": "api", "source": {"base_url": api.url, "endpoints": ["/v1/slow"]},
                 "destination": local, "retry": {"attempts": 1}, "limits": {"max_connections": 2}},
    }}, sort_keys=False))

    def slow(request: ApiRequest) -> ApiReply:
        project.gate.wait(60)
        return json_reply({"id": 7, "name": "slow"})

    api.route("/v1/slow", slow)
    return project


@pytest.fixture()
def api_server() -> Iterator[ApiServer]:
    with ApiServer() as api:
        yield api


@pytest.fixture()
def serve_project(tmp_path: Path, api_server: ApiServer) -> Iterator[ServeProject]:
    project = write_project(tmp_path, api_server)
    yield project
    project.gate.set()  # a job still waiting ends, so the server's runner can stop
