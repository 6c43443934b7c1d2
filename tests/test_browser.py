"""The demo in a real browser: headless Chromium (Debian's `chromium` package, driven by Playwright; no browser
download) uploads a song, presses Classify and sees the top genre and the timeline plot, with either backend; and
sees a first result while the song is still being analysed. The screenshots are left in the test's tmp folder
(`page.png`, `partial.png`)."""

import contextlib
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from conftest import require_installed
from song_fixtures import export_tiny_onnx, generated_wav, running_app, save_tiny_model, wav_song

from ast_dora.inference import GenreClassifier

# Starts the app and a headless browser for each test (not timed here: Chromium is not on the development machine).
pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
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


@contextlib.contextmanager
def browser_page(tmp_path):
    from playwright.sync_api import sync_playwright

    user_data = tempfile.mkdtemp(prefix="chromium_profile_", dir=tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            user_data,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()
            shutil.rmtree(user_data, ignore_errors=True)


def upload_and_classify(page, url, song):
    from playwright.sync_api import expect

    page.goto(url)
    page.locator("#song-input input[type=file]").set_input_files(str(song))
    # the upload has reached the server once the player offers it for download from there
    download = page.locator('#song-input a[data-testid="download-link"]')
    expect(download).to_have_attribute("href", re.compile(re.escape(song.name) + "$"))
    page.get_by_role("button", name="Classify").click()


@pytest.fixture(scope="module", autouse=True)
def chromium():
    """Before any model or server is set up: the browser these tests drive."""
    require_installed(
        Path(CHROMIUM).is_file(),
        f"Chromium ({CHROMIUM}, Debian's chromium package)",
        "apt-get install chromium",
    )


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_models")
    return [export_tiny_onnx(save_tiny_model(kind, root / kind)) for kind in ("vit_hybrid", "ast_dora")]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_upload_shows_top_genre_and_timeline(tmp_path, tiny_models, backend):
    from playwright.sync_api import expect

    song = wav_song(tmp_path)
    # two models served: the default answer is "both", the weighted mean of the two models' song probabilities
    both = GenreClassifier.ensemble(
        [GenreClassifier.from_pretrained(m, backend=backend, min_music_probability=0.0) for m in tiny_models]
    )
    expected = both.analyse(song)
    screenshot = tmp_path / "page.png"
    with (
        running_app(tiny_models, tmp_path, backend=backend, min_music_probability=0.0) as url,
        browser_page(tmp_path) as page,
    ):
        upload_and_classify(page, url, song)
        expect(page.locator('#genre-label [data-testid="label-output-value"]')).to_have_text(expected.genre)
        expect(page.locator("#genre-timeline img")).to_be_visible()
        expect(page.locator("#genre-summary")).to_contain_text("majority vote")
        expect(page.locator("#genre-summary")).to_contain_text(
            "ViT-hybrid · vit_hybrid + AST-DoRA · ast_dora"
        )
        page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 20_000


class SlowRunner:
    """The classifier's own backend, a fixed delay per batch: a tiny model analyses a song in milliseconds, and
    the browser must get the time to show the partial result before the next batch replaces it."""

    def __init__(self, runner, seconds: float):
        self.runner, self.seconds = runner, seconds

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def __call__(self, input_values):
        time.sleep(self.seconds)
        return self.runner(input_values)

    def outputs(self, input_values, names=None):
        time.sleep(self.seconds)
        return self.runner.outputs(input_values, names)


def test_first_result_shows_before_the_last_window_is_done(tmp_path, tiny_models):
    from playwright.sync_api import expect

    song = generated_wav(tmp_path / "song.wav", 16.0)  # 4 windows of 4 s: two batches of two
    screenshot = tmp_path / "partial.png"

    def slow_down(classifier):
        classifier.runner = SlowRunner(classifier.runner, seconds=1.5)

    # the ViT-hybrid alone: its windows are the ones counted
    with (
        running_app(
            tiny_models[:1], tmp_path, backend="onnx", batch_size=2, classifier_hook=slow_down
        ) as url,
        browser_page(tmp_path) as page,
    ):
        upload_and_classify(page, url, song)
        summary = page.locator("#genre-summary")
        # the first batch: a genre, a timeline and "2/4 windows", while the second batch is still running
        expect(summary).to_contain_text("2/4 windows analysed")
        expect(page.locator('#genre-label [data-testid="label-output-value"]')).not_to_be_empty()
        expect(page.locator("#genre-timeline img")).to_be_visible()
        page.screenshot(path=str(screenshot), full_page=True)
        assert "majority vote" not in summary.inner_text()
        # then the whole song
        expect(summary).to_contain_text("majority vote of 4 windows")
        expect(summary).not_to_contain_text("2/4")
    assert screenshot.stat().st_size > 20_000
