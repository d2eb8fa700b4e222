"""A test-only source module, ``type: scripted``, that yields exactly what its source says.

Installed for a CLI run as a real plugin: a test writes a ``.dist-info`` folder naming
``scripted = scripted_source:ScriptedModule`` in the ``module_system.modules`` group and
puts it and this folder on the subprocess's ``PYTHONPATH`` (see ``tests/e2e/test_keys.py``).
It lets an end-to-end test produce what no built-in source does on purpose: two files
with one source URI (a plugin writing a CSV and a JSON Lines file of one query), or a
source that fails after some files.

Source keys: ``files`` (each ``name``, ``uri``, ``body``; ``fail: true`` yields it as
FetchFailed), ``then_fail`` (after the files, raise a SourceError: the source fails).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from module_system import BaseModule, FetchedFile, FetchFailed, SourceError


class ScriptedModule(BaseModule):
    source_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["files"],
        "properties": {
            "files": {"type": "array", "items": {
                "type": "object", "required": ["name", "uri"], "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "uri": {"type": "string"},
                               "body": {"type": "string", "default": ""}, "fail": {"type": "boolean"}}}},
            "then_fail": {"type": "boolean", "default": False},
        },
    }

    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed]:
        for item in self.source["files"]:
            if item.get("fail"):
                yield FetchFailed(item["name"], item["uri"], "scripted failure")
                continue
            with self.ctx.new_file(workdir, item["name"], item["uri"]) as sink:
                sink.write(item.get("body", "").encode())
                yield sink.finish()
        if self.source["then_fail"]:
            raise SourceError("scripted source failure")
