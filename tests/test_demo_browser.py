"""The demo as a newcomer meets it: ``gaeservices demo`` (what ``make demo`` runs),
driven in headless Chromium.

Each test leaves screenshots in ``test-artifacts/browser/``: the fixture's own,
named after the test, and one per demo page, ``demo-<page>.png``, taken where the
page shows what it does. A console error or an uncaught page error in any of
them fails the test (``browser_console``).
"""

from __future__ import annotations

import re
import time

import pytest

from browser_fixtures import artifacts_dir
from demo_fixtures import demo_server


def shot(page, name: str) -> None:
    page.screenshot(path=str(artifacts_dir() / f"demo-{name}.png"), full_page=True)


def reload_until(page, predicate, timeout: float = 30.0):
    """Reload ``page`` until ``predicate(page)`` holds (tasks run in the background)."""
    deadline = time.monotonic() + timeout
    while not predicate(page):
        assert time.monotonic() < deadline, page.content()
        time.sleep(0.2)
        page.reload()


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    """The demo with its dispatcher thread running tasks, on embedded defaults."""
    with demo_server(tmp_path_factory.mktemp("demo")) as url:
        yield url.rstrip("/")


@pytest.fixture(scope="module")
def held_demo_url(tmp_path_factory):
    """The demo with task running disabled and the memory:// outbox as its mail backend."""
    with demo_server(tmp_path_factory.mktemp("held-demo"), "--disable-task-running",
                     env={"GAESERVICES_MAIL": "memory://"}) as url:
        yield url.rstrip("/")


def test_the_index_links_every_page_and_names_the_backends(browser_page, demo_url):
    page = browser_page
    page.goto(demo_url + "/")
    links = page.locator(".cards a")
    assert links.count() >= 6
    for label in ("Cache", "Sessions", "Mail", "Tasks", "File transfers", "Task admin"):
        assert page.locator("header nav").get_by_role("link", name=label).count() == 1
    assert "local://" in page.locator("table").inner_text()
    shot(page, "index")
    for number in range(links.count()):  # every card opens a page that answers
        page.goto(demo_url + "/")
        href = page.locator(".cards a").nth(number).get_attribute("href")
        response = page.goto(demo_url + href)
        assert response.status == 200, href


def test_the_counter_increments_across_reloads(browser_page, demo_url):
    page = browser_page
    page.goto(demo_url + "/counter/")
    first = int(page.locator("#hits").inner_text())
    for step in (1, 2, 3):
        page.reload()
        assert int(page.locator("#hits").inner_text()) == first + step
    assert "memory://" in page.locator("main").inner_text()
    shot(page, "counter")


def test_log_in_log_out_and_log_back_in(browser_page, demo_url):
    page = browser_page
    page.goto(demo_url + "/sessions/")
    page.reload()
    assert page.locator("#count").inner_text() == "2"  # the session counts across reloads
    before = page.locator("#sid").inner_text()

    register = page.locator("form#register")
    register.locator("input[name=username]").fill("Grace")
    register.locator("input[name=password]").fill("correct horse battery")
    register.get_by_role("button", name="Register").click()
    assert page.locator("#user").inner_text() == "grace"
    assert page.locator("#sid").inner_text() != before  # the key was cycled at log-in
    assert page.locator("form#register").count() == 0 and page.locator("form#login").count() == 0

    page.get_by_role("button", name="Log out").click()
    assert page.locator("#user").count() == 0
    assert "Logged out" in page.locator("#flash").inner_text()

    login = page.locator("form#login")
    login.locator("input[name=username]").fill("grace")
    login.locator("input[name=password]").fill("correct horse battery")
    login.get_by_role("button", name="Log in").click()
    assert page.locator("#user").inner_text() == "grace"
    assert page.locator("form#register").count() == 0
    shot(page, "sessions")


def upload(page, demo_url, name, content_type, content: bytes) -> None:
    page.goto(demo_url + "/files/")
    page.set_input_files("input[type=file]", files=[{"name": name, "mimeType": content_type, "buffer": content}])
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(demo_url + "/files/")


