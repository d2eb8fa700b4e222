"""The dashboard in a real browser: Playwright driving Debian's chromium against ``module-system serve``.

Playwright's own browser download is never used: chromium is launched by its path
(``.ci/run`` installs the ``chromium`` package when it is missing). Screenshots of each step go
to ``$MODULE_SYSTEM_TEST_ARTIFACTS/serve-dashboard`` (default ``test-artifacts/serve-dashboard``
in the checkout); the test prints where.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.orchestrator.serve.conftest import ServeProject
from tests.orchestrator.serve.helpers import running_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000


@pytest.fixture()
def artifacts(capsys: pytest.CaptureFixture[str]) -> Path:
    root = Path(os.environ.get("MODULE_SYSTEM_TEST_ARTIFACTS") or Path(__file__).parents[3] / "test-artifacts")
    folder = root / "serve-dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    with capsys.disabled():
        print(f"\nscreenshots of the dashboard test: {folder}")
    return folder


@pytest.fixture()
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs the chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield browser
        browser.close()


def submit_in_form(page: Any, url: str, jobs: list[dict[str, str]]) -> str:
    """Fill and send the dashboard's batch form; the new run's id (its page opens)."""
    page.goto(f"{url}/")
    page.fill("#batch-json", json.dumps({"description": "browser test", "jobs": jobs}))
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    return page.url.rsplit("/", 1)[1]  # type: ignore[no-any-return]


def test_dashboard_submit_follow_live_open_error_and_rerun(browser: Any, serve_project: ServeProject,
                                                            artifacts: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with running_server(serve_project) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        # 1. A batch submitted in the form: its job is seen running, then succeeded, without a reload.
        first = submit_in_form(page, url, [{"job_id": "slow_1", "service_id": "slow"}])
        slow = page.locator('tr[data-job="slow_1"] .status')
        expect(slow).to_have_text("running")
        expect(page.locator("#run-jobs")).to_have_text("1 running")
        page.evaluate("window.sameDocument = true")
        page.screenshot(path=str(artifacts / "01-job-running.png"), full_page=True)
        serve_project.gate.set()
        expect(slow).to_have_text("succeeded")
        expect(page.locator("#run-status")).to_have_text("succeeded")
        expect(page.locator("#run-jobs")).to_have_text("1 succeeded")
        expect(page.locator('tr[data-job="slow_1"] [data-files="uploaded"]')).to_have_text("1")
        assert page.evaluate("window.sameDocument") is True, "the page was updated in place, not reloaded"
        page.screenshot(path=str(artifacts / "02-job-succeeded.png"), full_page=True)

        # 2. A second run with a job that fails (its folder does not exist yet).
        second = submit_in_form(page, url, [{"job_id": "slow_2", "service_id": "slow"},
                                            {"job_id": "later_1", "service_id": "later"}])
        expect(page.locator("#run-status")).to_have_text("failed")
        expect(page.locator('tr[data-job="later_1"] .status')).to_have_text("failed")
        expect(page.locator("#failed")).to_be_visible()
        expect(page.locator("#failed-list")).to_contain_text("no such folder")
        expect(page.locator("#events")).to_contain_text("source_failed")
        page.screenshot(path=str(artifacts / "03-run-with-a-failed-job.png"), full_page=True)

        # The runs list shows both.
        page.goto(f"{url}/")
        expect(page.locator(f'tr[data-run="{first}"] .status')).to_have_text("succeeded")
        expect(page.locator(f'tr[data-run="{second}"] .status')).to_have_text("failed")
        page.screenshot(path=str(artifacts / "04-runs.png"), full_page=True)

        # 3. The failed job's error, on its own page.
        page.goto(f"{url}/runs/{second}")
        page.locator("#failed-list a", has_text="later_1").click()
        page.wait_for_url(re.compile(r"/jobs/\d+$"))
        expect(page.locator("#job-error")).to_contain_text("no such folder")
        page.screenshot(path=str(artifacts / "05-failed-job-error.png"), full_page=True)

        # 4. The folder appears; re-run: a new run of the failed job alone, which succeeds.
        serve_project.make_later()
        page.goto(f"{url}/runs/{second}")
        page.click("#retry-failed")
        page.wait_for_url(lambda u: "/runs/" in u and not u.endswith(second))
        third = page.url.rsplit("/", 1)[1]
        expect(page.locator("#run-status")).to_have_text("succeeded")
        expect(page.locator('tr[data-job="later_1"] .status')).to_have_text("succeeded")
        assert page.locator("#jobs tbody tr").count() == 1, "only the failed job ran again"
        page.screenshot(path=str(artifacts / "06-rerun-succeeded.png"), full_page=True)

        page.goto(f"{url}/")
        for run_id in (first, second, third):
            expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
        page.goto(f"{url}/hosts")
        expect(page.locator("h1")).to_have_text("Hosts")
    assert sorted(p.name for p in artifacts.glob("*.png")) == [
        "01-job-running.png", "02-job-succeeded.png", "03-run-with-a-failed-job.png", "04-runs.png",
        "05-failed-job-error.png", "06-rerun-succeeded.png"]
