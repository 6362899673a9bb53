"""The report in a real browser: Debian's headless Chromium through Selenium and Debian's chromedriver.

Nothing is downloaded: the browser and driver are the apt packages ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them). Without them a developer sees a skip with the reason; with ``CI`` set the test fails instead, so CI
never passes without having looked at the page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fgvlm.report.html import build_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
QUIET_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
    "--window-size=1200,900",
)


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    reason = f"browser test needs {', '.join(missing)}; apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*QUIET_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_report_renders_in_chromium(report_study, tmp_path, browser):
    result = build_report([report_study], tmp_path / "report", detail=["eval-generate"])
    browser.get(result.html.resolve().as_uri())
    assert browser.title.startswith("fgvlm report")
    images = browser.execute_script("return document.images.length")
    broken = browser.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"
    )
    assert images >= 20 and broken == []
    rows = browser.execute_script("return document.querySelectorAll('#results tbody tr:not(.group)').length")
    assert rows == len(result.rows) == 4
    run_ids = browser.execute_script(
        "return [...document.querySelectorAll('#results tbody tr:not(.group) td:first-child')]"
        ".map(td => td.textContent.trim())"
    )
    assert run_ids == [row.run_id for row in result.rows]
    assert browser.execute_script("return document.scripts.length") == 0
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    screenshot = result.html.with_name("report.png")
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_a_missing_browser_skips_for_developers_and_fails_in_ci(tmp_path, monkeypatch):
    import sys

    module = sys.modules[__name__]
    monkeypatch.setattr(module, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set but browser test needs .*no-chromium"):
        require_browser()
