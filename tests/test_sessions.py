"""SessionMiddleware against real memcached, SQLite, PostgreSQL and the App Engine stubs.

Every request goes through ``wsgiref.validate`` on both sides of the middleware.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import wsgiref.util
from wsgiref.validate import validator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaeservices.config import Services
from gaeservices.exceptions import ConfigurationError, SessionError, SessionTooLargeError
from gaeservices.sessions import SessionMiddleware
from gaeservices.sessions.session import Session

COOKIE = "gaesession"


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def set_cookie(self):
        values = self.header("Set-Cookie")
        assert len(values) <= 1
        return values[0] if values else None

    @property
    def data(self):
        return json.loads(self.body)


def app(environ, start_response):
    """Runs the test's action on the session; the response body is the session as JSON."""
    action = environ.get("test.action")
    session = environ["gaeservices.session"]
    body = b"untouched"
    if action is not None:
        action(session)
        body = json.dumps(dict(session)).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Client:
    """A browser with one cookie, calling the middleware in-process."""

    def __init__(self, middleware, cookie=None):
        self.middleware = middleware
        self.wsgi = validator(middleware)
        self.cookie = cookie

    def request(self, action=None, *, https=False, cookie_header=None):
        environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "QUERY_STRING": ""}
        wsgiref.util.setup_testing_defaults(environ)
        if https:
            environ["wsgi.url_scheme"] = "https"
            environ["HTTPS"] = "on"
        if cookie_header is not None:
            environ["HTTP_COOKIE"] = cookie_header
        elif self.cookie:
            environ["HTTP_COOKIE"] = f"{COOKIE}={self.cookie}"
        if action is not None:
            environ["test.action"] = action
        seen = {}

        def start_response(status, headers, exc_info=None):
            seen["status"], seen["headers"] = status, headers
            return lambda data: None

        result = self.wsgi(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            result.close()
        response = Response(seen["status"], seen["headers"], body)
        cookie = response.set_cookie
        if cookie is not None:
            value = cookie.split(";", 1)[0].split("=", 1)[1]
            self.cookie = value if "Max-Age=0" not in cookie else None
        return response


def put(**items):
    return lambda session: session.update(items)


def incr(key):
    def action(session):
        session[key] = session.get(key, 0) + 1

    return action


def read(session):
    session.get("n")


# --- fixtures -----------------------------------------------------------------


@pytest.fixture
def make(tmp_path, memcached, sqlite_url):
    """Build a middleware: mode, plus any option; services on memcached + SQLite."""
    built = []

    def build(mode="cached_db", *, services=None, inner=app, **options):
        if services is None:
            services = Services(
                secret_key=options.pop("secret_key", "session-test-key-signing-key-for-the-test-suite"),
                data_dir=str(tmp_path),
                cache=memcached.url,
                store=sqlite_url,
                environ={},
            )
            built.append(services)
        return SessionMiddleware(validator(inner), mode=mode, services=services, **options)

    yield build
    for services in built:
        services.close()


MODES = ["cache", "cached_db", "db"]


class Counter:
    """Counts SQL statements that reach SQLite (the store's real traffic, whether
    run through SQLAlchemy or on the DBAPI connection)."""

    def __init__(self, store):
        from sqlalchemy import event

        assert store.engine.dialect.name == "sqlite"
        self.count = 0
        self.writes = 0

        def trace(statement):
            self.count += 1
            if statement.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
                self.writes += 1

        @event.listens_for(store.engine, "checkout")
        def _on_checkout(dbapi_connection, record, proxy):
            dbapi_connection.set_trace_callback(trace)

        @event.listens_for(store.engine, "checkin")
        def _on_checkin(dbapi_connection, record):
            if dbapi_connection is not None:
                dbapi_connection.set_trace_callback(None)


def memcached_calls(server):
    stats = server.stats()
    names = ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses", "incr_hits", "incr_misses")
    return {name: int(stats[name]) for name in names}


def delta(before, after):
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


# --- the basics, in every mode ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_counter_round_trip(make, mode):
    client = Client(make(mode))
    first = client.request(incr("n"))
    assert first.data == {"n": 1}
    assert first.set_cookie is not None
    assert client.request(incr("n")).data == {"n": 2}
    assert client.request(incr("n")).data == {"n": 3}
    assert client.request(lambda s: None).data == {"n": 3}


@pytest.mark.parametrize("mode", MODES)
def test_cookie_holds_only_a_signed_id_with_safe_flags(make, mode):
    client = Client(make(mode))
    response = client.request(put(secret="the data is not in the cookie"))
    cookie = response.set_cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    sid, _, signature = value.partition(".")
    assert len(sid) >= 22 and signature  # >= 128 random bits, then the signature
    assert "data" not in cookie
    attributes = [a.strip() for a in cookie.split(";")[1:]]
    assert "HttpOnly" in attributes
    assert "SameSite=Lax" in attributes
    assert "Path=/" in attributes
    assert f"Max-Age={14 * 24 * 3600}" in attributes
    assert "Secure" not in attributes  # the request was http
    assert response.header("Vary") == ["Cookie"]


@pytest.mark.parametrize("mode", MODES)
def test_secure_flag_follows_https_unless_configured(make, mode):
    assert "; Secure" in Client(make(mode)).request(put(a=1), https=True).set_cookie
    assert "; Secure" in Client(make(mode, secure=True)).request(put(a=1)).set_cookie
    assert "; Secure" not in Client(make(mode, secure=False)).request(put(a=1), https=True).set_cookie


def test_cookie_options(make):
    cookie = Client(
        make(samesite="Strict", domain="example.com", path="/app", max_age=600, httponly=False)
    ).request(put(a=1)).set_cookie
    assert "SameSite=Strict" in cookie
    assert "Domain=example.com" in cookie
    assert "Path=/app" in cookie
    assert "Max-Age=600" in cookie
    assert "HttpOnly" not in cookie
    none = Client(make(samesite="None", secure=True)).request(put(a=1)).set_cookie
    assert "SameSite=None" in none and "Secure" in none


def test_bad_options_fail_at_start_up(make):
    with pytest.raises(ConfigurationError):
        make(mode="redis")
    with pytest.raises(ConfigurationError):
        make(samesite="None")  # browsers drop SameSite=None without Secure
    with pytest.raises(ConfigurationError):
        make(samesite="sometimes")
    with pytest.raises(ConfigurationError):
        make(cookie_name="bad name")
    with pytest.raises(ConfigurationError):
        make(domain="example.com; Secure")
    with pytest.raises(ConfigurationError):
        make(max_age=0)


@pytest.mark.parametrize("mode", MODES)
def test_mapping_behaviour(make, mode):
    client = Client(make(mode))
    client.request(put(a=1, b=[1, 2], c={"x": "y"}, d=None, e="text", f=1.5, g=True))

    def check(session):
        assert isinstance(session, Session)
        assert len(session) == 7
        assert "a" in session and "zz" not in session
        assert session["b"] == [1, 2]
        assert session.get("zz", "default") == "default"
        assert sorted(session) == list("abcdefg")
        assert session.pop("a") == 1
        del session["d"]
        with pytest.raises(KeyError):
            del session["d"]
        session.setdefault("h", "new")

    client.request(check)
    assert client.request(lambda s: None).data == {
        "b": [1, 2],
        "c": {"x": "y"},
        "e": "text",
        "f": 1.5,
        "g": True,
        "h": "new",
    }


@pytest.mark.parametrize("mode", MODES)
def test_clear(make, mode):
    client = Client(make(mode))
    client.request(put(a=1, b=2))
    client.request(lambda s: s.clear())
    assert client.request(lambda s: None).data == {}


@pytest.mark.parametrize("mode", MODES)
def test_in_place_changes_of_lists_and_dicts_are_saved(make, mode):
    client = Client(make(mode))
    client.request(put(cart=["apple"], prefs={"theme": "dark"}))
    client.request(lambda s: (s["cart"].append("pear"), s["prefs"].update(lang="fr")))
    assert client.request(lambda s: None).data == {
        "cart": ["apple", "pear"],
        "prefs": {"theme": "dark", "lang": "fr"},
    }


# --- JSON only ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", (1, 2), float("nan"), float("inf"), {1: "int key"}, [1, object()],
     {"nested": {"deeper": [1, {2: "x"}]}}],
    ids=repr,
)
def test_values_json_cannot_hold_raise_type_error_naming_the_key(make, value):
    client = Client(make("cached_db"))
    client.request(put(kept=1))

    def set_bad(session):
        with pytest.raises(TypeError, match="'the_key'"):
            session["the_key"] = value
        assert "the_key" not in session

    client.request(set_bad)
    assert client.request(lambda s: None).data == {"kept": 1}


