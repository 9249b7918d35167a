"""The run's page (jaxmusic.evaluate --page) opened in a real browser: headless Chromium
(Debian's chromium and chromium-driver, which scripts/setup.sh installs where apt-get
can), driven with Selenium."""

import base64
import re
import shutil
import tempfile

import pytest

from jaxmusic import evaluate

_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--autoplay-policy=no-user-gesture-required", "--window-size=1280,2000")  # fmt: skip


def _browser():
    """A headless Chromium under Selenium, or a skip that says what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (scripts/setup.sh installs the dev extra)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no Chromium here: install Debian's chromium and chromium-driver (scripts/setup.sh does "
                    "where apt-get can run)")  # fmt: skip
    options = webdriver.ChromeOptions()
    for flag in (*_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='jaxmusic-chromium-')}"):
        options.add_argument(flag)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


# Each <audio>: wait for its metadata, then play and pause it: [duration, True or the error].
_PLAY_EVERY_AUDIO = """
const done = arguments[arguments.length - 1];
Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(ok => {
  const play = () => a.play().then(() => { a.pause(); ok([a.duration, true]); },
                                   e => ok([a.duration, String(e)]));
  a.addEventListener('error', () => ok([NaN, 'error ' + (a.error && a.error.code)]));
  if (a.readyState >= 1) play(); else { a.addEventListener('loadedmetadata', play); a.load(); }
}))).then(done);
"""


def test_the_run_page_opens_in_a_browser_with_every_picture_and_player_working(trained, tmp_path):
    page = tmp_path / "run.html"
    flags = [
        "--num_samples",
        "3",
        "--num_notes",
        "12",
        "--batch",
        "3",
        "--long_notes",
        "0",
        "--form_notes",
        "0",
    ]
    assert evaluate.main(["--workdir", str(trained), *flags, "--json", str(tmp_path / "run.json")]) == 0
    text = page.read_text()  # beside --json by default
    assert len(text.encode()) < 10_000_000 and "Per-note likelihood" in text and "Kneser-Ney 2-gram" in text
    audio = re.findall(r"src='data:audio/ogg;base64,([A-Za-z0-9+/=]+)'", text)
    assert 3 < len(audio) <= 6  # three samples, and each distinct piece's real continuation once
    assert all(base64.b64decode(a)[:4] == b"OggS" for a in audio)

    browser = _browser()
    try:
        browser.get(page.as_uri())
        images = browser.execute_script("return [...document.images].map(i => [i.complete, i.naturalWidth])")
        played = browser.execute_async_script(_PLAY_EVERY_AUDIO)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        shot = tmp_path / "run.png"
        assert browser.save_screenshot(str(shot))  # for a person to look at
    finally:
        browser.quit()
    assert not errors, errors
    assert len(images) == text.count("<img ") and all(done and width > 0 for done, width in images), images
    assert len(played) == len(audio)
    assert all(ok is True and duration > 0.5 for duration, ok in played), played
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, shot
