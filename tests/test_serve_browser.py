"""End to end in a real browser: `unixcxr serve` started as a user would (its own process, loopback
only), headless Chromium driven by selenium uploads an X-ray and reads the report, then enters a
report and receives the image; both equal what the pipeline computes, and the server's log holds
neither text. Needs Debian's chromium and chromium-driver (no browser is ever downloaded)."""

import io
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from test_serve import free_port
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="pip install selenium (in the dev extra)")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="the browser test needs Debian's chromium: apt-get install -y chromium chromium-driver"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--window-size=1400,1000",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]  # the page can reach loopback only
REPORT = "FINDINGS: BROWSER-MARKER small left pleural effusion."
STARTUP_S, ANSWER_S = 240, 120


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return write_demo_model_folder(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def served(model_folder, tmp_path_factory):
    port, log = free_port(), tmp_path_factory.mktemp("log") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "unixcxr", "serve", "--model", str(model_folder),
                                    "--host", "127.0.0.1", "--port", str(port)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, f"server exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"server did not answer in {STARTUP_S} s: {log.read_text()}"
            try:
                if httpx.get(f"{url}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_upload_an_xray_read_the_report_then_draw_an_image(served, browser, model_folder, tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = served
    pipe = UniXPipeline.from_pretrained(model_folder)
    xray = np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)
    Image.fromarray(xray).save(tmp_path / "cxr.png")
    expected_report = pipe.report(tmp_path / "cxr.png")[0]  # the app's defaults: released prompt, 256 tokens
    wait = WebDriverWait(browser, ANSWER_S)

    browser.get(url)

    def until(condition, what: str, state=lambda: ""):
        """wait.until, failing with the step that never happened and what the page showed instead."""
        try:
            return wait.until(condition)
        except TimeoutException:
            pytest.fail(f"{what} within {ANSWER_S} s {state()}".rstrip())

    until(lambda d: d.find_element(By.CSS_SELECTOR, "#report-upload input[type=file]"), "no upload field").send_keys(
        str(tmp_path / "cxr.png"))
    until(lambda d: "cxr.png" in d.find_element(By.ID, "report-upload").text, "the upload did not finish",
          lambda: f"(the upload box shows {browser.find_element(By.ID, 'report-upload').text!r})")
    browser.find_element(By.ID, "report-button").click()
    report_box = browser.find_element(By.CSS_SELECTOR, "#report-text textarea")
    until(lambda d: report_box.get_attribute("value") == expected_report, "the report did not arrive",
          lambda: f"(the box holds {report_box.get_attribute('value')!r}, expected {expected_report!r})")
    browser.save_screenshot(str(tmp_path / "report.png"))

    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Image from report')]").click()
    until(lambda d: d.find_element(By.CSS_SELECTOR, "#gen-text textarea").is_displayed(), "no image tab")
    browser.find_element(By.CSS_SELECTOR, "#gen-text textarea").send_keys(REPORT)
    browser.find_element(By.ID, "gen-button").click()
    source = until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gen-image img")
                   and d.find_element(By.CSS_SELECTOR, "#gen-image img").get_attribute("src"), "no image arrived")
    drawn = Image.open(io.BytesIO(httpx.get(source).content))
    expected_image = pipe.generate(REPORT, steps=50, cfg_text=2.0, seed=0)[0]  # the tab's defaults
    assert drawn.format == "PNG" and np.array_equal(np.asarray(drawn.convert("RGB")), np.asarray(expected_image))

    server_log = log.read_text()
    assert "BROWSER-MARKER" not in server_log and expected_report not in server_log
