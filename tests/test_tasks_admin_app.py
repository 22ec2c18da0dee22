"""The task admin page over WSGI: who gets in, CSRF, escaping, and each action's
effect on a real SQLite and PostgreSQL local queue."""

from __future__ import annotations

import base64
import re
import time
from urllib.parse import parse_qs, urlsplit
from wsgiref.validate import validator

import pytest
import tasks_fixtures as fx
import webob

from gaeservices import Services, defer
from gaeservices.store.engine import dispose_engine
from gaeservices.exceptions import ConfigurationError
from gaeservices.tasks.admin_app import CSRF_COOKIE, TaskAdminApp
from gaeservices.tasks.worker import Dispatcher

KEY = "k-signing-key-for-the-test-suite"
PREFIX = "/_ah/admin/tasks"
PASSWORD = "a-long-admin-password-1"


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()
    fx.unpickled.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(request, tmp_path):
    url = f"sqlite:///{tmp_path}/store.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, store=url, queue="local://")
    yield s
    s.close()
    dispose_engine(s.backend_url("store"))  # its pool's connections, before the schema goes


@pytest.fixture
def sqlite_svc(tmp_path):
    s = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, store=f"sqlite:///{tmp_path}/s.db",
                 queue="local://")
    yield s
    s.close()


class Browser:
    """Requests to the page through wsgiref's validator, keeping its cookies."""

    def __init__(self, app, **environ):
        self.app = validator(app)
        self.cookies: dict[str, str] = {}
        self.environ = environ

    def request(self, path="/", method="GET", form=None, headers=None, cookies=True, **environ):
        request = webob.Request.blank(PREFIX + path, method=method, POST=form, headers=headers or {})
        request.script_name, request.path_info = PREFIX, path.split("?")[0]
        request.environ.update(self.environ, **environ)
        if cookies and self.cookies:
            request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        captured = []

        def start_response(status, headers, exc_info=None):
            captured[:] = [status, headers]
            return lambda data: None

        body = self.app(request.environ, start_response)
        try:
            data = b"".join(body)
        finally:
            body.close()
        response = webob.Response(status=captured[0], headerlist=captured[1])
        response.body = data if method != "HEAD" else b""
        for header in response.headers.getall("Set-Cookie"):
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";")[0]
        return response

    def get(self, path="/", **options):
        return self.request(path, **options)

    def token(self, path="/"):
        page = self.get(path)
        assert page.status_code == 200, page.text
        return re.search(r"name='csrf' value='([^']+)'", page.text).group(1)

    def post(self, token=None, **fields):
        form = dict(fields)
        if token is not None:
            form["csrf"] = token
        return self.request("/", method="POST", form=form)

    def act(self, action, **fields):
        """POST an action as the page's own form does; returns the page it leads to."""
        response = self.post(self.token(), action=action, **fields)
        assert response.status_code == 303, response.text
        location = urlsplit(response.headers["Location"])
        assert location.path == PREFIX + "/"
        return self.get("/?" + location.query)


def admin_app(services, **options):
    options.setdefault("is_admin", lambda environ: True)
    options.setdefault("basic_auth", None)
    return TaskAdminApp(services, **options)


# --- who gets in ------------------------------------------------------------------


def test_without_an_admin_check_every_request_is_refused(sqlite_svc):
    defer(fx.record, 1, _name="kept", _services=sqlite_svc)
    browser = Browser(TaskAdminApp(sqlite_svc))
    page = browser.get()
    assert page.status_code == 403
    assert "no admin check is configured" in page.text and "GAESERVICES_ADMIN_BASIC_AUTH" in page.text
    assert "kept" not in page.text and CSRF_COOKIE not in browser.cookies
    assert browser.post(action="delete", name="kept").status_code == 403
    assert browser.get("/purge?queue=default").status_code == 403
    assert sqlite_svc.queue.get("kept") is not None


def test_the_applications_check_decides(sqlite_svc):
    seen = []

    def is_admin(environ):
        seen.append(environ["PATH_INFO"])
        return environ.get("REMOTE_USER") == "ops"

    app = admin_app(sqlite_svc, is_admin=is_admin)
    assert Browser(app, REMOTE_USER="ops").get().status_code == 200
    assert "signed in as ops" in Browser(app, REMOTE_USER="ops").get().text
    assert Browser(app, REMOTE_USER="mallory").get().status_code == 403
    assert Browser(app).get().status_code == 403
    assert seen == ["/"] * 4
    # True, exactly: a truthy value that is not True does not admit
    assert Browser(admin_app(sqlite_svc, is_admin=lambda environ: "no")).get().status_code == 403
    with pytest.raises(ConfigurationError):
        TaskAdminApp(sqlite_svc, is_admin="yes")