def test_keys_must_be_str(make):
    def set_bad(session):
        with pytest.raises(TypeError):
            session[1] = "x"

    Client(make()).request(set_bad)


def test_nothing_is_pickled(make, memcached):
    from pymemcache.client.base import Client as Raw

    middleware = make("cache")
    client = Client(middleware)
    client.request(put(name="alice", items=[1, 2]))
    sid = client.cookie.split(".")[0]
    raw = Raw((memcached.host, memcached.port)).get(middleware.backend.prefix + sid)
    assert raw is not None
    head, body = raw.split(b"\n", 1)
    version, created, accessed, refreshed = (int(t) for t in head.split(b" "))  # times in ms
    assert version == 1
    assert created <= accessed == refreshed
    assert abs(accessed / 1000 - time.time()) < 60
    assert json.loads(body) == {"name": "alice", "items": [1, 2]}



@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "planted",
    [
        b"garbage",
        b"1 2\n{}",  # two times, not three
        b"a b c\n{}",
        b'1 2 3\n["a list"]',
        b'1 2 3\n{"a":1} trailing',
        b'1 2 3\n{"a":',
        b"1 2 3\n\xff\xfe",
        b'{"c":1,"a":2,"d":{}}',  # JSON without the times line
        b"",
    ],
)
def test_an_unreadable_record_gives_a_fresh_session(make, mode, planted, caplog):
    middleware = make(mode)
    client = Client(middleware)
    client.request(put(name="alice"))
    sid = middleware.session_id({"HTTP_COOKIE": f"{COOKIE}={client.cookie}"})[0]
    key = middleware.backend.prefix + sid
    if mode != "db":
        middleware.services.cache.set(key, planted, timeout=60)
    if mode != "cache":
        middleware.services.store.put(key, planted, timeout=60)
    with caplog.at_level(logging.WARNING, logger="gaeservices.sessions"):
        response = client.request(lambda s: None)
    assert response.status.startswith("200")
    assert response.data == {}
    assert "unreadable" in caplog.text
    assert client.request(put(name="bob")).data == {"name": "bob"}  # and it works again


# --- size ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_max_size(make, mode):
    client = Client(make(mode, max_size=1000))
    client.request(put(small="x" * 100))

    def too_big(session):
        with pytest.raises(SessionTooLargeError, match="max_size=1000"):
            session["big"] = "y" * 1000
        session["small2"] = "z" * 100  # still room for this

    client.request(too_big)
    assert client.request(lambda s: None).data == {"small": "x" * 100, "small2": "z" * 100}


