"""The registry and batch the repository ships (the demo's, the README's tour) load as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.job_config import load_batch, load_registry

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_registry_and_demo_batch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEATHER_TOKEN", "FTP_USER", "FTP_PASSWORD"):  # the secrets it reads from the environment
        monkeypatch.setenv(name, "shipped-config-check")
    monkeypatch.chdir(ROOT)
    registry = load_registry(ROOT / "project_registry.yaml")
    batch = load_batch(ROOT / "demo_batch_jobs.json", registry)
    assert batch.jobs and registry.services
