"""The status page in a real browser (Debian's chromium, headless, through chromedriver) over a store
with 50 certificates and 2,000 chargers: it renders, its numbers are the store's, search finds a
charger. Screenshots are written next to the test's temporary files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certd.config import parse_config
from certd.http.service import HttpService
from certd.renewal.status import collect
from certd.sandbox.status_fleet import LISTENER, fleet_config_toml, populate
from certd.store.db import make_engine, upgrade
from certd.store.types import utcnow
from tests.conftest import missing_part

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        missing_part("chromium and chromium-driver are not installed (scripts/bootstrap.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def fleet_server(tmp_path: Path) -> Iterator[tuple[str, Any, Path]]:
    """HttpService on its own loop thread over a populated store: (base URL, config, config path)."""
    roots = tmp_path / "roots.pem"
    roots.write_text("")
    text = fleet_config_toml(tmp_path / "state", roots, certificates=50)
    config_path = tmp_path / "certd.toml"
    config_path.write_text(text)
    config = parse_config(text, str(config_path))
    upgrade(config.db_url)
    engine = make_engine(config.db_url)
    roots.write_text(populate(engine, config, chargers=2000, now=utcnow()).roots_pem)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    service = HttpService(config, engine)
    asyncio.run_coroutine_threadsafe(service.start(), loop).result(30)
    host, port = service.addresses[0]
    try:
        yield f"http://{host}:{port}", config, config_path
    finally:
        asyncio.run_coroutine_threadsafe(service.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        engine.dispose()


def _full_page_screenshot(driver: Any, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 12000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    print(f"screenshot: {path}")
    shots = os.environ.get("CERTD_SCREENSHOT_DIR")
    if shots:
        shutil.copy(path, Path(shots) / path.name)


def test_status_page_shows_the_store(browser: Any, fleet_server: tuple[str, Any, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, config, config_path = fleet_server
    engine = make_engine(config.db_url)
    browser.get(url + "/")
    assert browser.title == "certd status"
    _full_page_screenshot(browser, tmp_path / "status-page.png")

    # The certificate table: one row per certificate, with the store's names, days left, failures.
    expected = {row["name"]: row for row in collect(config, engine)}
    rows = browser.find_elements(By.CSS_SELECTOR, "table.certs tbody tr[data-name]")
    assert len(rows) == 50 == len(expected)
    for row in rows:
        want = expected[row.get_attribute("data-name")]
        cells = row.find_elements(By.TAG_NAME, "td")
        assert cells[1].text == ", ".join(want["domains"])
        assert abs(float(cells[5].text) - want["days_left"]) <= 0.1
        assert cells[9].text.split("\n")[0] == (str(want["failures"]) if want["failures"] else "—")
    critical = browser.find_elements(By.CSS_SELECTOR, "table.certs tbody tr.critical[data-name]")
    assert [r.get_attribute("data-name") for r in critical] == [n for n, r in expected.items() if r["critical"]]

    # The rollout bar: `certd fleet status` (the same store, another code path) counts the same.
    fleet = subprocess.run([sys.executable, "-m", "certd", "--config", str(config_path), "fleet", "status", "--json"],
                           capture_output=True, text=True, timeout=120, check=True)
    counts = next(s["counts"] for s in json.loads(fleet.stdout) if s["listener"] == LISTENER)
    rollout = browser.find_element(By.CSS_SELECTOR, f'div.rollout[data-listener="{LISTENER}"]')
    for state in ("confirmed", "pending", "failed", "offline"):
        assert int(rollout.find_element(By.CSS_SELECTOR, f".n-{state}").text) == counts[state]
    enabled = int(browser.find_element(By.ID, "count-registered").text) - int(
        browser.find_element(By.ID, "count-disabled").text)
    assert int(rollout.find_element(By.CSS_SELECTOR, ".n-total").text) == sum(counts.values()) == enabled
    assert counts["confirmed"] > 1000  # most chargers hold the new roots in this store
    bar = rollout.find_element(By.CSS_SELECTOR, ".stack")
    widths = {s.get_attribute("class"): s.size["width"] for s in bar.find_elements(By.TAG_NAME, "span")}
    assert abs(sum(widths.values()) - bar.size["width"]) <= 4
    assert abs(widths["confirmed"] / bar.size["width"] - counts["confirmed"] / enabled) < 0.01

    # Charger counts and the search, server-side (the page has no script).
    assert browser.find_element(By.ID, "count-registered").text == "2000"
    box = browser.find_element(By.ID, "q")
    box.send_keys("cp-01234")  # any case
    box.submit()
    found = browser.find_elements(By.CSS_SELECTOR, "#charger-list tbody tr[data-charger]")
    assert [r.get_attribute("data-charger") for r in found] == ["CP-01234"]
    assert "1 match(es)" in browser.find_element(By.CSS_SELECTOR, "form.search").text
    _full_page_screenshot(browser, tmp_path / "status-search.png")

    # Paging: the second page of everything starts where the first ended.
    browser.get(url + "/?page=2")
    first = browser.find_element(By.CSS_SELECTOR, "#charger-list tbody tr[data-charger]")
    assert first.get_attribute("data-charger") == f"CP-{config.http.page_size:05d}"
    engine.dispose()
