"""The dashboard's Webhook panel in headless Chromium: set the URL, see the secret, get a
verified delivery, see it listed, rotate, remove; a bad URL is explained."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_dashboard_browser as browser_tests
from tests.support.receiver import Receiver
from tests.test_oneprocess import Up, wait_status

browser = browser_tests.browser
expect = browser_tests.expect
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_webhook_panel_in_chromium(tmp_path: Path, up_env: dict[str, str], browser: object,
                                   receiver: Receiver) -> None:
    env = {**up_env, "ALLOW_PRIVATE_WEBHOOKS": "true"}
    up = Up(tmp_path / "data", env)
    try:
        email, password = (tmp_path / "data" / "demo-login.txt").read_text().split()
        context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
        context.set_default_timeout(15_000)
        page = context.new_page()
        problems: list[str] = []
        browser_tests._watch(page, problems)
        page.goto(up.base + "/")
        page.fill("#login-email", email)
        page.fill("#login-password", password)
        page.click("#login-submit")
        expect(page.locator("#app-view")).to_be_visible()
        expect(page.locator("#webhook-rotate")).to_be_disabled()

        page.fill("#webhook-url", "ftp://example.com/hook")
        page.click("#webhook-save")
        expect(page.locator("#webhook-error")).to_contain_text("http or https")

        page.fill("#webhook-url", receiver.url("/hook"))
        page.click("#webhook-save")
        secret_el = page.locator("#webhook-secret")
        expect(secret_el).to_have_text(SECRET)
        secret = secret_el.inner_text()
        expect(page.locator("#webhook-rotate")).to_be_enabled()

        api = up.session()
        key = api.get(up.base + "/api/library").json()["items"][0]["key"]
        job_id = api.post(up.base + "/api/templates/video", json={
            "templateSlug": "night-life-roller", "startKey": key}).json()["jobId"]
        assert wait_status(api, up.base, job_id, ("completed", "failed"))["status"] == \
            "completed"
        (got,) = receiver.wait_for("/hook", 1)
        assert got.verify(secret)["data"]["jobId"] == job_id

        page.reload()
        expect(page.locator("#webhook-url")).to_have_value(receiver.url("/hook"))
        expect(page.locator("#webhook-secret-row")).to_be_hidden()  # shown once, on save
        delivered = page.locator("#delivery-list .delivery[data-state='delivered']")
        expect(delivered).to_have_count(1, timeout=20_000)
        expect(delivered).to_contain_text("video.completed")
        browser_tests.ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator(".panel.webhook").screenshot(
            path=str(browser_tests.ARTIFACTS / "webhook-panel.png"))

        page.click("#webhook-rotate")
        expect(secret_el).to_have_text(SECRET)
        assert secret_el.inner_text() != secret
        page.click("#webhook-remove")
        expect(page.locator("#webhook-url")).to_have_value("")
        expect(page.locator("#webhook-rotate")).to_be_disabled()
        assert api.get(up.base + "/api/webhook").status_code == 404
        time.sleep(0.5)
        # Expected: /api/me before login (401), the refused URL (400), no webhook yet (404).
        unexpected = [p for p in problems if not re.search(r"status of (400|401|404)", p)]
        assert unexpected == [], unexpected
        context.close()
    finally:
        up.stop()
