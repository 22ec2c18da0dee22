"""The task admin page in headless Chromium, on the demo under gunicorn (two worker
processes, no task runner: what is deferred stays queued until someone runs it).

A task deposited through the demo's own form is run with "Run now" and its result
appears; a task that fails is retried and then runs; and the page works with
JavaScript turned off. Screenshots are left in test-artifacts/browser/.
"""

from __future__ import annotations

import os
import re

import pytest
import tasks_fixtures as fx
from browser_fixtures import artifacts_dir
from filetransfers_fixtures import SECRET, demo_environ, gunicorn

from gaeservices import Services, defer

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ADMIN = "/_ah/admin/tasks/"


@pytest.fixture
def demo(tmp_path):
    """The demo's URL, and Services on the same store (to deposit tasks from here)."""
    data_dir = str(tmp_path / "data")
    # the workers import the test's task functions when they run them
    env = demo_environ(data_dir, GAESERVICES_QUEUE="local://", PYTHONPATH=TESTS_DIR)
    services = Services(secret_key=SECRET, data_dir=data_dir, environ={})
    with gunicorn("gaeservices.wsgi.demo:application", env, str(tmp_path)) as port:
        yield f"http://127.0.0.1:{port}", services
    services.close()


def row(page, name):
    return page.locator(f"tr[id='task-{name}']")


def shot(page, name):
    page.screenshot(path=str(artifacts_dir() / f"tasks-admin-{name}.png"), full_page=True)


def test_run_now_runs_a_deposited_task_and_its_result_appears(browser_page, demo):
    url, services = demo
    page = browser_page
    page.goto(url + "/tasks/")
    page.fill("textarea[name=text]", "one two two three three three")
    page.click("text=Count words later")
    page.wait_for_url(url + "/tasks/")
    assert page.locator("td.result").first.inner_text() == "queued"

    page.goto(url + ADMIN)
    assert page.title() == "Task queues · gaeservices"
    (name,) = [info.name for info in services.queue.listing(view="queued")]
    task = row(page, name)
    assert task.locator(".state").inner_text() == "queued"
    assert task.locator(".call code").first.inner_text() == "gaeservices.demo.tasks.count_words"
    assert "'one two two three three three'" in task.locator(".call code.args").inner_text()
    shot(page, "deposited")

    task.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r".*/_ah/admin/tasks/\?.*note="))
    assert page.get_by_role("status").inner_text() == f"Task {name} ran: done."
    assert row(page, name).locator(".state").inner_text() == "done"
    shot(page, "run-now-done")

    page.goto(url + "/tasks/")
    assert "6 words" in page.locator("td.result").first.inner_text()
    assert services.queue.get(name).state == "done"


def test_a_failed_task_is_retried_then_runs(browser_page, demo):
    url, services = demo
    page = browser_page
    # fails on its first attempt, succeeds on its second; given up after one failure
    defer(fx.fail_until, 2, "browser", _name="flaky", _countdown=3600,
          _retry_options={"task_retry_limit": 0}, _services=services)
    page.goto(url + ADMIN)
    assert row(page, "flaky").locator(".state").inner_text() == "scheduled"

    row(page, "flaky").get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r".*note="))
    assert page.get_by_role("status").inner_text() == (
        "Task flaky ran and failed (retry): RuntimeError: attempt 1 fails")
    flaky = row(page, "flaky")
    assert flaky.locator(".state").inner_text() == "dead"
    assert flaky.locator("td").nth(3).inner_text() == "1"  # attempts
    assert "RuntimeError: attempt 1 fails" in flaky.locator("summary").inner_text()
    shot(page, "dead")

    flaky.get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(r".*note="))
    assert page.get_by_role("status").inner_text() == "Task flaky is due now."
    assert row(page, "flaky").locator(".state").inner_text() == "failed"

    row(page, "flaky").get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r".*note="))
    assert page.get_by_role("status").inner_text() == "Task flaky ran: done."
    assert row(page, "flaky").locator(".state").inner_text() == "done"
    shot(page, "retried-done")
    assert services.queue.get("flaky").state == "done"


def test_the_page_works_without_javascript(browser, demo):
    url, services = demo
    defer(fx.record, "<b>no script</b>", _name="plain", _countdown=60, _services=services)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(url + ADMIN + "purge?queue=default")
        assert "1 unfinished and 0 dead task(s)" in page.locator("body").inner_text()
        shot(page, "purge-confirm-without-javascript")
        page.goto(url + ADMIN + "?view=scheduled")
        assert "'<b>no script</b>'" in row(page, "plain").locator(".call").inner_text()
        row(page, "plain").get_by_role("button", name="Delete").click()
        page.wait_for_url(re.compile(r".*note="))
        assert "view=scheduled" in page.url  # back on the view it was sent from
        assert page.get_by_role("status").inner_text() == "Task plain deleted."
        assert services.queue.get("plain") is None
    finally:
        context.close()
