"""A destination plugin for the tests (``type: jsonl_log``): a third party's ``FileDestination``.

It appends one JSON line per file it is given to ``<dir>/landed.jsonl`` and keeps the bytes under
``<dir>/files/<key>``; it is installed as a real entry point of ``module_system.destinations``
(``tests/e2e/helpers.install_test_plugins``) and imports only the public ``module_system`` facade.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

from module_system import FileDestination, LandingFile, RetryPolicy, UploadError


class JsonlLogDestination(FileDestination):
    config_schema = {
        "type": "object", "additionalProperties": False, "required": ["dir"],
        "properties": {"dir": {"type": "string", "minLength": 1, "description": "Where the log and files go."}},
    }
    default_name = "jsonl_log"

    def __init__(self, config: Any, setup: Any) -> None:
        super().__init__(config, setup)
        self.root = Path(config["dir"])
        self._lock = threading.Lock()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        if ".." in key.split("/") or key.startswith("/"):
            raise UploadError(f"bad key {key}")
        return self.root / "files" / key

    def _log(self, key: str, sha256: str, status: str) -> None:
        with self._lock, open(self.root / "landed.jsonl", "a") as out:
            out.write(json.dumps({"key": key, "sha256": sha256, "status": status}) + "\n")

    def _holds(self, path: Path, sha256: str) -> bool:
        return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256

    def put_file(self, key: str, file: LandingFile, retry: RetryPolicy, *, skip_same: bool = True) -> str:
        path = self._path(key)
        if skip_same and self._holds(path, file.sha256):
            self._log(key, file.sha256, "skipped_same")
            return "skipped_same"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.path, path)
        self._log(key, file.sha256, "uploaded")
        return "uploaded"

    def put_json(self, key: str, document: Any, retry: RetryPolicy) -> str:
        body = json.dumps(document).encode()
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return "uploaded"

    def delete_owned(self, key: str, retry: RetryPolicy) -> bool:
        path = self._path(key)
        if path.exists():
            path.unlink()
            return True
        return False

    def read_json(self, key: str, retry: RetryPolicy) -> Any | None:
        path = self._path(key)
        return json.loads(path.read_text()) if path.exists() else None