@pytest.mark.parametrize("mode", MODES)
def test_max_size_counts_characters_beyond_the_basic_plane(make, mode):
    # JSON writes such a character as a surrogate pair: twelve bytes for one character.
    client = Client(make(mode, max_size=1000))
    client.request(put(small="x"))

    def too_big(session):
        with pytest.raises(SessionTooLargeError, match="max_size=1000"):
            session["big"] = "\U0001F600" * 120
        with pytest.raises(SessionTooLargeError, match="max_size=1000"):
            session["\U0001F600" * 120] = 1

    assert client.request(too_big).status.startswith("200")
    assert client.request(lambda s: None).data == {"small": "x"}


def test_rewriting_one_key_many_times_is_not_counted_many_times(make):
    client = Client(make(max_size=2000))

    def many(session):
        for i in range(200):
            session["counter"] = "v" * 500 + str(i)

    assert client.request(many).data == {"counter": "v" * 500 + "199"}


# --- laziness: what each kind of request costs ---------------------------------------------


def test_untouched_request_makes_no_call_and_sends_no_cookie(make, memcached):
    middleware = make("cached_db")
    client = Client(middleware)
    client.request(put(n=1))
    statements = Counter(middleware.services.store)
    before = memcached_calls(memcached)
    response = client.request(None)
    assert response.body == b"untouched"
    assert response.set_cookie is None
    assert response.header("Vary") == []
    assert delta(before, memcached_calls(memcached)) == {}
    assert statements.count == 0


def test_untouched_request_returns_the_applications_own_iterable(make):
    body = [b"as is"]

    def plain(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    middleware = SessionMiddleware(plain, services=make().services)
    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    assert middleware(environ, lambda status, headers, exc_info=None: None) is body


@pytest.mark.parametrize("mode", ["cache", "cached_db"])
def test_read_only_request_is_one_cache_get_and_no_write(make, memcached, mode):
    middleware = make(mode)
    client = Client(middleware)
    client.request(put(n=1))
    client.request(read)  # the first read after a write may still be refreshing nothing
    statements = Counter(middleware.services.store)
    before = memcached_calls(memcached)
    for _ in range(5):
        response = client.request(read)
        assert response.set_cookie is None
    assert delta(before, memcached_calls(memcached)) == {"cmd_get": 5}
    assert statements.count == 0


def test_cached_db_change_is_one_store_transaction_and_one_cache_write(make, memcached):
    middleware = make("cached_db")
    client = Client(middleware)
    client.request(put(n=1))
    statements = Counter(middleware.services.store)
    before = memcached_calls(memcached)
    response = client.request(incr("n"))
    assert response.data == {"n": 2}
    # the cookie is sent again: it carries the version of the record just written
    assert response.set_cookie.split(";")[0].split(".")[1] == "2"
    assert delta(before, memcached_calls(memcached)) == {"cmd_get": 1, "cmd_set": 1}  # gets + cas
    assert statements.writes == 1  # one UPDATE, in one transaction
    # and the cache now holds the new record: the next read is a hit
    before = memcached_calls(memcached)
    assert client.request(lambda s: None).data == {"n": 2}
    assert delta(before, memcached_calls(memcached)) == {"cmd_get": 1}
    assert statements.writes == 1


def test_cached_db_miss_reads_the_store_and_refills_the_cache(make, memcached):
    middleware = make("cached_db")
    client = Client(middleware)
    client.request(put(n=7))
    memcached.flush()
    assert client.request(lambda s: None).data == {"n": 7}
    before = memcached_calls(memcached)
    assert client.request(lambda s: None).data == {"n": 7}
    assert delta(before, memcached_calls(memcached)) == {"cmd_get": 1}


def test_db_mode_never_touches_the_cache(make, memcached):
    client = Client(make("db"))
    before = memcached_calls(memcached)
    client.request(put(n=1))
    client.request(incr("n"))
    assert client.request(lambda s: None).data == {"n": 2}
    assert delta(before, memcached_calls(memcached)) == {}


@pytest.mark.parametrize("mode", MODES)
def test_reading_an_empty_new_session_writes_nothing(make, memcached, mode):
    middleware = make(mode)
    client = Client(middleware)
    before = memcached_calls(memcached)
    response = client.request(read)
    assert response.set_cookie is None
    assert client.cookie is None
    assert delta(before, memcached_calls(memcached)) == {}  # no cookie: nothing to look up


# --- lifetimes -------------------------------------------------------------------------


class Clock:
    """Seconds since the epoch that a test moves forward by hand."""

    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.mark.parametrize("mode", MODES)
def test_idle_refresh_is_written_at_most_once_per_interval(make, memcached, mode):
    clock = Clock()
    middleware = make(mode, max_age=60, refresh_interval=10, clock=clock)
    client = Client(middleware)
    client.request(put(n=1))
    assert client.request(read).set_cookie is None
    clock.advance(9.9)
    assert client.request(read).set_cookie is None
    clock.advance(0.2)
    refreshed = client.request(read)
    assert refreshed.set_cookie is not None and "Max-Age=60" in refreshed.set_cookie
    assert client.request(read).set_cookie is None
    clock.advance(5)
    assert client.request(read).set_cookie is None


@pytest.mark.parametrize("mode", MODES)
def test_idle_expiry(make, mode):
    clock = Clock()
    client = Client(make(mode, max_age=100, clock=clock))
    client.request(put(n=1))
    clock.advance(99)
    assert client.request(lambda s: None).data == {"n": 1}  # used: the idle time starts again
    clock.advance(99)
    assert client.request(lambda s: None).data == {"n": 1}
    clock.advance(101)
    assert client.request(lambda s: None).data == {}


@pytest.mark.parametrize("mode", MODES)
def test_absolute_lifetime_ends_even_an_active_session(make, mode):
    clock = Clock()
    client = Client(make(mode, max_age=600, absolute_lifetime=200, refresh_interval=0, clock=clock))
    response = client.request(put(n=1))
    assert "Max-Age=200" in response.set_cookie  # the cookie never outlives the session
    clock.advance(110)
    response = client.request(incr("n"))
    assert response.data == {"n": 2}
    assert "Max-Age=90" in response.set_cookie
    clock.advance(91)
    assert client.request(lambda s: None).data == {}


# --- cookies that are not ours -------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_tampered_cookie_gives_a_fresh_session_and_logs_at_debug(make, mode, caplog):
    client = Client(make(mode))
    client.request(put(n=1))
    sid, _, signature = client.cookie.partition(".")
    tampered = sid[:-1] + ("A" if sid[-1] != "A" else "B") + "." + signature
    with caplog.at_level(logging.DEBUG, logger="gaeservices.sessions"):
        response = client.request(lambda s: None, cookie_header=f"{COOKIE}={tampered}")
    assert response.status == "200 OK"
    assert response.data == {}
    assert any("bad signature" in r.getMessage() for r in caplog.records)


def test_cookie_signed_with_another_key_is_refused(make):
    theirs = Client(make(secret_key="another-application-signing-key-for-the-test-suite"))
    theirs.request(put(admin=True))
    ours = Client(make(secret_key="session-test-key-signing-key-for-the-test-suite"))
    assert ours.request(lambda s: None, cookie_header=f"{COOKIE}={theirs.cookie}").data == {}


def test_every_key_verifies_and_the_newest_signs(make, tmp_path, memcached, sqlite_url):
    def services(keys):
        return Services(secret_key=keys, data_dir=str(tmp_path), cache=memcached.url,
                        store=sqlite_url, environ={})

    old = Client(make(services=services("old-key-signing-key-for-the-test-suite")))
    old.request(put(n=1))
    rotated_services = services("new-key-signing-key-for-the-test-suite,old-key-signing-key-for-the-test-suite")
    rotated = Client(make(services=rotated_services), cookie=old.cookie)
    assert rotated.request(incr("n")).data == {"n": 2}  # the old cookie still verifies
    payload, _, signature = rotated.cookie.rpartition(".")  # "<id>.<version>.<signature>"
    assert rotated_services.signer("gaeservices.session").verify_signature(payload.encode(), signature.encode())
    new_only = Client(make(services=services("new-key-signing-key-for-the-test-suite")), cookie=rotated.cookie)
    assert new_only.request(lambda s: None).data == {"n": 2}  # re-signed with the newest key


@pytest.mark.parametrize("mode", MODES)
def test_unknown_but_validly_signed_id_is_never_adopted(make, mode):
    middleware = make(mode)
    planted = middleware.signer.sign("A" * 24).decode()
    client = Client(middleware, cookie=planted)
    response = client.request(put(n=1))
    assert response.data == {"n": 1}
    assert not client.cookie.startswith("A" * 24)  # a new id, not the attacker's


def test_the_valid_one_of_several_same_name_cookies_is_used(make):
    client = Client(make())
    client.request(put(n=5))
    header = f"{COOKIE}=garbage; other=1; {COOKIE}={client.cookie}"
    assert client.request(lambda s: None, cookie_header=header).data == {"n": 5}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(
        st.text(),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."),
        st.from_regex(r"[A-Za-z0-9_-]{24}\.[A-Za-z0-9_-]{43}", fullmatch=True),
    ),
    prefix=st.sampled_from(["", " ", "x=1; ", f"{COOKIE}=; "]),
)
def test_forged_cookies_never_break_the_request(fuzz_client, value, prefix):
    header = f"{prefix}{COOKIE}={value}".replace("\n", "").replace("\r", "")
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        header = header.encode("utf-8").decode("latin-1")  # as a server hands bytes to WSGI
    response = fuzz_client.request(lambda s: s.get("n"), cookie_header=header)
    assert response.status == "200 OK"
    assert response.data == {}
    assert response.set_cookie is None


