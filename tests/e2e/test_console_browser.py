"""The web console in headless Chromium (Debian's, driven by Playwright) against a real device."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import ApplianceOptions
from emulator.api import ApplianceManager, BackgroundServer

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "console-t0ken"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def console_server(
    people_counter_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackgroundServer]:
    """The device API and console, with a token, over people-counter on a real device."""
    state_dir = tmp_path_factory.mktemp("console-state")
    manager = ApplianceManager(ApplianceOptions(device="console", state_dir=state_dir))
    manager.deploy_project(people_counter_project)
    with BackgroundServer(manager, token=TOKEN, close_on_exit=True) as server:
        yield server
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[object]:
    """A Chromium context with a fresh profile."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def test_console_shows_the_device_and_reboots_it(
    browser_context: object, console_server: BackgroundServer
) -> None:
    from playwright.sync_api import BrowserContext

    assert isinstance(browser_context, BrowserContext)
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{console_server.url}/?token={TOKEN}")

    # The token is taken from the address once and kept for the session only.
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('panorama-emulator-token')") == TOKEN

    # Status, nodes and cameras.
    page.wait_for_function("document.getElementById('state').textContent === 'running'", timeout=WAIT_MS)
    page.wait_for_selector("#nodes tbody tr td.state-running", timeout=WAIT_MS)
    assert page.inner_text("#nodes tbody tr td:first-child") == "code_node"
    assert "camera_node" in page.inner_text("#cameras")

    # The live HDMI view: frames keep arriving and are full HD JPEG images.
    page.wait_for_function(
        "Number(document.getElementById('hdmi').dataset.frames) > 3"
        " && document.getElementById('hdmi').naturalWidth > 0",
        timeout=WAIT_MS,
    )
    seen = int(page.get_attribute("#hdmi", "data-frames") or 0)
    page.wait_for_function(
        f"Number(document.getElementById('hdmi').dataset.frames) > {seen + 3}", timeout=WAIT_MS
    )
    assert page.evaluate("document.getElementById('hdmi').naturalWidth") == 1920

    # Logs and storage.
    page.wait_for_function("document.getElementById('log-file').options.length > 1", timeout=WAIT_MS)
    page.select_option("#log-file", "app.log")
    page.wait_for_function(
        "document.getElementById('logs').textContent.includes('people counter started')", timeout=WAIT_MS
    )
    page.click("#storage-refresh")
    page.wait_for_selector("#storage tbody a:text('people_count.json')", timeout=WAIT_MS)

    # Pause and resume the camera.
    page.click("#cameras button.camera-toggle")
    page.wait_for_function(
        "document.querySelector('#cameras tbody').textContent.includes('paused')", timeout=WAIT_MS
    )
    page.click("#cameras button.camera-toggle")
    page.wait_for_function(
        "document.querySelector('#cameras tbody').textContent.includes('live')", timeout=WAIT_MS
    )

    # The reboot button reboots: the boot count goes up.
    boots = int(page.inner_text("#boots"))
    page.click("#reboot")
    page.wait_for_function(f"document.getElementById('boots').textContent === '{boots + 1}'", timeout=WAIT_MS)
    page.wait_for_function("document.getElementById('state').textContent === 'running'", timeout=WAIT_MS)
    after = int(page.get_attribute("#hdmi", "data-frames") or 0)
    page.wait_for_function(
        f"Number(document.getElementById('hdmi').dataset.frames) > {after + 2}", timeout=WAIT_MS
    )

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"))
    assert errors == []


def test_console_without_a_token_asks_for_one(
    browser_context: object, console_server: BackgroundServer
) -> None:
    from playwright.sync_api import BrowserContext

    assert isinstance(browser_context, BrowserContext)
    page = browser_context.new_page()
    page.goto(console_server.url + "/")
    page.wait_for_selector("#token-form:not([hidden])", timeout=WAIT_MS)
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    page.wait_for_function("document.getElementById('state').textContent === 'running'", timeout=WAIT_MS)