def test_a_middleware_puts_the_check_on_the_environ(sqlite_svc):
    app = TaskAdminApp(sqlite_svc, basic_auth=None)

    def with_check(verdict):
        def middleware(environ, start_response):
            environ["gaeservices.is_admin"] = lambda environ: verdict
            return app(environ, start_response)
        return middleware

    assert Browser(with_check(True)).get().status_code == 200
    assert Browser(with_check(False)).get().status_code == 403

    def broken(environ, start_response):
        environ["gaeservices.is_admin"] = True  # not a callable
        return app(environ, start_response)

    page = Browser(broken).get()
    assert page.status_code == 500 and "must be a callable" in page.text


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_credentials_from_the_environment(tmp_path):
    svc = Services(secret_key=KEY, data_dir=str(tmp_path), store=f"sqlite:///{tmp_path}/s.db",
                   environ={"GAESERVICES_ADMIN_BASIC_AUTH": f"ops:{PASSWORD}"})
    browser = Browser(TaskAdminApp(svc))
    page = browser.get()
    assert page.status_code == 401
    assert page.headers["WWW-Authenticate"] == 'Basic realm="gaeservices task admin", charset="UTF-8"'
    for wrong in (basic("ops", PASSWORD + "x"), basic("op", PASSWORD), basic("ops", PASSWORD[:-1]),
                  "Basic !!!not-base64", "Bearer " + PASSWORD, basic("ops", "")):
        assert browser.get(headers={"Authorization": wrong}).status_code == 401, wrong
    page = browser.get(headers={"Authorization": basic("ops", PASSWORD)})
    assert page.status_code == 200 and "signed in as ops" in page.text
    # a check of the application's own that says no still lets the credentials in
    app = TaskAdminApp(svc, is_admin=lambda environ: False)
    assert Browser(app).get(headers={"Authorization": basic("ops", PASSWORD)}).status_code == 200
    assert Browser(app).get().status_code == 401
    svc.close()


@pytest.mark.parametrize("value", ["ops", "ops:", ":" + PASSWORD, "ops:short-password"])
def test_weak_or_malformed_credentials_are_refused_at_start(sqlite_svc, value):
    with pytest.raises(ConfigurationError, match="basic_auth"):
        TaskAdminApp(sqlite_svc, basic_auth=value)


# --- CSRF and methods ----------------------------------------------------------------


def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(sqlite_svc, tmp_path):
    defer(fx.record, 1, _name="kept", _services=sqlite_svc)
    browser = Browser(admin_app(sqlite_svc))
    token = browser.token()
    assert browser.cookies[CSRF_COOKIE]
    other = Browser(admin_app(sqlite_svc))
    other_token = other.token()
    foreign = Services(secret_key="another-signing-key-of-32-bytes!!", data_dir=str(tmp_path / "x"), environ={})
    forged = foreign.signer("gaeservices.tasks.admin.csrf", timestamped=True).sign(
        token.split(".")[0]).decode()  # the right binding, signed with another key
    refusals = {
        "missing": browser.post(action="delete", name="kept"),
        "empty": browser.post("", action="delete", name="kept"),
        "forged": browser.post(forged, action="delete", name="kept"),
        "altered": browser.post(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), action="delete", name="kept"),
        "another browser's": browser.post(other_token, action="delete", name="kept"),
        "no cookie": browser.request("/", method="POST", form={"csrf": token, "action": "delete", "name": "kept"},
                                     cookies=False),
        "cross-site": browser.request("/", method="POST", form={"csrf": token, "action": "delete", "name": "kept"},
                                      headers={"Sec-Fetch-Site": "cross-site"}),
    }
    for why, response in refusals.items():
        assert response.status_code == 403, why
        assert "Refused" in response.text, why
    assert sqlite_svc.queue.get("kept") is not None
    assert browser.post(token, action="delete", name="kept").status_code == 303
    assert sqlite_svc.queue.get("kept") is None


def test_an_expired_csrf_token_is_refused(sqlite_svc, monkeypatch):
    defer(fx.record, 1, _name="kept", _services=sqlite_svc)
    browser = Browser(admin_app(sqlite_svc))
    token = browser.token()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 13 * 3600)  # itsdangerous reads time.time
    assert browser.post(token, action="delete", name="kept").status_code == 403
    assert sqlite_svc.queue.get("kept") is not None


