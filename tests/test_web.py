"""The web page in a real headless Chromium, on a service that requires API keys: log in with a
key, upload a clip for signed playback, watch it become ready, open the player, see both
upscaled frames and the PSNR plot, and the LR stream playing in hls.js through tokenised URLs.
Skipped (with the reason) where Chromium or Playwright is missing; `.ci/run` installs Debian's
chromium so that CI runs it.  The screenshot is kept in ``test-artifacts/``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from helpers import wait_while_progressing
from server.launch import start_server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FITCAST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)"),
]
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")


@pytest.fixture
def server(tmp_path):
    from server.keys import KeyStore

    _, key = KeyStore(tmp_path / "store" / "jobs.sqlite").create("web")
    proc, base = start_server(tmp_path / "store", env={"FITCAST_TRAIN_ITERATIONS": "30", "FITCAST_POLL_SECONDS": "0.2"})
    yield base, key
    proc.terminate()
    proc.wait(30)


def test_the_page_puts_no_server_text_into_html():
    """Asset ids, stages and error details reach the page from uploads: only ever as text."""
    script = (ROOT / "server" / "static" / "app.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_upload_watch_progress_and_compare_in_a_browser(server, chaplin_piece):
    server, key = server
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server + "/")
            assert page.title() == "fitcast"
            page.wait_for_function("document.getElementById('assets-empty').textContent.includes('Unauthorized')")
            page.fill("#key-input", key)
            page.click("#key-form button")
            page.select_option("#upload-preset", "fast")
            page.check("#upload-signed")
            page.set_input_files("#upload-file", str(chaplin_piece))
            page.click("#upload-button")
            page.wait_for_function("document.getElementById('upload-progress').value === 100 && "
                                   "!document.getElementById('upload-button').disabled", timeout=60_000)
            assert page.inner_text("#upload-status").startswith("uploaded: "), page.inner_text("#upload-status")
            row = page.locator("#assets tbody tr").first
            row.wait_for(timeout=10_000)
            # live progress: the row moves through the stages to ready
            seen = set()

            def poll() -> tuple[str | None, str]:
                text = row.locator("td").nth(2).inner_text()
                seen.add(text)
                return row.get_attribute("data-status"), text

            status, _ = wait_while_progressing(poll, done=lambda r: r[0] in ("ready", "errored"), progress=lambda r: r)
            assert status == "ready", row.inner_text()
            assert len(seen - {""}) >= 2, seen  # more than one stage was shown on the way
            row.locator("a.open").click()
            page.wait_for_selector("#player-view:not([hidden])")
            for img in ("#cmp-lanczos", "#cmp-fitcast", "#psnr-plot"):
                page.wait_for_function(f"document.querySelector('{img}').complete && "
                                       f"document.querySelector('{img}').naturalWidth > 0", timeout=60_000)
            widths = page.evaluate("[...document.querySelectorAll('#cmp-lanczos, #cmp-fitcast')]"
                                   ".map(i => [i.naturalWidth, i.naturalHeight])")
            assert widths == [[640, 360], [640, 360]]  # the chaplin piece (whole patches already)
            # the two images differ: the models changed pixels
            lz = httpx.get(page.eval_on_selector("#cmp-lanczos", "i => i.src")).content
            sr = httpx.get(page.eval_on_selector("#cmp-fitcast", "i => i.src")).content
            assert lz != sr
            # a signed asset: its playlist needs the page's token
            asset_id = page.inner_text("#player-title")
            assert httpx.get(f"{server}/v1/assets/{asset_id}/hls/master.m3u8").status_code == 403
            # the LR stream really plays in hls.js: enough data for the current frame, and time moving on
            page.evaluate("document.getElementById('lr-video').play()")
            page.wait_for_function("document.getElementById('lr-video').readyState >= 2", timeout=60_000)
            page.wait_for_function("document.getElementById('lr-video').currentTime > 0.2", timeout=60_000)
            assert page.locator("#bits tbody tr").count() >= 3
            assert "PSNR-Y" in page.inner_text("#quality")
            page.select_option("#cmp-view", "slider")
            assert page.is_visible("#cmp-slider")
            page.select_option("#cmp-view", "side")
            page.screenshot(path=str(ARTIFACTS / "web-player.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()


def test_a_ladder_switches_rungs_in_hls_js(server, ladder_dir, tmp_path):
    """A ladder asset in the store: the page lists its rungs, hls.js plays the master, and capping
    the level makes it switch rungs; the page shows the rung in use."""
    from server.jobs import JobStore
    from server.keys import KeyStore

    base, key = server
    store_root = tmp_path / "store"
    owner = next(k.id for k in KeyStore(store_root / "jobs.sqlite").list())
    asset_id = "aladder0000000001"
    jobs = JobStore(store_root / "jobs.sqlite")
    jobs.create(asset_id, {"ladder": "auto"}, source_name="source.mp4", source_bytes=1, source_sha256="0" * 64,
                idempotency_key=None, owner=owner)
    shutil.copytree(ladder_dir, store_root / "assets" / asset_id)
    jobs.finish(asset_id)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.fill("#key-input", key)
            page.click("#key-form button")
            page.goto(f"{base}/#/assets/{asset_id}")
            page.wait_for_function("document.querySelectorAll('#bits tbody tr').length === 3", timeout=30_000)
            assert "ABR ladder of 3 rungs" in page.inner_text("#quality")
            page.evaluate("document.getElementById('lr-video').play()")
            page.wait_for_function("document.getElementById('lr-video').readyState >= 2", timeout=60_000)
            assert page.evaluate("hls.levels.length") == 3
            first = int(page.get_attribute("#rung", "data-level"))
            other = 0 if first != 0 else 2
            page.evaluate(f"hls.currentLevel = {other}")  # as a viewer's bandwidth change would
            page.wait_for_function(f"document.getElementById('rung').dataset.level === '{other}'", timeout=60_000)
            assert "playing rendition" in page.inner_text("#rung")
            assert not errors, errors
        finally:
            browser.close()