@pytest.fixture
def fuzz_client(make):
    return Client(make("cached_db"))


def test_a_tampered_signature_on_a_live_session_is_fuzzed_too(make):
    client = Client(make())
    client.request(put(n=1))
    sid, _, signature = client.cookie.partition(".")

    @settings(max_examples=100, deadline=None)
    # The last base64 character carries two padding bits that decode to nothing:
    # changing only those leaves the same signature, so it is not fuzzed.
    @given(st.integers(min_value=0, max_value=len(signature) - 2), st.characters(
        whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=127))
    def flip(position, char):
        forged = signature[:position] + char + signature[position + 1:]
        if forged == signature:
            return
        response = client.request(lambda s: None, cookie_header=f"{COOKIE}={sid}.{forged}")
        assert response.data == {}

    flip()
    assert client.request(lambda s: None).data == {"n": 1}


# --- fixation and logout -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cycle_key_moves_the_data_and_deletes_the_old_id(make, mode):
    client = Client(make(mode))
    client.request(put(cart=["book"]))
    before_login = client.cookie

    def login(session):
        session.cycle_key()
        session["user"] = "alice"

    response = client.request(login)
    assert response.set_cookie is not None
    assert client.cookie.split(".")[0] != before_login.split(".")[0]
    assert client.request(lambda s: None).data == {"cart": ["book"], "user": "alice"}
    stale = Client(client.middleware, cookie=before_login)
    assert stale.request(lambda s: None).data == {}


@pytest.mark.parametrize("mode", MODES)
def test_cycle_key_on_a_new_session(make, mode):
    client = Client(make(mode))
    client.request(lambda s: (s.cycle_key(), s.__setitem__("user", "bob")))
    assert client.request(lambda s: None).data == {"user": "bob"}


