"""FtpModule against the module contract suite, on the session FTP server."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from module_system.contract import ModuleContract
from module_system.testing import FtpServer
from modules.ftp_module.main import FtpModule


class TestFtpContract(ModuleContract):
    @pytest.fixture(autouse=True)
    def _server(self, ftp_server: FtpServer, ftp_root: Path) -> None:
        self.server = ftp_server
        self.root = ftp_root

    @pytest.fixture
    def module_cls(self) -> type[FtpModule]:
        return FtpModule

    def _source(self, path: str) -> dict[str, Any]:
        return {"host": self.server.host, "port": self.server.port, "user": self.server.user,
                "password": self.server.password, "path": path}

    def make_source(self, tmp_path: Path, files: dict[str, bytes]) -> dict[str, Any]:
        folder = f"contract-{uuid.uuid4().hex[:12]}"
        for name, data in files.items():
            path = self.root.joinpath(folder, *name.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (self.root / folder).mkdir(exist_ok=True)
        return self._source("/" + folder)

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        return self._source(f"/does-not-exist-{uuid.uuid4().hex[:12]}")