def test_get_never_changes_anything(sqlite_svc):
    defer(fx.record, 1, _name="kept", _services=sqlite_svc)
    browser = Browser(admin_app(sqlite_svc))
    token = browser.token()
    for path in (f"/?action=delete&name=kept&csrf={token}", f"/purge?queue=default&csrf={token}&action=purge"):
        assert browser.get(path).status_code == 200
    assert browser.get("/", method="HEAD").status_code == 200
    assert sqlite_svc.queue.get("kept") is not None and fx.calls == []
    put = browser.request("/", method="PUT")
    assert put.status_code == 405 and put.headers["Allow"] == "GET, HEAD, POST"
    assert browser.get("/elsewhere").status_code == 404


def test_the_page_protects_itself_in_the_browser(sqlite_svc):
    browser = Browser(admin_app(sqlite_svc))
    page = browser.get()
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    cookie = page.headers["Set-Cookie"]
    assert f"Path={PREFIX}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    assert "Secure" in Browser(admin_app(sqlite_svc)).get(**{"wsgi.url_scheme": "https"}).headers["Set-Cookie"]
    assert "<script" not in page.text


def test_a_forged_note_is_not_shown(sqlite_svc):
    browser = Browser(admin_app(sqlite_svc))
    page = browser.get("/?note=" + "eyJ0ZXh0IjoiWW91IHdlcmUgaGFja2VkIn0.AAAA.BBBB")
    assert page.status_code == 200 and "class='note" not in page.text


# --- what is shown ----------------------------------------------------------------------


def test_hostile_arguments_and_errors_are_escaped(sqlite_svc):
    hostile = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
    defer(fx.record, hostile, key=hostile, _name="held", _countdown=3600, _services=sqlite_svc)
    defer(fx.always_fails, hostile, _name="broken", _retry_options={"task_retry_limit": 0}, _services=sqlite_svc)
    Dispatcher(sqlite_svc, drain=True).run()
    page = Browser(admin_app(sqlite_svc)).get().text
    assert "<script>" not in page and "<img" not in page and "onerror=alert(2)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the argument, and the error
    assert "RuntimeError: boom &lt;script&gt;" in page
    assert page.count("&lt;img src=x onerror=alert(2)&gt;") >= 3
    assert fx.unpickled == []


def test_each_task_is_shown_with_its_call_attempts_error_and_eta(svc):
    defer(fx.record, "soon", _name="held", _countdown=3600, _services=svc)
    defer(fx.always_fails, "x", _name="retrying", _retry_options={"min_backoff_seconds": 600}, _services=svc)
    Dispatcher(svc, drain=True).run()
    browser = Browser(admin_app(svc))
    page = browser.get().text
    row = re.search(r"<tr id='task-retrying'>.*?</tr>", page, re.S).group(0)
    assert "s-failed" in row and "tasks_fixtures.always_fails" in row and "&#x27;x&#x27;" in row
    assert "<td class='n'>1</td>" in row and "RuntimeError: boom x" in row and "in 10 min" in row
    assert ">Run now<" in row and ">Retry<" in row and ">Delete<" in row
    held = re.search(r"<tr id='task-held'>.*?</tr>", page, re.S).group(0)
    assert "s-scheduled" in held and "in 60 min" in held and ">Retry<" not in held
    queue_row = re.search(r"<tr><td><code><a href='/_ah/admin/tasks/\?queue=default'>.*?</tr>", page).group(0)
    assert "<strong>2</strong>" in queue_row  # depth
    only = browser.get("/?view=failed").text
    assert "task-retrying" in only and "task-held" not in only
    assert "task-held" not in browser.get("/?queue=mail").text


def test_pages_of_tasks(sqlite_svc):
    for i in range(7):
        defer(fx.record, i, _name=f"t{i}", _countdown=100 + i, _services=sqlite_svc)
    browser = Browser(admin_app(sqlite_svc, page_size=3))
    first = browser.get().text
    assert re.findall(r"<tr id='task-(t\d)'>", first) == ["t0", "t1", "t2"]
    assert "older »" in first and "« newer" not in first
    last = browser.get("/?page=3").text
    assert re.findall(r"<tr id='task-(t\d)'>", last) == ["t6"] and "older »" not in last
    assert browser.get("/?page=nonsense&view=bogus").status_code == 200


# --- actions on the local queue -----------------------------------------------------------


