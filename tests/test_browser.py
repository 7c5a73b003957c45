"""The built site in a real browser: Debian's headless Chromium driven by Playwright.

Served from a local http.server on 127.0.0.1 and opened from file://; every request is
watched: none may leave the machine or fail, and the console must stay free of errors.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(built_site: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


class Watch:
    """Records console errors, page errors, failed requests and requests leaving the machine."""

    def __init__(self, page: Page, local: tuple[str, ...]) -> None:
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.external: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))

        def on_request(request: object) -> None:
            url = request.url  # type: ignore[attr-defined]
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about") or url.startswith(local):
                return
            self.external.append(url)

        page.on("request", on_request)

    def check(self) -> None:
        assert self.errors == [], self.errors
        assert self.failed == [], self.failed
        assert self.external == [], self.external


def _search(page: Page, term: str) -> None:
    """Type into the theme's search box; retry while its index is still loading."""
    box = page.locator("input.md-search__input")
    box.click()
    for _ in range(20):
        box.fill("")
        box.press_sequentially(term, delay=10)
        try:
            page.wait_for_selector(".md-search-result__item a", timeout=1_000)
            return
        except Exception:
            continue
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-failure.png"))
    raise AssertionError(f"search for {term!r} found nothing")


def test_browse_search_and_copy(browser: Browser, server: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.rstrip("/"))
    page = context.new_page()
    watch = Watch(page, (server,))

    page.goto(server)
    assert "medfool" in page.title()
    assert page.locator(".mf-stat").count() == 5

    page.locator("nav.md-nav--primary a", has_text="Table 1").first.click()
    page.wait_for_url("**/table1.html")
    rows = page.locator("#table1-seed tbody tr")
    assert rows.count() == 4
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "table1.png"), full_page=True)

    # sorting and filtering work without any library
    page.locator("#table1-seed thead th", has_text="Method").click()
    assert page.locator("#table1-seed tbody tr").first.inner_text().startswith("Adversarial images")
    page.locator("#table1-seed thead th", has_text="Method").click()
    assert page.locator("#table1-seed tbody tr").first.inner_text().startswith("Training process tampering")
    page.fill("input.mf-filter[data-target='table1-seed']", "su2019one")
    assert page.locator("#table1-seed tbody tr:not([hidden])").count() == 1

    # a paper from Table 1, then an attack it proposes
    page.locator("#table1-seed a", has_text="su2019one").click()
    page.wait_for_url("**/papers/su2019one.html")
    assert "One pixel attack for fooling deep neural networks" in page.locator("article").inner_text()
    page.locator("article a", has_text="One-pixel attack").first.click()
    page.wait_for_url("**/attacks/one-pixel.html")
    assert "MFA-0007" in page.locator("article").inner_text()

    # built-in search by name lands on the attack page
    _search(page, "DeepFool")
    page.locator(".md-search-result__item a").first.click()
    page.wait_for_url("**/attacks/deepfool.html**")
    assert page.locator("article h1").inner_text().strip() == "DeepFool"

    # search by an alias
    _search(page, "trojan trigger")
    assert "badnets.html" in page.locator(".md-search-result__item a").first.get_attribute("href")
    page.keyboard.press("Escape")

    # copy a BibTeX block with the theme's copy button
    page.goto(server + "papers/su2019one.html")
    block = page.locator("pre", has_text="@article{su2019one")
    block.hover()
    block.locator("button.md-code__button, button.md-clipboard").first.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("@article{su2019one,") and "Vasconcellos" in copied

    watch.check()
    context.close()


def test_works_from_file_url(browser: Browser, built_site: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, ("file://",))
    page.goto((built_site / "index.html").as_uri())
    page.locator("article a", has_text="risk model").first.click()
    page.wait_for_url("**/risk-model.html")
    assert page.locator("#risk-matrix").count() == 1
    _search(page, "DeepFool")
    href = page.locator(".md-search-result__item a").first.get_attribute("href")
    assert href and href.split("?")[0].endswith("attacks/deepfool.html")
    watch.check()
    page.close()