def test_a_file_uploads_and_downloads_intact(browser_page, demo_url):
    page = browser_page
    content = bytes(range(256)) * 4096  # 1 MiB of every byte value
    upload(page, demo_url, "every-byte.bin", "application/octet-stream", content)
    row = page.locator("#uploads tr", has_text="every-byte.bin").first
    assert "1,048,576 bytes" in row.inner_text()
    with page.expect_download() as download:
        row.get_by_role("link", name="download").click()
    assert download.value.suggested_filename == "every-byte.bin"
    assert download.value.path().read_bytes() == content

    text = "Grüße, 世界\n"
    upload(page, demo_url, "greeting.txt", "text/plain", text.encode())
    view = page.locator("#uploads tr", has_text="greeting.txt").first.get_by_role("link", name="view")
    href = view.get_attribute("href")
    partial = page.request.get(demo_url + href, headers={"Range": "bytes=0-5"})
    assert partial.status == 206 and partial.body() == text.encode()[:6]
    page.goto(demo_url + "/files/")
    shot(page, "files")
    response = page.goto(demo_url + href)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert page.locator("body").inner_text() == text  # decoded as UTF-8, shown inline


def test_an_uploaded_html_file_runs_no_script(browser_page, demo_url):
    page = browser_page
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    script = "<script>alert('pwned'); document.title = 'pwned'</script>"
    upload(page, demo_url, "page.html", "text/html", f"<!doctype html><title>x</title>{script}".encode())
    row = page.locator("#uploads tr", has_text="page.html").first
    with page.expect_download() as download:  # "view" too: a page is only ever a download
        row.get_by_role("link", name="view").click()
    assert download.value.suggested_filename == "page.html"
    page.goto(demo_url + "/files/")
    assert dialogs == [] and page.title() != "pwned"


def test_a_task_fails_and_is_retried_from_the_admin_page(browser_page, demo_url):
    page = browser_page
    page.goto(demo_url + "/tasks/")
    page.fill("textarea[name=text]", "retried by hand, counted at last")
    page.check("input[name=behaviour][value=flaky]")
    page.get_by_role("button", name="Count words later").click()
    row = page.locator("#jobs tr", has_text="fail the first attempt").first
    reload_until(page, lambda p: "s-failed" in row.inner_html())
    assert "attempt 1 of 3 failed" in row.inner_text() and "retried in" in row.inner_text()
    shot(page, "tasks")

    row.locator("a").first.click()  # the task on the admin page
    assert "/_ah/admin/tasks/" in page.url
    name = page.url.rsplit("#task-", 1)[1]
    admin_row = page.locator(f"#task-{name}")
    assert "failing on purpose, attempt 1" in admin_row.inner_text()
    admin_row.get_by_role("button", name="Retry").click()
    page.wait_for_load_state()
    shot(page, "admin")

    page.goto(demo_url + "/tasks/")
    row = page.locator("#jobs tr", has_text="fail the first attempt").first
    reload_until(page, lambda p: "s-done" in row.inner_html())
    assert "on attempt 2" in row.inner_text() and "6 words" in row.inner_text()


def test_a_held_mail_is_run_from_the_admin_page_and_reaches_the_outbox(browser_page, held_demo_url):
    page = browser_page
    page.goto(held_demo_url + "/mail/")
    page.fill("input[name=subject]", "Run by hand from the admin page")
    page.get_by_role("button", name="Send later (deferred)").click()
    sent = page.locator("#sent tr", has_text="Run by hand from the admin page").first
    assert "queued" in sent.inner_text()
    assert page.locator("#outbox").inner_text() == "Nothing delivered yet."
    time.sleep(1.5)
    page.reload()
    assert "queued" in sent.inner_text()  # task running is disabled: it waits

    sent.get_by_role("link", name="task admin page").click()
    mail_task = page.locator("tr[id^=task-]", has_text="gaeservices.mail").first
    mail_task.get_by_role("button", name="Run now").click()
    page.wait_for_load_state()

    page.goto(held_demo_url + "/mail/")
    assert "sent" in page.locator("#sent tr", has_text="Run by hand from the admin page").first.inner_text()
    outbox = page.locator("#outbox")
    assert "Run by hand from the admin page" in outbox.inner_text()
    assert "reader@example.com" in outbox.inner_text()
    shot(page, "mail")


def test_a_page_says_so_when_memcached_is_down(browser_page, browser_console, tmp_path, private_memcached):
    browser_console.allow(r"status of 503")  # the page answers 503 Service Unavailable, on purpose
    private_memcached.stop()
    with demo_server(tmp_path, env={"GAESERVICES_CACHE": private_memcached.url}) as url:
        page = browser_page
        response = page.goto(url + "counter/")
        assert response.status == 503
        text = page.locator("#unavailable").inner_text()
        assert "does not answer" in text and "None" not in page.locator("main").inner_text()
        assert re.search(r"memcache://127\.0\.0\.1:\d+", text)
        shot(page, "counter-cache-down")