def note_of(page):
    return re.search(r"<p class='note[^']*' role='status'>(.*?)</p>", page.text).group(1)


def test_run_now_runs_a_task_that_is_not_due(svc):
    defer(fx.record, "later", _name="held", _countdown=3600, _services=svc)
    browser = Browser(admin_app(svc))
    page = browser.act("run", name="held")
    assert note_of(page) == "Task held ran: done."
    assert fx.calls == [(("later",), {})]
    assert svc.queue.get("held").state == "done"
    assert "s-done" in re.search(r"<tr id='task-held'>.*?</tr>", page.text, re.S).group(0)
    again = browser.act("run", name="held")
    assert "did not run" in note_of(again) and len(fx.calls) == 1


def test_run_now_reports_a_failure(svc):
    defer(fx.always_fails, "now", _name="broken", _countdown=3600, _services=svc)
    page = Browser(admin_app(svc)).act("run", name="broken")
    assert "Task broken ran and failed (retry): RuntimeError: boom now" == note_of(page)
    assert "note error" in page.text and svc.queue.get("broken").view() == "failed"


def test_retry_makes_a_dead_task_due_and_a_worker_runs_it(svc):
    defer(fx.fail_until, 2, "flaky", _name="flaky", _retry_options={"task_retry_limit": 0}, _services=svc)
    Dispatcher(svc, drain=True).run()
    assert svc.queue.get("flaky").state == "failed"
    browser = Browser(admin_app(svc))
    assert "Task flaky is due now." == note_of(browser.act("retry", name="flaky"))
    assert svc.queue.get("flaky").view() == "failed" and svc.queue.get("flaky").eta <= time.time()
    Dispatcher(svc, drain=True).run()
    assert svc.queue.get("flaky").state == "done" and fx.calls[-1] == ("flaky", 2)
    assert "cannot be retried" in note_of(browser.act("retry", name="flaky"))


def test_delete_and_purge(svc):
    defer(fx.record, 1, _name="one", _countdown=60, _services=svc)
    defer(fx.record, 2, _name="two", _services=svc)
    defer(fx.record, 3, _name="mailed", _queue="mail", _services=svc)
    browser = Browser(admin_app(svc))
    assert note_of(browser.act("delete", name="one")) == "Task one deleted."
    assert svc.queue.get("one") is None
    assert note_of(browser.act("delete", name="one")) == "Task one was not found."
    confirm = browser.get("/purge?queue=default")
    assert confirm.status_code == 200 and "1 unfinished and 0 dead task(s)" in confirm.text
    assert svc.queue.get("two") is not None  # asking is not purging
    assert browser.get("/purge?queue=nope").status_code == 404
    page = browser.act("purge", queue="default")
    assert note_of(page) == "Queue default purged: 1 task(s) deleted."
    assert svc.queue.get("two") is None and svc.queue.get("mailed") is not None


def test_after_an_action_the_page_shows_the_same_view(sqlite_svc):
    defer(fx.record, 1, _name="a", _queue="mail", _countdown=60, _services=sqlite_svc)
    defer(fx.record, 2, _name="b", _queue="mail", _countdown=60, _services=sqlite_svc)
    browser = Browser(admin_app(sqlite_svc))
    page = browser.get("/?queue=mail&view=scheduled&page=1")
    token = re.search(r"name='csrf' value='([^']+)'", page.text).group(1)
    form = dict(re.findall(r"<input type='hidden' name='(\w+)' value='([^']*)'>",
                           re.search(r"<tr id='task-a'>.*?</tr>", page.text, re.S).group(0).split("Delete")[0]
                           .rsplit("<form", 1)[-1]))
    assert form == {"csrf": token, "action": "delete", "name": "a", "filter": "mail", "view": "scheduled", "page": "1"}
    response = browser.post(**form)
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["queue"] == ["mail"] and query["view"] == ["scheduled"] and query["note"]


# --- other backends ---------------------------------------------------------------------


def test_immediate_queue_page_says_what_it_cannot_do(tmp_path):
    svc = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, queue="immediate://")
    defer(fx.fail_permanently, "<b>no</b>", _name="perm", _services=svc)
    app = admin_app(svc)
    browser = Browser(app)
    page = browser.get()
    assert "immediate:// runs every task inside defer()" in page.text
    assert "task-perm" in page.text and "&lt;b&gt;no&lt;/b&gt;" in page.text and ">Retry<" not in page.text
    assert "name='csrf'" not in page.text  # no action: no form
    token = app._csrf_token(browser.cookies[CSRF_COOKIE])  # as a hand-made form would carry
    response = browser.post(token, action="run", name="perm")
    assert response.status_code == 303
    assert "inside defer()" in note_of(browser.get("/?" + urlsplit(response.headers["Location"]).query))
    assert browser.get("/purge?queue=default").status_code == 403


