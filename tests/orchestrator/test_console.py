"""The end-of-run summary: names and errors are shown, never obeyed (escapes, rich markup)."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest

from orchestrator.console import print_summary
from orchestrator.job_runner import JobResult

HOSTILE = "s3://v/\x1b[2J[/bold]\x1b]52;c;aGk=\x07\u202e.json"


def result(error: str | None) -> JobResult:
    return JobResult(job_id="j1", service_id="s1", status="failed", attempts=1, files={"failed": 1}, bytes=0,
                     seconds=0.5, error=error, source_used="primary", started_at=None, finished_at=None)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_hostile_error_text_is_escaped(fmt: str) -> None:
    out = io.StringIO()
    failed = Path("temp/failed \x1b[31m[/bold][red].json")
    print_summary([result(HOSTILE)], fmt, failed, None, stream=out,
                  rerun_args=["--batch-file", str(failed), "--registry", "my registry.yaml"])
    text = out.getvalue()
    assert not any(c in text for c in "\x1b\x07\u202e")
    if fmt == "console":  # [/bold] would be a rich MarkupError if read as markup
        assert "s3://v/\\x1b[2J[/bold]" in text and "failed \\x1b[31m[/bold][red].json" in text
        hint = text.split("(re-run with ", 1)[1].rsplit(")", 1)[0]
    else:
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[0]["error"] == HOSTILE
        hint = lines[-1]["rerun"]
    assert shlex.split(hint)[-1] == "my registry.yaml"
