"""Stored XSS, tried as an attacker would, in headless Chromium against the demo under gunicorn.

An upload whose content is a page, an SVG or a script -- whatever name and type its
uploader gives it -- must never run on the demo's origin: each link to it ends in a
download, no dialog opens, and the origin's storage stays untouched. A plain UTF-8
text upload is shown inline, decoded as UTF-8.
"""

from __future__ import annotations

import pytest

from filetransfers_fixtures import demo_environ, gunicorn

# Each payload tries every way it has to run, and leaves a mark where the test looks.
SCRIPT = "localStorage.setItem('pwned', location.href); alert('pwned'); document.title = 'pwned'"
PAYLOADS = [
    ("page.html", "text/html", f"<!doctype html><title>x</title><script>{SCRIPT}</script>"),
    ("notes.txt", "text/html", f"<script>{SCRIPT}</script>"),          # harmless name, claimed as a page
    ("image.svg", "image/svg+xml",
     f"<svg xmlns='http://www.w3.org/2000/svg' onload=\"{SCRIPT}\"><script>{SCRIPT}</script></svg>"),
    ("page.xhtml", "application/xhtml+xml",
     f"<html xmlns='http://www.w3.org/1999/xhtml'><body><script>{SCRIPT}</script></body></html>"),
    ("data.xml", "text/xml",
     f"<?xml version='1.0'?><x:script xmlns:x='http://www.w3.org/1999/xhtml'>{SCRIPT}</x:script>"),
    ("photo.png", "image/png", f"<script>{SCRIPT}</script>"),           # a page claiming to be an image
]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    directory = tmp_path_factory.mktemp("browser-demo")
    with gunicorn("gaeservices.wsgi.demo:application", demo_environ(str(directory / "data")),
                  str(directory)) as port:
        yield f"http://127.0.0.1:{port}"


def upload(page, demo_url, name, content_type, content):
    page.goto(demo_url + "/files/")
    page.set_input_files("input[type=file]", files=[
        {"name": name, "mimeType": content_type, "buffer": content.encode()}])
    page.click("button")
    page.wait_for_url(demo_url + "/files/")


@pytest.mark.parametrize("name, content_type, content", PAYLOADS)
def test_an_uploaded_active_file_runs_no_script(browser_page, browser_console, demo_url, name, content_type,
                                                content):
    page = browser_page
    dialogs = []
    page.context.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    upload(page, demo_url, name, content_type, content)
    row = page.locator("tr", has_text=name).last
    links = {label: row.get_by_role("link", name=label).get_attribute("href") for label in ("view", "download")}
    for label, href in links.items():
        if content_type == "image/png" and label == "view":
            # a type browsers only ever show as an image is shown inline, as one
            shown = page.goto(demo_url + href)
            assert shown.headers["content-type"] == "image/png"
            continue
        page.goto(demo_url + "/files/")
        with page.expect_download() as download:
            page.locator(f"a[href='{href}']").click()
        assert download.value.suggested_filename == name
        assert download.value.path().read_text() == content  # the file itself, unchanged
    page.goto(demo_url + "/files/")
    assert dialogs == []
    assert page.title() != "pwned"
    assert page.evaluate("localStorage.getItem('pwned')") is None
    assert len(page.context.pages) == 1


def test_utf8_text_is_shown_inline_as_utf8(browser_page, demo_url):
    page = browser_page
    upload(page, demo_url, "héllo.txt", "text/plain", "héllo wörld")
    page.locator("tr", has_text="héllo.txt").last.get_by_role("link", name="view").click()
    assert page.locator("body").inner_text().strip() == "héllo wörld"  # not "hÃ©llo"
