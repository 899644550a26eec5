"""The demo page in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): load it, type a sentence, run it, read the rendered translation, timing and
attention picture. With SEQLAB_DEMO_SCREENSHOT=path.png it also saves a screenshot, and with
SEQLAB_DEMO_LOGDIR=run it serves that run instead of the 2-step tiny model (how the
screenshot in docs/serving.md was made)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import TEXTS, running

from seqlab.export.predictor import Predictor
from seqlab.serve.served_model import ServedModel

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed (apt-get install chromium chromium-driver; "
    "scripts/setup.sh does as root)",
)


def test_the_demo_page_translates_a_sentence_and_draws_its_attention(
    beam_mt: ServedModel,
) -> None:
    model = beam_mt
    if os.environ.get("SEQLAB_DEMO_LOGDIR"):
        model = ServedModel(Predictor.from_logdir(Path(os.environ["SEQLAB_DEMO_LOGDIR"])))
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    expected = model.predictor.predict([TEXTS[2]])[0]
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=900,900"):
        options.add_argument(flag)
    # The driver is Debian's: Selenium must not look for (or download) one of its own.
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    with running(model) as url:
        browser = webdriver.Chrome(options=options, service=service)
        try:
            browser.get(f"{url}/")
            wait = WebDriverWait(browser, 30)
            experiment = model.description["experiment"]
            wait.until(lambda b: experiment in b.find_element(By.ID, "model").text)
            browser.find_element(By.ID, "text").send_keys(TEXTS[2])
            browser.find_element(By.ID, "attention").click()
            browser.find_element(By.ID, "submit").click()
            wait.until(lambda b: b.find_element(By.ID, "output").text.strip())
            output = browser.find_element(By.ID, "output").text
            timing = browser.find_element(By.ID, "timing").text
            picture = browser.find_element(By.ID, "picture")
            assert picture.is_displayed() and int(picture.get_attribute("width")) > 110
            if os.environ.get("SEQLAB_DEMO_SCREENSHOT"):
                browser.save_screenshot(str(Path(os.environ["SEQLAB_DEMO_SCREENSHOT"])))
        finally:
            browser.quit()
    assert output == " ".join(expected.split())  # the browser renders runs of spaces as one
    assert "decoded in" in timing and "batch of 1" in timing
