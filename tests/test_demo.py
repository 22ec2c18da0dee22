"""The demo (``make demo``): every page answers, concurrent submissions lose nothing,
tasks show how they really went, accounts log in, out and back in, and a cache
that is down is said to be down."""

from __future__ import annotations

import html
import http.client
import re
import threading
import time
from urllib.parse import urlencode, urlsplit

import pytest
from webob import Request

from demo_fixtures import Client, demo_server
from gaeservices import Services
from gaeservices.config import set_services
from gaeservices.demo import app as demo_app
from gaeservices.demo import tasks as demo_tasks

KEY = "k-signing-key-for-the-test-suite"


def until(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


@pytest.fixture
def demo_services(tmp_path):
    services = Services(secret_key=KEY, data_dir=str(tmp_path / "data"), environ={})
    previous = set_services(services)  # the demo's task finds the store through the default
    yield services
    set_services(previous)
    services.close()


def test_every_page_answers_in_one_layout_that_allows_no_script(demo_services):
    app = demo_app.make_app(demo_services)
    index = Request.blank("/").get_response(app)
    assert index.status_code == 200
    for module in demo_app.load_pages():
        assert f"href='{module.PREFIX}/'" in index.text
        response = Request.blank(module.PREFIX + "/", remote_addr="127.0.0.1").get_response(app)
        assert response.status_code == 200, (module.PREFIX, response.status)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        policy = response.headers["Content-Security-Policy"]
        assert "script-src" not in policy and "default-src 'none'" in policy
        if module.TITLE in response.text:  # the demo's own layout (the admin page has its own)
            assert "<nav>" in response.text and f"<a href='{module.PREFIX}/' class='on'>" in response.text
    for kind, url in (("cache", "memory://"), ("queue", "local://"), ("mail", "console://")):
        assert f"<td>{kind}</td><td><code>{url}</code>" in index.text


def test_concurrent_task_submissions_are_all_listed(tmp_path):
    # The jobs list used to be read, then rewritten: of 8 submissions at once,
    # some overwrote others' entries.
    submissions = 8
    with demo_server(tmp_path, "--disable-task-running", "--threads", str(submissions)) as url:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        barrier = threading.Barrier(submissions)
        statuses = []

        def submit(number: int) -> None:
            connection = http.client.HTTPConnection(host, port, timeout=30)
            connection.connect()  # connected first, so that the requests arrive together
            body = urlencode({"text": f"submission {number}", "behaviour": "count"})
            barrier.wait()
            connection.request("POST", "/tasks/", body, {"Content-Type": "application/x-www-form-urlencoded"})
            statuses.append(connection.getresponse().status)
            connection.close()

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(submissions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [303] * submissions
        status, text = Client(url).get("/tasks/")
    assert status == 200
    rows = re.findall(r"<tr><td><a href='[^']*'><code>([0-9a-f]+)</code>", text)
    assert len(rows) == submissions and len(set(rows)) == submissions
    assert text.count("s-queued'>queued<") == submissions  # task running is disabled


def test_concurrent_registrations_of_one_name_make_one_account(tmp_path):
    contenders = 6
    with demo_server(tmp_path) as url:
        clients = [Client(url) for _ in range(contenders)]
        barrier = threading.Barrier(contenders)
        pages = {}

        def register(number: int) -> None:
            clients[number].get("/sessions/")
            barrier.wait()
            pages[number] = clients[number].post(
                "/sessions/", action="register", username="grace", password=f"password-{number}")[1]

        threads = [threading.Thread(target=register, args=(n,)) for n in range(contenders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [n for n, text in pages.items() if "Registered. Logged in as grace" in text]
        assert len(winners) == 1
        assert sum("is taken" in text for text in pages.values()) == contenders - 1
        # the winner's password is the one stored with the claim
        loser = next(n for n in pages if n != winners[0])
        fresh = Client(url)
        assert "Wrong username or password" in fresh.post(
            "/sessions/", action="login", username="grace", password=f"password-{loser}")[1]
        assert "Logged in as grace" in fresh.post(
            "/sessions/", action="login", username="grace", password=f"password-{winners[0]}")[1]


def test_log_in_log_out_and_log_back_in(tmp_path):
    with demo_server(tmp_path) as url:
        client = Client(url)
        assert re.search(r"id='count'>1<", client.get("/sessions/")[1])
        first = re.search(r"id='sid'>([^<]+)<", client.get("/sessions/")[1]).group(1)

        text = client.post("/sessions/", action="register", username="Ada", password="correct horse")[1]
        assert "Logged in as <strong id='user'>ada</strong>" in text
        assert f"The session id before was {first}" in text
        assert re.search(r"id='sid'>([^<]+)<", text).group(1) != first  # cycled
        assert re.search(r"id='count'>3<", text)  # the data moved with the new id
        assert "id='register'" not in text and "id='login'" not in text  # no forms while logged in

        text = client.post("/sessions/", action="logout")[1]
        assert "Logged out" in text and "id='user'" not in text
        assert "id='register'" in text and "id='login'" in text
        assert re.search(r"id='count'>1<", text)  # a new, empty session

        assert "is taken" in client.post("/sessions/", action="register", username="ada", password="another one")[1]
        assert "Wrong username or password" in client.post(
            "/sessions/", action="login", username="ada", password="incorrect")[1]
        text = client.post("/sessions/", action="login", username="ADA ", password="correct horse")[1]
        assert "Logged in as <strong id='user'>ada</strong>" in text


def test_tasks_show_running_failing_retried_and_given_up(demo_services):
    app = demo_tasks.make_app(demo_services)

    def post(behaviour: str) -> None:
        body = urlencode({"text": "one two two three three three", "behaviour": behaviour}).encode()
        request = Request.blank("/", method="POST", body=body, content_type="application/x-www-form-urlencoded")
        assert request.get_response(app).status_code == 303

    def rows() -> dict[str, str]:
        text = Request.blank("/").get_response(app).text
        return dict(re.findall(r"<td>([^<]+)</td><td class='n'>[^<]*</td><td class='result'>(.*?)</td></tr>", text))

    for behaviour in ("count", "flaky", "broken"):
        post(behaviour)
    label = {key: value[0] for key, value in demo_tasks.BEHAVIOURS.items()}
    assert all("s-queued'>queued<" in state for state in rows().values())

    dispatcher = demo_tasks.start(demo_services, demo_tasks_options([]))
    try:
        states = until(lambda: (r := rows()) and "s-dead" in r[label["broken"]] and "s-done" in r[label["count"]]
                       and "retried in" in r[label["flaky"]] and r)
        assert "<strong>6 words</strong>" in states[label["count"]] and "three (3)" in states[label["count"]]
        assert "given up after 3 attempts" in states[label["broken"]]
        assert "failing on purpose, attempt 3" in states[label["broken"]]
        assert "attempt 1 of 3 failed" in states[label["flaky"]]
        assert "queued" not in "".join(states.values())

        # retried by hand (as the admin page does) instead of waiting for its backoff
        flaky = next(item for item in demo_app.recall(demo_services, demo_tasks.JOBS_KEY) if item["mode"] == "flaky")
        assert demo_services.queue.retry(flaky["task"])
        done = until(lambda: "s-done" in (state := rows()[label["flaky"]]) and state)
        assert "on attempt 2" in done
    finally:
        dispatcher.stop()


def demo_tasks_options(argv):
    import argparse

    parser = argparse.ArgumentParser()
    demo_tasks.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_counter_says_when_memcached_is_down(tmp_path, private_memcached):
    services = Services(secret_key=KEY, data_dir=str(tmp_path), environ={},
                        cache=private_memcached.url + "?retry_delay=0")
    app = demo_app.make_app(services)
    try:
        first = Request.blank("/counter/").get_response(app)
        assert first.status_code == 200 and "id='hits'>1<" in first.text
        private_memcached.stop()
        down = Request.blank("/counter/").get_response(app)
        assert down.status_code == 503
        assert "does not answer, so the count cannot be kept" in down.text
        assert private_memcached.url in down.text and "None" not in down.text
        private_memcached.start()
        again = Request.blank("/counter/").get_response(app)
        assert again.status_code == 200 and "id='hits'>1<" in again.text  # a new, empty memcached
    finally:
        services.close()


def test_remember_loses_no_item_of_concurrent_writers(demo_services):
    # What every demo list (tasks, mails, uploads) is kept with: one atomic store
    # operation per item, so that writers at the same moment keep each other's.
    writers, each = 8, 60
    barrier = threading.Barrier(writers)

    def write(writer: int) -> None:
        barrier.wait()
        for number in range(each):
            demo_app.remember(demo_services, "demo:test:list", f"{writer}-{number}", limit=writers * each)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = demo_app.recall(demo_services, "demo:test:list")
    assert sorted(kept) == sorted(f"{w}-{n}" for w in range(writers) for n in range(each))
    assert demo_app.remember(demo_services, "demo:test:list", "last", limit=3) == ["last", *kept[:2]]


def test_concurrent_uploads_are_all_listed(tmp_path):
    # The uploads list used to be a JSON file read, then rewritten (through one
    # shared temporary name): uploads at the same moment overwrote each other's entries.
    uploads = 8
    with demo_server(tmp_path, "--threads", str(uploads)) as url:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        forms = []
        for _ in range(uploads):  # each upload needs a form (a one-time token) of its own
            text = Client(url).get("/files/")[1]
            forms.append(html.unescape(re.search(r"action='([^']+)'", text).group(1)))
        barrier = threading.Barrier(uploads)
        statuses = []

        def upload(number: int) -> None:
            body = (f'--b\r\nContent-Disposition: form-data; name="file"; filename="file-{number}.txt"\r\n'
                    f"Content-Type: text/plain\r\n\r\ncontent {number}\r\n--b--\r\n").encode()
            connection = http.client.HTTPConnection(host, port, timeout=30)
            connection.connect()
            barrier.wait()
            connection.request("POST", forms[number], body, {"Content-Type": "multipart/form-data; boundary=b"})
            statuses.append(connection.getresponse().status)
            connection.close()

        threads = [threading.Thread(target=upload, args=(n,)) for n in range(uploads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [303] * uploads
        listing = Client(url).get("/files/")[1]
        assert sorted(re.findall(r"<td>(file-\d+\.txt)</td>", listing)) == sorted(f"file-{n}.txt" for n in range(uploads))