@pytest.mark.parametrize("mode", MODES)
def test_invalidate_deletes_the_data_and_expires_the_cookie(make, mode):
    client = Client(make(mode))
    client.request(put(user="alice"))
    old_cookie = client.cookie
    response = client.request(lambda s: s.invalidate())
    assert "Max-Age=0" in response.set_cookie
    assert response.data == {}
    assert client.cookie is None
    assert Client(client.middleware, cookie=old_cookie).request(lambda s: None).data == {}


@pytest.mark.parametrize("mode", MODES)
def test_data_set_after_invalidate_goes_to_a_new_session(make, mode):
    client = Client(make(mode))
    client.request(put(user="alice"))
    old_cookie = client.cookie
    client.request(lambda s: (s.invalidate(), s.__setitem__("flash", "logged out")))
    assert client.cookie and client.cookie != old_cookie
    assert client.request(lambda s: None).data == {"flash": "logged out"}


@pytest.mark.parametrize("mode", MODES)
def test_a_write_does_not_resurrect_a_session_invalidated_meanwhile(make, mode):
    middleware = make(mode)
    client = Client(middleware)
    client.request(put(user="alice"))
    other_tab = Client(middleware, cookie=client.cookie)

    def change_after_logout_elsewhere(session):
        session.get("user")  # loaded before the logout
        other_tab.request(lambda s: s.invalidate())
        session["late"] = 1

    response = client.request(change_after_logout_elsewhere)
    assert "Max-Age=0" in response.set_cookie
    assert Client(middleware, cookie=other_tab.cookie).request(lambda s: None).data == {}


# --- overlapping requests ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_overlapping_requests_changing_different_keys_keep_both(make, mode):
    middleware = make(mode)
    client = Client(middleware)
    client.request(put(a=0, b=0, shared="start"))
    loaded = threading.Barrier(2)

    def change(key):
        def action(session):
            session.get(key)  # both requests have loaded the same record...
            loaded.wait(10)
            session[key] = session[key] + 1  # ...before either writes

        return action

    threads = [
        threading.Thread(target=Client(middleware, cookie=client.cookie).request, args=(change(k),))
        for k in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert client.request(lambda s: None).data == {"a": 1, "b": 1, "shared": "start"}


@pytest.mark.parametrize("mode", MODES)
def test_many_overlapping_writers(make, mode):
    middleware = make(mode)
    client = Client(middleware)
    client.request(put(start=True))
    n = 8
    barrier = threading.Barrier(n)

    def worker(i):
        other = Client(middleware, cookie=client.cookie)

        def action(session):
            session.get("start")
            barrier.wait(10)
            session[f"k{i}"] = i

        other.request(action)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert client.request(lambda s: None).data == {"start": True, **{f"k{i}": i for i in range(n)}}


# --- WSGI edge cases ---------------------------------------------------------------------


def test_generator_application_changes_are_saved(make):
    def streaming(environ, start_response):
        session = environ["gaeservices.session"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"before "
        session["streamed"] = session.get("streamed", 0) + 1
        yield b"after"

    client = Client(make())
    client.request(put(streamed=0))
    streaming_client = Client(
        SessionMiddleware(validator(streaming), services=client.middleware.services), cookie=client.cookie
    )
    assert streaming_client.request().body == b"before after"
    assert client.request(lambda s: None).data == {"streamed": 1}


@pytest.mark.parametrize("mode", MODES)
def test_list_application_changes_after_start_response_are_saved(make, mode):
    # A list body is finished when the application returns: no wrapper is
    # needed to save what it changed after start_response.
    def late(environ, start_response):
        session = environ["gaeservices.session"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        session["late"] = session.get("late", 0) + 1
        session["items"].append(len(session["items"]))
        return [b"ok"]

    client = Client(make(mode))
    client.request(put(late=0, items=[]))
    services = client.middleware.services
    late_client = Client(SessionMiddleware(late, mode=mode, services=services), cookie=client.cookie)
    for _ in range(2):
        response = late_client.request()
        assert response.body == b"ok"
    assert client.request(lambda s: None).data == {"late": 2, "items": [0, 1]}


def test_list_application_that_never_touches_the_session_gets_its_list_back(make):
    body = [b"as it was"]

    def plain(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    middleware = SessionMiddleware(plain, services=make().services)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    assert middleware(environ, lambda status, headers, exc_info=None: None) is body


@pytest.mark.parametrize("mode", MODES)
def test_requests_leave_no_reference_cycles(make, mode):
    # Every object of a request is freed when its last reference goes, none is
    # left for the garbage collector: the session does not hold the environ
    # that holds it.
    import gc

    def counter(environ, start_response):
        kind = environ["test.kind"]
        session = environ["gaeservices.session"]
        if kind == "change":
            session["n"] = session.get("n", 0) + 1
        elif kind == "read":
            session.get("n")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = SessionMiddleware(counter, mode=mode, services=make(mode).services)
    cookie = []

    def request(kind):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http", "test.kind": kind}
        if cookie:
            environ["HTTP_COOKIE"] = cookie[0]
        headers = []
        result = middleware(environ, lambda status, response_headers, exc_info=None: headers.extend(response_headers))
        b"".join(result)
        getattr(result, "close", lambda: None)()
        for name, value in headers:
            if name == "Set-Cookie":
                cookie[:] = [value.split(";", 1)[0]]

    request("change")
    request("read")  # connections, statements and keys are all made and cached now
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            for kind in ("change", "read", "untouched"):
                request(kind)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_error_responses_keep_nothing(make):
    import sys

    def failing(environ, start_response):
        environ["gaeservices.session"]["half"] = "written"
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error"]

    services = make().services
    client = Client(make(services=services))
    client.request(put(n=1))
    Client(SessionMiddleware(validator(failing), services=services), cookie=client.cookie).request()
    assert client.request(lambda s: None).data == {"n": 1}


def test_existing_vary_header_is_extended(make):
    def varying(environ, start_response):
        environ["gaeservices.session"]["x"] = 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept-Encoding")])
        return [b"ok"]

    response = Client(make(inner=varying)).request()
    assert response.header("Vary") == ["Accept-Encoding, Cookie"]


def test_session_id_and_flags(make):
    def check_new(session):
        assert session.is_new and session.id is None and not session.modified
        session["x"] = 1
        assert session.modified and session.accessed

    client = Client(make())
    client.request(check_new)

    def check_old(session):
        assert not session.is_new and len(session.id) == 24
        assert not session.modified

    client.request(check_old)


# --- faults ------------------------------------------------------------------------------


def test_cached_db_survives_memcached_being_killed(private_memcached, tmp_path, sqlite_url):
    services = Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path),
        cache=private_memcached.url + "?retry_delay=0.2&timeout=0.5&connect_timeout=0.5",
        store=sqlite_url, environ={},
    )
    try:
        client = Client(SessionMiddleware(validator(app), services=services))
        client.request(put(n=1))
        assert client.request(incr("n")).data == {"n": 2}
        private_memcached.stop()  # killed, as a crash would
        assert client.request(lambda s: None).data == {"n": 2}
        assert client.request(incr("n")).data == {"n": 3}
        assert client.request(incr("n")).data == {"n": 4}
        fresh = Client(client.middleware)
        assert fresh.request(put(new=True)).data == {"new": True}
        private_memcached.start()  # back, empty
        time.sleep(0.3)
        assert client.request(incr("n")).data == {"n": 5}
        assert client.request(lambda s: None).data == {"n": 5}
        assert fresh.request(lambda s: None).data == {"new": True}
    finally:
        services.close()


def test_cache_mode_with_memcached_down_fails_clearly(private_memcached, tmp_path, sqlite_url):
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), cache=private_memcached.url,
                        store=sqlite_url, environ={})
    try:
        client = Client(SessionMiddleware(validator(app), mode="cache", services=services))
        private_memcached.stop()
        with pytest.raises(SessionError, match="memcached"):
            client.request(put(n=1))
    finally:
        services.close()


