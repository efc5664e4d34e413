"""A real browser for page tests: headless Chromium from the Debian packages, driven by Selenium.

``.ci/run`` installs ``chromium`` and ``chromium-driver``; Selenium is pointed at those two binaries, so it
never downloads a browser or a driver of its own. Each ``browser`` gets a fresh profile folder and is quit
after the test. Use it from a test module with ``from tests.integration.browser import browser  # noqa: F401``
(pytest finds fixtures imported into the module) or call ``open_browser`` directly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

WINDOW = (1280, 1000)
PAGE_LOAD_TIMEOUT_S = 120.0  # a loaded 2-core box can be slow to answer a first page


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) from the system packages, or None when either is missing."""
    browser = os.environ.get("ADKD_TEST_CHROMIUM") or _binary("chromium", "chromium-browser")
    driver = os.environ.get("ADKD_TEST_CHROMEDRIVER") or _binary("chromedriver")
    if not browser or not driver:
        return None
    return browser, driver


def open_browser(profile: Path, window: tuple[int, int] = WINDOW) -> Any:
    """A headless Chromium WebDriver with its own profile in ``profile``; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    browser, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces it may not have
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=driver)
    drv = webdriver.Chrome(service=service, options=options)
    drv.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    return drv


@pytest.fixture
def browser() -> Iterator[Any]:
    """A fresh headless Chromium (Selenium WebDriver) for one test; skipped where Chromium is not installed."""
    if chromium_paths() is None:
        pytest.skip("chromium/chromedriver are not installed; .ci/run installs them (apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="adkd-chromium-"))
    drv = open_browser(profile)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)
