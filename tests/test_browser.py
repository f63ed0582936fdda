"""The page in real headless Chromium (Debian's package) via Playwright: upload, classify, search."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")
playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CLIPFORGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.skipif(
    not (os.path.isfile(CHROMIUM) or shutil.which("chromium")),
    reason=f"chromium not installed at {CHROMIUM} (make test installs Debian's chromium)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(shared_data, tmp_path_factory):
    import uvicorn
    from test_apps_helpers import cached_tiny_clip
    from test_serve import build_index

    from clipforge.apps.serve import create_app
    from clipforge.transforms import Preprocess

    model = cached_tiny_clip(shared_data, tmp_path_factory.getbasetemp().parent)
    index_dir = build_index(model, shared_data, tmp_path_factory.mktemp("browser"))
    app = create_app(model, Preprocess(model.config.preprocess), index_dir, model_name="tiny-vit")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_page_classifies_an_upload_and_shows_a_search_grid(server_url, shared_data, tmp_path):
    image = (
        shared_data
        / "cifar10"
        / "images"
        / "test"
        / "cat"
        / sorted(os.listdir(shared_data / "cifar10" / "images" / "test" / "cat"))[0]
    )
    labels = (shared_data / "cifar10" / "classes.txt").read_text().split()
    executable = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(server_url + "/")
            playwright_api.expect(page.locator("#health")).to_contain_text("200 indexed")

            # drop: a File built from a served thumbnail, delivered by a real drop event on the zone
            page.evaluate(
                """async () => {
                    const blob = await (await fetch('/thumbs/00000003.jpg')).blob();
                    const data = new DataTransfer();
                    data.items.add(new File([blob], 'dropped.jpg', {type: 'image/jpeg'}));
                    document.getElementById('drop').dispatchEvent(
                        new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
                }"""
            )
            playwright_api.expect(page.locator("#drop-hint")).to_have_text("dropped.jpg")
            page.fill("#labels", "cat, dog")
            page.click("#classify-btn")
            playwright_api.expect(page.locator("#bars .bar-row")).to_have_count(2)

            page.set_input_files("#image-input", str(image))
            playwright_api.expect(page.locator("#preview")).to_be_visible()
            playwright_api.expect(page.locator("#drop-hint")).to_have_text(image.name)
            page.fill("#labels", ", ".join(labels))
            page.click("#classify-btn")
            rows = page.locator("#bars .bar-row")
            playwright_api.expect(rows).to_have_count(10)
            probs = [float(rows.nth(i).get_attribute("data-prob")) for i in range(10)]
            assert sum(probs) == pytest.approx(1.0, abs=1e-3) and probs == sorted(probs, reverse=True)
            widths = page.eval_on_selector_all(
                "#bars .bar",
                "els => els.map(e => e.getBoundingClientRect().width / e.parentElement.getBoundingClientRect().width)",
            )
            assert widths[0] == pytest.approx(probs[0], abs=0.02) and widths[0] > widths[-1]
            assert sorted(rows.nth(i).get_attribute("data-label") for i in range(10)) == sorted(labels)

            page.fill("#query", "a photo of a ship.")
            page.click("#search-btn")
            figures = page.locator("#grid figure")
            playwright_api.expect(figures).to_have_count(12)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            loaded = page.eval_on_selector_all("#grid img", "els => els.map(e => e.naturalWidth)")
            assert len(loaded) == 12 and min(loaded) > 0  # every thumbnail came from /thumbs
            captions = page.locator("#grid figcaption").all_inner_texts()
            assert sum(c.startswith("ship") for c in captions) >= 6  # 20 of 200 indexed are ships

            page.fill("#labels", "onlyone")
            page.click("#classify-btn")
            playwright_api.expect(page.locator("#classify-error")).to_contain_text("at least two")

            shot = tmp_path / "page.png"
            page.fill("#labels", ", ".join(labels))
            page.click("#classify-btn")
            playwright_api.expect(rows).to_have_count(10)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("CLIPFORGE_SCREENSHOT"):
                shutil.copy(shot, os.environ["CLIPFORGE_SCREENSHOT"])
        finally:
            browser.close()
