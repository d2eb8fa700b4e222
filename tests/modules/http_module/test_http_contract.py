"""HttpModule against the module contract suite, on a local HTTP file server with autoindex pages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from module_system.contract import ModuleContract
from modules.http_module.main import HttpModule
from tests.servers.http_files import HttpFileServer


@pytest.fixture(scope="module")
def http_files() -> Iterator[HttpFileServer]:
    with HttpFileServer() as server:
        yield server


class TestHttpContract(ModuleContract):
    @pytest.fixture(autouse=True)
    def _server(self, http_files: HttpFileServer) -> None:
        self.server = http_files

    @pytest.fixture
    def module_cls(self) -> type[HttpModule]:
        return HttpModule

    def make_source(self, tmp_path: Path, files: dict[str, bytes]) -> dict[str, Any]:
        folder = f"contract-{uuid.uuid4().hex[:12]}"
        for name, data in files.items():
            self.server.put(f"{folder}/{name}", data)
        if not files:  # an empty folder still has its index page
            self.server.put(f"{folder}/.keep-folder-listed", b"")
        return {"index": [f"{self.server.url}/{folder}/"], "recursive": True,
                "exclude": [".keep-folder-listed"]}

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        return {"index": [f"{self.server.url}/does-not-exist-{uuid.uuid4().hex[:12]}/"]}