def test_store_failure_is_clear_and_half_writes_nothing(memcached, tmp_path, postgres_url):
    import psycopg

    from gaeservices.store.engine import dispose_engine

    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), cache=memcached.url,
                        store=postgres_url, environ={})
    try:
        client = Client(SessionMiddleware(validator(app), services=services))
        client.request(put(n=1))
        schema = postgres_url.rsplit("%3D", 1)[1]
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test", autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{schema}".gaeservices_store RENAME TO unavailable')
        with pytest.raises(SessionError, match="nothing was written") as info:
            client.request(incr("n"))
        assert info.value.__cause__ is not None
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test", autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{schema}".unavailable RENAME TO gaeservices_store')
        assert client.request(lambda s: None).data == {"n": 1}  # neither store nor cache changed
        memcached.flush()
        assert client.request(lambda s: None).data == {"n": 1}
    finally:
        services.close()
        dispose_engine(services.backend_url("store"))


# --- other backends ----------------------------------------------------------------------


def test_cached_db_on_postgresql(memcached, tmp_path, postgres_url):
    from gaeservices.store.engine import dispose_engine

    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), cache=memcached.url,
                        store=postgres_url, environ={})
    try:
        middleware = SessionMiddleware(validator(app), services=services)
        client = Client(middleware)
        client.request(put(a=0, b=0))
        loaded = threading.Barrier(2)

        def change(key):
            def action(session):
                session.get(key)
                loaded.wait(10)
                session[key] += 1

            return action

        threads = [threading.Thread(target=Client(middleware, cookie=client.cookie).request,
                                    args=(change(k),)) for k in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert client.request(lambda s: None).data == {"a": 1, "b": 1}
        memcached.flush()
        assert client.request(lambda s: None).data == {"a": 1, "b": 1}
    finally:
        services.close()
        dispose_engine(services.backend_url("store"))


@pytest.mark.parametrize("mode", MODES)
def test_on_app_engine_services(testbed, tmp_path, mode):
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), cache="appengine://",
                        store="datastore://", environ={})
    client = Client(SessionMiddleware(validator(app), mode=mode, services=services))
    client.request(put(n=1))
    assert client.request(incr("n")).data == {"n": 2}
    client.request(lambda s: s.cycle_key())
    assert client.request(lambda s: None).data == {"n": 2}
    if mode != "cache":
        from google.appengine.api import memcache

        memcache.flush_all()
        assert client.request(lambda s: None).data == {"n": 2}
    client.request(lambda s: s.invalidate())
    assert client.request(lambda s: None).data == {}


def test_process_default_services(monkeypatch, tmp_path):
    from gaeservices.config import set_services

    monkeypatch.setenv("GAESERVICES_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GAESERVICES_SECRET_KEY", "from-the-environment-signing-key-for-the-test-suite")
    previous = set_services(None)
    try:
        import gaeservices

        client = Client(gaeservices.SessionMiddleware(validator(app)))
        client.request(put(n=1))
        assert client.request(lambda s: None).data == {"n": 1}
    finally:
        set_services(previous)


# --- what the middleware adds to the response ------------------------------------------


