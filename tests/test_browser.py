"""The demo in a real browser: headless Chromium (Debian's `chromium` package, driven by Playwright; no browser
download) uploads a song, presses Classify and sees the top genre and the timeline plot. The screenshot is left in
the test's tmp folder (`page.png`)."""

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from song_fixtures import running_app, save_tiny_model, wav_song

from ast_dora.inference import GenreClassifier

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def test_upload_shows_top_genre_and_timeline(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    models = [save_tiny_model(kind, tmp_path / kind) for kind in ("vit_hybrid", "ast_dora")]
    song = wav_song(tmp_path)
    expected = GenreClassifier.from_pretrained(models[0]).analyse(song)
    screenshot = tmp_path / "page.png"
    user_data = tempfile.mkdtemp(prefix="chromium_profile_", dir=tmp_path)
    with running_app(models, tmp_path) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            user_data, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.locator("#song-input input[type=file]").set_input_files(str(song))
            # the upload has reached the server once the player offers it for download from there
            download = page.locator('#song-input a[data-testid="download-link"]')
            expect(download).to_have_attribute("href", re.compile(re.escape(song.name) + "$"))
            page.get_by_role("button", name="Classify").click()
            expect(page.locator('#genre-label [data-testid="label-output-value"]')).to_have_text(expected.genre)
            expect(page.locator("#genre-timeline img")).to_be_visible()
            expect(page.locator("#genre-summary")).to_contain_text("majority vote")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
            shutil.rmtree(user_data, ignore_errors=True)
    assert screenshot.stat().st_size > 20_000
