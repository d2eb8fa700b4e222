"""A service key its module cannot honour is a config error through the CLI: exit 2, one line."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import Project

pytestmark = pytest.mark.usefixtures("scripted")


@pytest.mark.parametrize("key", [{"incremental": True}, {"rate_limit": {"requests_per_s": 5}},
                                 {"limits": {"delay_s": 0.5}}, {"transfers": 4}])
def test_a_key_the_module_cannot_honour_is_a_config_error(project: Project, bucket: str,
                                                          key: dict[str, Any]) -> None:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"files": {"type": "scripted", "source": {"files": []}, **key}},
    })
    batch = project.write_batch([{"job_id": "j1", "service_id": "files"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "service 'files'" in line and next(iter(key)) in line and "scripted" in line, line
    assert "Traceback" not in result.stderr