def test_a_file_wrapper_response_reaches_the_server_untouched(make, tmp_path):
    """Behind the middleware, the server still sees its own wsgi.file_wrapper
    object, so it can send the file with sendfile; the session is saved."""
    from wsgiref.util import FileWrapper

    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 1000)
    sent = {}

    def files(environ, start_response):
        session = environ["gaeservices.session"]
        session["downloads"] = session.get("downloads", 0) + 1
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        sent["wrapper"] = environ["wsgi.file_wrapper"](open(path, "rb"))
        return sent["wrapper"]

    services = make().services
    middleware = SessionMiddleware(files, services=services)  # no validator: it would wrap the body
    cookie = None
    for expected in (1, 2):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.file_wrapper": FileWrapper}
        wsgiref.util.setup_testing_defaults(environ)
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        headers = {}
        result = middleware(environ, lambda status, h, exc_info=None: headers.update(h))
        assert result is sent["wrapper"]
        assert b"".join(result) == b"x" * 1000
        result.close()
        cookie = headers["Set-Cookie"].split(";")[0]
        assert Client(make(services=services), cookie=cookie.split("=", 1)[1]).request(
            lambda s: None
        ).data == {"downloads": expected}


@pytest.mark.parametrize("mode", MODES)
def test_a_response_that_read_or_set_the_session_is_private(make, mode):
    client = Client(make(mode))
    created = client.request(put(n=1))
    assert created.set_cookie is not None
    assert created.header("Cache-Control") == ["private"]
    read_only = client.request(read)
    assert read_only.set_cookie is None
    assert read_only.header("Cache-Control") == ["private"]
    logged_out = client.request(lambda s: s.invalidate())
    assert "Max-Age=0" in logged_out.set_cookie
    assert logged_out.header("Cache-Control") == ["private"]
    assert client.request().header("Cache-Control") == []  # untouched: the app's own headers


def test_the_applications_own_cache_control_is_kept(make):
    def chooses(environ, start_response):
        environ["gaeservices.session"]["x"] = 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("cache-control", "no-store")])
        return [b"ok"]

    response = Client(make(inner=chooses)).request()
    assert response.set_cookie is not None
    assert response.header("Cache-Control") == ["no-store"]
    assert response.header("Vary") == ["Cookie"]


def test_an_error_response_that_read_the_session_is_private_too(make):
    import sys

    def failing(environ, start_response):
        environ["gaeservices.session"].get("n")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error"]

    client = Client(make())
    client.request(put(n=1))
    response = Client(make(inner=failing), cookie=client.cookie).request()
    assert response.header("Cache-Control") == ["private"]


# --- the record's JSON -------------------------------------------------------------------


def test_the_json_fast_paths_are_cpythons_and_agree_with_the_json_module():
    """The session record uses CPython's private C encoder and scanner
    (json.encoder.c_make_encoder, json.scanner.c_make_scanner). This fails loudly
    when a CPython release moves or changes them, rather than letting the
    session fall back to the slower public API unnoticed."""
    import platform

    from gaeservices.sessions import session as module

    if platform.python_implementation() == "CPython":
        assert module.FAST_ENCODER, "json.encoder.c_make_encoder is gone or changed"
        assert module.FAST_SCANNER, "json.scanner.c_make_scanner is gone or changed"
        assert type(module._encoder).__module__ == "_json"
    values = [
        {}, {"a": 1}, {"é": "漢字\U0001f600\n\t\"\\"}, {"n": [1, -2, 3.25, 1e300, 10**30, True, False, None]},
        {"nested": {"deep": [{"x": []}, {}]}}, {"": ""}, {"ctrl": "\x00\x1f\x7f\u2028"},
    ]  # fmt: skip
    for value in values:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        assert module._dumps(value) == text
        assert module._scan(text, 0) == (value, len(text))
    with pytest.raises(ValueError):
        module._dumps({"x": float("nan")})
    with pytest.raises(TypeError):
        module._dumps({"x": object()})


# --- cached_db: the store is the truth, whatever the cache does ----------------------------
#
# "Workers" below are middlewares with Services of their own: each has its own
# memcached connections and retry delay, as the processes of a server have,
# over one real memcached and one SQLite store.


@pytest.fixture
def workers(private_memcached, tmp_path, sqlite_url):
    built = []

    def worker(cache=None, **options):
        services = Services(
            secret_key="k-signing-key-for-the-test-suite",
            data_dir=str(tmp_path),
            cache=cache or private_memcached.url + "?timeout=0.2&connect_timeout=0.2&retry_delay=3600",
            store=sqlite_url,
            environ={},
        )
        built.append(services)
        return SessionMiddleware(validator(app), services=services, **options)

    yield worker
    for services in built:
        services.close()


def _open_retry_window(private_memcached, middleware):
    """Make one worker see memcached fail (a stall), so that it leaves memcached
    alone for its retry delay, while the others still use it."""
    private_memcached.pause()
    try:
        assert middleware.services.cache.get("probe", "missed") == "missed"
    finally:
        private_memcached.resume()


def _via(worker, browser, action=None):
    """One request of ``browser`` (its cookie jar) served by ``worker``."""
    sent = Client(worker, cookie=browser.cookie)
    response = sent.request(action)
    browser.cookie = sent.cookie
    return response


def test_a_write_the_cache_missed_is_never_hidden_by_its_old_copy(private_memcached, workers):
    a, b = workers(), workers()
    browser = Client(a)
    browser.request(put(n=1))
    assert _via(b, browser, lambda s: None).data == {"n": 1}  # cached
    _open_retry_window(private_memcached, b)
    # b writes the store but cannot update the cache, which keeps n=1 ...
    assert _via(b, browser, incr("n")).data == {"n": 2}
    assert _via(b, browser, incr("n")).data == {"n": 3}
    # ... and a, whose memcached works, must not serve that old copy or merge onto it.
    assert _via(a, browser, lambda s: None).data == {"n": 3}
    assert _via(a, browser, incr("n")).data == {"n": 4}
    assert _via(b, browser, incr("n")).data == {"n": 5}
    assert a.services.store.get("gaesession:" + browser.cookie.split(".")[0]).endswith(b'{"n":5}')
    assert _via(a, browser, incr("n")).data == {"n": 6}
    # the cache was brought forward: a read is one memcached get again
    before = memcached_calls(private_memcached)
    assert _via(a, browser, lambda s: None).data == {"n": 6}
    assert delta(before, memcached_calls(private_memcached)) == {"cmd_get": 1}