def test_appengine_page_shows_depths_and_deletes_by_name(testbed, tmp_path):
    svc = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, queue="appengine://", store="datastore://")
    defer(fx.record, 1, _name="first", _services=svc)
    defer(fx.record, 2, _name="second", _services=svc)
    browser = Browser(admin_app(svc))
    page = browser.get()
    assert "cannot list push tasks" in page.text and "Delete a task by name" in page.text
    assert "<strong>2</strong>" in page.text
    assert note_of(browser.act("delete", name="first")) == "Task first deleted."
    assert "Task first was not found." == note_of(browser.act("delete", name="first"))
    assert "App Engine" in note_of(browser.act("run", name="second"))
    assert note_of(browser.act("purge", queue="default")) == "Queue default purged."
    assert "<strong>0</strong>" in browser.get().text


# --- the demo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ, admitted",
    [
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080"}, True),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost:8080"}, True),
        ({"REMOTE_ADDR": "::1", "HTTP_HOST": "[::1]:8080"}, True),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "demo.localhost"}, True),
        ({"REMOTE_ADDR": "10.0.0.5", "HTTP_HOST": "127.0.0.1:8080"}, False),  # another machine
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "evil.example:8080"}, False),  # DNS rebinding
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}, False),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "HTTP_FORWARDED": "for=203.0.113.9"}, False),
        ({"REMOTE_ADDR": "", "HTTP_HOST": "localhost"}, False),
        ({"REMOTE_ADDR": "127.0.0.1"}, False),
    ],
)
def test_the_demo_admits_this_machine_only(environ, admitted):
    from gaeservices.demo.admin import loopback_only

    assert loopback_only(environ) is admitted


def test_the_demo_mounts_the_page(tmp_path):
    from gaeservices.demo.app import make_app

    svc = Services(secret_key=KEY, data_dir=str(tmp_path), environ={})
    try:
        demo = make_app(svc)
        ok = webob.Request.blank(PREFIX + "/", remote_addr="127.0.0.1", headers={"Host": "127.0.0.1:8080"})
        page = ok.get_response(demo)
        assert page.status_code == 200 and "Task queues" in page.text
        remote = webob.Request.blank(PREFIX + "/", remote_addr="192.0.2.7", headers={"Host": "127.0.0.1:8080"})
        assert remote.get_response(demo).status_code == 403
        index = webob.Request.blank("/").get_response(demo).text
        assert f"href='{PREFIX}/'" in index
    finally:
        svc.close()


def test_the_rate_column_shows_queue_yaml_or_unlimited(tmp_path):
    (tmp_path / "queue.yaml").write_text(
        "queue:\n"
        "- name: mail\n  rate: 2.5/m\n  bucket_size: 3\n  max_concurrent_requests: 2\n"
        "- name: held\n  rate: 0\n"
    )
    store = f"sqlite:///{tmp_path}/s.db"
    configured = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, store=store,
                          queue=f"local://?queue_yaml={tmp_path / 'queue.yaml'}")
    plain = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, store=store, queue="local://")
    try:
        for queue in ("default", "mail", "held"):
            defer(fx.record, queue, _queue=queue, _countdown=3600, _services=configured)

        def rates(services):
            page = Browser(admin_app(services)).get().text
            rows = re.findall(r"<tr><td><code><a href='/_ah/admin/tasks/\?queue=([\w-]+)'>.*?</tr>", page)
            cells = re.findall(r"<tr><td><code><a href='/_ah/admin/tasks/\?queue=[\w-]+'>.*?"
                               r"<td>([^<]*(?:<[^t][^<]*)*)</td><td>(?:<a [^>]*>Purge…</a>)?</td></tr>", page)
            return dict(zip(rows, cells))

        assert rates(configured) == {
            "default": "5/s, bucket 5",  # App Engine's default queue, as queue.yaml leaves it
            "mail": "2.5/m, bucket 3, at most 2 running",
            "held": "paused (rate 0)",
        }
        assert rates(plain) == {"default": "unlimited", "mail": "unlimited", "held": "unlimited"}
    finally:
        configured.close()
        plain.close()
