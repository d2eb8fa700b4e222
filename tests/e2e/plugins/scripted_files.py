"""A test-only file source, ``type: scripted_files``: a listing and downloads that behave as told.

Installed for a CLI run like ``scripted_source`` (the ``scripted`` fixture of
``tests/e2e/conftest.py``). It is a real :class:`~module_system.FileSource` (list entries,
download one), so the end-to-end tests see what the framework does around any file source:
filters, size limits, incremental skips, per-file retries, the failure cut-off, parallel
transfers under the per-host cap, and the manifest order.

Source keys: ``host`` (the host whose slots downloads take), ``trace`` (a file each download
appends ``start``/``end`` lines to, with the time: what the tests measure concurrency and
downloads with), ``list_fail`` (``transient`` or ``permanent``: the listing fails; with
``list_fail_flag``, a file, only while that file exists, and the failure deletes it: one
failed listing), and ``files``, each with ``name``, ``body``, and optionally ``size`` (the
listed size; default the body's, null: unknown), ``etag`` (version mark, default ``v1``),
``delay_s`` (download time), ``fail`` (``transient``: the first ``fail_times`` tries fail
with a transient error; ``permanent``: every try fails; ``vanish``: the file is gone;
``fatal``: credentials refused, the whole source fails).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from module_system import (
    Entry,
    FileSink,
    FileSource,
    FileVanished,
    SourceError,
    TransientSourceError,
)


class ScriptedAuthError(SourceError):
    """The scripted server refused the credentials: no other file can be read either."""


class ScriptedFiles(FileSource):
    source_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["files"],
        "properties": {
            "host": {"type": "string", "default": "files.test"},
            "trace": {"type": ["string", "null"], "default": None},
            "list_fail": {"enum": ["transient", "permanent", None], "default": None},
            "list_fail_flag": {"type": ["string", "null"], "default": None},
            "files": {"type": "array", "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"}, "body": {"type": "string", "default": ""},
                    "size": {"type": ["integer", "null"]}, "etag": {"type": "string", "default": "v1"},
                    "delay_s": {"type": "number", "default": 0},
                    "fail": {"enum": ["transient", "permanent", "vanish", "fatal"]},
                    "fail_times": {"type": "integer", "default": 1}}}},
        },
    }
    fatal_errors = (ScriptedAuthError,)

    @classmethod
    def hosts(cls, source: Mapping[str, Any]) -> tuple[str, ...]:
        return (f"scripted://{source['host']}",)

    def __init__(self, source: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(source, ctx)
        self._tries: Counter[str] = Counter()
        self._lock = threading.Lock()

    def list_entries(self) -> Iterator[Entry]:
        failing = self.source["list_fail"]
        flag = self.source["list_fail_flag"]
        if failing and (flag is None or os.path.exists(flag)):
            if flag is not None:
                os.remove(flag)
            error = TransientSourceError if failing == "transient" else SourceError
            raise error(f"scripted://{self.source['host']}/: listing failed (scripted, {failing})")
        for spec in self.source["files"]:
            body = spec["body"].encode()
            size = spec["size"] if "size" in spec else len(body)
            yield Entry(spec["name"], f"scripted://{self.source['host']}/{spec['name']}", size,
                        {"etag": spec["etag"]}, handle=spec)

    def download(self, entry: Entry, sink: FileSink) -> Mapping[str, str] | None:
        spec = entry.handle
        with self._lock:
            self._tries[entry.name] += 1
            tries = self._tries[entry.name]
        self._trace("start", entry.name)
        try:
            if spec.get("delay_s"):
                self.ctx.stop.wait(spec["delay_s"])
            fail = spec.get("fail")
            if fail == "transient" and tries <= spec["fail_times"]:
                raise TransientSourceError(f"{entry.source_uri}: try {tries} failed (scripted, transient)")
            if fail == "permanent":
                raise SourceError(f"{entry.source_uri}: cannot be read (scripted)")
            if fail == "vanish":
                raise FileVanished(f"{entry.source_uri}: gone (scripted)")
            if fail == "fatal":
                raise ScriptedAuthError(f"{entry.source_uri}: login refused (scripted)")
            body = spec["body"].encode()
            for start in range(0, len(body), 64):
                sink.write(body[start:start + 64])
            return None
        finally:
            self._trace("end", entry.name)

    def _trace(self, event: str, name: str) -> None:
        if self.source["trace"]:
            line = json.dumps({"event": event, "name": name, "t": time.monotonic()}) + "\n"
            with self._lock, open(self.source["trace"], "a", encoding="utf-8") as out:
                out.write(line)