def test_a_logout_in_a_workers_retry_window_holds_on_every_worker(private_memcached, workers):
    a, b = workers(), workers()
    client = Client(a)
    client.request(put(user="alice"))
    old_cookie = client.cookie
    assert Client(a, cookie=old_cookie).request(lambda s: None).data == {"user": "alice"}  # cached
    _open_retry_window(private_memcached, b)
    on_b = Client(b, cookie=old_cookie)
    assert "Max-Age=0" in on_b.request(lambda s: s.invalidate()).set_cookie
    for worker in (a, b, workers()):
        assert Client(worker, cookie=old_cookie).request(lambda s: None).data == {}


def test_a_login_in_a_workers_retry_window_ends_the_old_id_everywhere(private_memcached, workers):
    a, b = workers(), workers()
    planted = Client(a)
    planted.request(put(cart=[1]))  # an id an attacker could have planted
    old_cookie = planted.cookie
    _open_retry_window(private_memcached, b)
    victim = Client(b, cookie=old_cookie)
    victim.request(lambda s: (s.cycle_key(), s.__setitem__("user", "alice")))
    assert victim.cookie.split(".")[0] != old_cookie.split(".")[0]
    assert Client(a, cookie=victim.cookie).request(lambda s: None).data == {"cart": [1], "user": "alice"}
    assert Client(a, cookie=old_cookie).request(lambda s: None).data == {}


def test_a_logout_during_a_stall_waits_for_memcached_and_then_holds(private_memcached, workers):
    a = workers()
    client = Client(a)
    client.request(put(user="alice"))
    old_cookie = client.cookie
    assert Client(a, cookie=old_cookie).request(lambda s: None).data == {"user": "alice"}
    private_memcached.pause()
    resume = threading.Timer(0.6, private_memcached.resume)
    resume.start()
    try:
        response = client.request(lambda s: s.invalidate())  # waits until memcached runs again
    finally:
        resume.join()
        private_memcached.resume()
    assert "Max-Age=0" in response.set_cookie
    a.services.cache.retry_now()
    assert Client(a, cookie=old_cookie).request(lambda s: None).data == {}


def test_a_logout_memcached_never_confirms_fails_and_can_be_retried(private_memcached, workers):
    a = workers(invalidate_wait=0.3)
    client = Client(a)
    client.request(put(user="alice"))
    old_cookie = client.cookie
    private_memcached.pause()
    try:
        with pytest.raises(SessionError, match="logout is not complete"):
            client.request(lambda s: s.invalidate())
    finally:
        private_memcached.resume()
    a.services.cache.retry_now()
    # The request failed: its user retries. The store has ended the session
    # already; the retry still ends the id in the cache.
    assert "Max-Age=0" in Client(a, cookie=old_cookie).request(lambda s: s.invalidate()).set_cookie
    assert Client(a, cookie=old_cookie).request(lambda s: None).data == {}


def test_a_delayed_write_from_a_stall_never_moves_the_cache_backwards(private_memcached, workers):
    """Commands sent to a stalled memcached run when it resumes, after the
    client gave up on them: a stale refill landing late must not hide a
    newer write or an ended session."""
    from pymemcache.client.base import Client as Raw

    a = workers()
    client = Client(a)
    client.request(put(n=1))
    key = "gaesession:" + client.cookie.split(".")[0]
    raw = Raw((private_memcached.host, private_memcached.port), default_noreply=False)
    old_record, _ = raw.gets(key)
    assert client.request(incr("n")).data == {"n": 2}
    # A late refill of the old record (add) and a late blind write cannot land
    # over the newer copy; a client whose cookie saw version 2 never gets version 1.
    assert raw.add(key, old_record) is False
    raw.delete(key)
    assert raw.add(key, old_record) is True  # evicted, then refilled late with the old copy
    assert client.request(lambda s: None).data == {"n": 2}
    assert raw.get(key).endswith(b'{"n":2}')  # and the cache was brought forward
    # after a logout, the tombstone stops any late refill of the old record
    old_cookie = client.cookie
    client.request(lambda s: s.invalidate())
    assert raw.add(key, old_record) is False
    assert Client(a, cookie=old_cookie).request(lambda s: None).data == {}
    raw.close()


def test_a_process_local_cache_is_never_trusted_over_the_store(tmp_path, sqlite_url):
    """The embedded defaults (memory:// cache, SQLite store, cached_db) with
    several workers: each has its own in-process cache, none is trusted."""

    def worker():
        services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path),
                            store=sqlite_url, environ={})
        assert services.cache.shared is False
        return SessionMiddleware(validator(app), services=services)

    a, b = worker(), worker()
    client = Client(a)
    client.request(put(n=0, user="alice"))
    for i in range(1, 7):
        client.middleware = client.wsgi = None
        client = Client((a, b)[i % 2], cookie=client.cookie)
        assert client.request(incr("n")).data == {"n": i, "user": "alice"}
    old_cookie = client.cookie
    Client(a, cookie=old_cookie).request(lambda s: s.invalidate())
    assert Client(b, cookie=old_cookie).request(lambda s: None).data == {}
    assert a.services.cache.stats()["items"] == 0  # nothing was put in it
