import os
import subprocess
import sys

import pytest

from gaeservices import ConfigurationError, Services, get_services, set_services
from gaeservices.config import BackendURL, on_app_engine, parse_backend_url


def test_defaults_are_embedded(tmp_path):
    svc = Services(environ={}, data_dir=str(tmp_path))
    assert svc.backend_url("cache").scheme == "memory"
    assert svc.backend_url("store").url == f"sqlite:///{tmp_path}/store.sqlite3"
    assert svc.backend_url("queue").scheme == "local"
    assert svc.email_queue_name == "default"


def test_environment_is_read(tmp_path):
    env = {
        "GAESERVICES_CACHE": "memcache://10.0.0.1:11211,10.0.0.2:11211",
        "GAESERVICES_STORE": "postgresql://u:p@db:5432/app",
        "GAESERVICES_QUEUE": "immediate://",
        "GAESERVICES_DATA_DIR": str(tmp_path),
        "EMAIL_QUEUE_NAME": "mail",
        "GAESERVICES_SECRET_KEY": "new-signing-key-for-the-test-suite,old-signing-key-for-the-test-suite",
    }
    svc = Services(environ=env)
    assert svc.backend_url("cache").hosts == [("10.0.0.1", 11211), ("10.0.0.2", 11211)]
    assert svc.backend_url("store").password == "p"
    assert svc.email_queue_name == "mail"
    assert svc.secret_keys == [b"new-signing-key-for-the-test-suite", b"old-signing-key-for-the-test-suite"]
    assert "p@" not in repr(svc)  # the password is redacted


def test_arguments_override_environment(tmp_path):
    svc = Services(environ={"GAESERVICES_CACHE": "memcache://a:1"}, cache="memory://", data_dir=str(tmp_path))
    assert svc.backend_url("cache").scheme == "memory"


def test_app_engine_defaults(tmp_path):
    env = {"GAE_ENV": "standard", "GAE_SERVICE": "default", "GAE_INSTANCE": "x"}
    assert on_app_engine(env)
    assert not on_app_engine({"GAE_ENV": "localdev"})
    key = "k" * 32
    svc = Services(environ={**env, "GAESERVICES_SECRET_KEY": key}, data_dir=str(tmp_path))
    assert svc.backend_url("cache").scheme == "appengine"
    assert svc.backend_url("store").scheme == "datastore"
    assert svc.backend_url("queue").scheme == "appengine"
    assert svc.secret_keys == [key.encode()]


def test_app_engine_without_a_key_fails_when_built(tmp_path):
    # Instances share no disk: a generated key would differ between them, and the
    # first signed cookie or task would fail in production. Say so at start-up.
    env = {"GAE_ENV": "standard", "GAE_SERVICE": "default", "GAE_INSTANCE": "x"}
    with pytest.raises(ConfigurationError, match="GAESERVICES_SECRET_KEY must be set"):
        Services(environ=env, data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("", "holds no key"),
        (" , ", "holds no key"),
        ("short", "key 1 of 1 is 5 bytes"),
        ("k" * 32 + ",old", "key 2 of 2 is 3 bytes"),
        ("k" * 32 + ",", "key 2 of 2 is empty"),
        ("k" * 31, "is 31 bytes"),
    ],
)
def test_empty_or_short_keys_fail_when_built(tmp_path, value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Services(environ={"GAESERVICES_SECRET_KEY": value}, data_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match=fragment):
        Services(environ={}, secret_key=value, data_dir=str(tmp_path))
    assert not (tmp_path / "secret_key").exists()  # nothing generated in its place


@pytest.mark.parametrize(
    "variable, value, fragment",
    [
        ("GAESERVICES_CACHE", "redis://x:1", "unknown backend 'redis'"),
        ("GAESERVICES_CACHE", "memcache://", "at least one host:port"),
        ("GAESERVICES_CACHE", "memcache://host", "has no port"),
        ("GAESERVICES_CACHE", "memcache://host:99999", "bad port"),
        ("GAESERVICES_CACHE", "localhost:11211", "is not a URL"),
        ("GAESERVICES_STORE", "sqlite://", "a path is required"),
        ("GAESERVICES_STORE", "mysql://x/y", "unknown backend 'mysql'"),
        ("GAESERVICES_QUEUE", "local://somewhere", "takes no host"),
        ("GAESERVICES_QUEUE", "local://?leese=5", "unknown option(s) leese"),
        ("GAESERVICES_CACHE", "memcache://h:1?noreply=1", "unknown option(s) noreply"),
        ("GAESERVICES_STORE", "sqlite:///x.db?busy=1", "unknown option(s) busy"),
    ],
)
def test_bad_urls_fail_at_construction(tmp_path, variable, value, fragment):
    with pytest.raises(ConfigurationError) as info:
        Services(environ={variable: value}, data_dir=str(tmp_path))
    message = str(info.value)
    assert variable in message
    assert fragment in message
    assert "accepted forms" in message or "expected" in message


def test_postgresql_query_goes_to_the_driver(tmp_path):
    svc = Services(environ={"GAESERVICES_STORE": "postgresql://h/db?sslmode=require"}, data_dir=str(tmp_path))
    assert svc.backend_url("store").options == {"sslmode": "require"}


def test_password_is_not_echoed_in_errors():
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url("store", "mysql://user:hunter2@db/x")
    assert "hunter2" not in str(info.value)


def test_url_parsing():
    url = BackendURL("memcache://[::1]:11211,host:11212?timeout=0.5&noreply=1")
    assert url.hosts == [("::1", 11211), ("host", 11212)]
    assert url.option("timeout", cast=float) == 0.5
    assert url.option("noreply", cast=bool) is True
    assert url.option("missing", 7, int) == 7


def test_secret_key_generated_once(tmp_path, caplog):
    first = Services(environ={}, data_dir=str(tmp_path))
    with caplog.at_level("WARNING"):
        key = first.secret_keys[0]
    assert "GAESERVICES_SECRET_KEY is not set" in caplog.text
    assert len(key) >= 32
    assert oct(os.stat(tmp_path / "secret_key").st_mode & 0o777) == "0o600"
    second = Services(environ={}, data_dir=str(tmp_path))
    assert second.secret_keys == [key]


def test_a_key_file_that_holds_no_key_is_refused(tmp_path):
    # What a crash between creating the file and writing it left behind, or a
    # file written by hand: never sign with an empty or short key.
    # Checked when Services is built, like a key given in the environment.
    for content in (b"", b"  \n", b"short"):
        (tmp_path / "secret_key").write_bytes(content)
        with pytest.raises(ConfigurationError, match="not a signing key"):
            Services(environ={}, data_dir=str(tmp_path))
    (tmp_path / "secret_key").unlink()
    (tmp_path / "secret_key").mkdir()  # unreadable as a file
    with pytest.raises(ConfigurationError, match="cannot read the signing key"):
        Services(environ={}, data_dir=str(tmp_path))


def test_racing_processes_generate_one_key(tmp_path):
    # Separate Services objects share no lock, as separate processes do not.
    import threading

    barrier, keys = threading.Barrier(8), []

    def generate():
        services = Services(environ={}, data_dir=str(tmp_path))
        barrier.wait()
        keys.append(services.secret_keys[0])

    threads = [threading.Thread(target=generate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) >= 32, keys
    assert os.listdir(tmp_path) == ["secret_key"]  # no temporary file left


def test_a_bytes_key_is_one_key_as_it_is(tmp_path):
    key = bytes(range(256))  # not UTF-8, and holds a comma (0x2c)
    services = Services(environ={}, secret_key=key, data_dir=str(tmp_path))
    assert services.secret_keys == [key]
    assert services.signer("x").unsign(services.signer("x").sign(b"data")) == b"data"
    assert Services(environ={}, secret_key=[key, b"o" * 32], data_dir=str(tmp_path)).secret_keys == [key, b"o" * 32]


def test_key_errors_name_where_the_key_came_from(tmp_path):
    with pytest.raises(ConfigurationError, match="^secret_key: key 1 of 1 is 5 bytes"):
        Services(environ={}, secret_key="short", data_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="^GAESERVICES_SECRET_KEY: key 1 of 1 is 5 bytes"):
        Services(environ={"GAESERVICES_SECRET_KEY": "short"}, data_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="keys are str or bytes, not int"):
        Services(environ={}, secret_key=[7], data_dir=str(tmp_path))  # type: ignore[list-item]


def test_rotated_keys_verify_newest_signs(tmp_path):
    old = Services(environ={}, secret_key="old-signing-key-for-the-test-suite", data_dir=str(tmp_path))
    token = old.signer("x").sign(b"payload")
    rotated = Services(environ={}, secret_key="new-signing-key-for-the-test-suite,old-signing-key-for-the-test-suite", data_dir=str(tmp_path))
    assert rotated.signer("x").unsign(token) == b"payload"
    new_token = rotated.signer("x").sign(b"payload")
    assert Services(environ={}, secret_key="new-signing-key-for-the-test-suite", data_dir=str(tmp_path)).signer("x").unsign(new_token)
    with pytest.raises(Exception):
        old.signer("x").unsign(new_token)


def test_process_default(monkeypatch, tmp_path):
    monkeypatch.setenv("GAESERVICES_DATA_DIR", str(tmp_path))
    previous = set_services(None)
    try:
        assert get_services() is get_services()
    finally:
        set_services(previous)


def test_backend_objects_are_accepted(tmp_path):
    sentinel = object()
    assert Services(environ={}, cache=sentinel, data_dir=str(tmp_path)).cache is sentinel


def test_import_is_light():
    # What `import gaeservices` must not pull in: any dependency (the SDK, Django,
    # Celery, SQLAlchemy, and even WebOb and itsdangerous, which the services import
    # when used), nor any service or backend module. How long it takes is measured
    # by `python -m bench import` (make bench), beside peers: a clock in a test fails
    # on a loaded machine without saying anything about the code.
    code = (
        "import sys; before = set(sys.modules); import gaeservices; gaeservices.Services; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    imported = set(out.split())
    outside_stdlib = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
    assert outside_stdlib == {"gaeservices", "gaeservices.config", "gaeservices.exceptions"}


@pytest.mark.parametrize(
    "variable, value, fragment",
    [
        ("GAESERVICES_STORE", "sqlite:///x.db?pool_size=abc", "pool_size='abc'"),
        ("GAESERVICES_STORE", "sqlite:///x.db?busy_timeout_ms=fast", "busy_timeout_ms='fast'"),
        ("GAESERVICES_STORE", "postgresql://h/db?max_overflow=lots", "max_overflow='lots'"),
        ("GAESERVICES_QUEUE", "local://?lease=soon", "lease='soon'"),
        ("GAESERVICES_QUEUE", "local://?lease=0", "lease='0'"),
        ("GAESERVICES_QUEUE", "local://?tombstone=-1", "tombstone='-1'"),
        ("GAESERVICES_QUEUE", "local://?max_payload=big", "max_payload='big'"),
        ("GAESERVICES_QUEUE", "immediate://?max_payload=big", "max_payload='big'"),
        ("GAESERVICES_CACHE", "memory://?max_bytes=lots", "max_bytes='lots'"),
        ("GAESERVICES_CACHE", "memory://?default_timeout=soon", "default_timeout='soon'"),
        ("GAESERVICES_CACHE", "memcache://h:1?max_pool_size=x", "max_pool_size='x'"),
        ("GAESERVICES_CACHE", "memcache://h:1?timeout=nan", "timeout='nan'"),
    ],
)
def test_option_values_are_checked_at_construction(tmp_path, variable, value, fragment):
    with pytest.raises(ConfigurationError) as info:
        Services(environ={variable: value}, data_dir=str(tmp_path))
    message = str(info.value)
    assert variable in message and fragment in message and "expected" in message


@pytest.mark.parametrize(
    "variable, value, fragment",
    [
        ("GAESERVICES_CACHE", "memcache://[::1:11211", "Invalid IPv6 URL"),
        ("GAESERVICES_STORE", "postgresql://u:hunter2@[::1/db", "Invalid IPv6 URL"),
        ("GAESERVICES_CACHE", "memcache://::1", "brackets"),
        ("GAESERVICES_STORE", "sqlite:///:memory:", ":memory:"),
        ("GAESERVICES_STORE", "sqlite:///data#1/store.db", "%23"),
        ("GAESERVICES_STORE", "postgresql://u:hunter2#x@h/db", "%23"),
    ],
)
def test_malformed_hosts_and_paths_fail_at_construction(tmp_path, variable, value, fragment):
    with pytest.raises(ConfigurationError) as info:
        Services(environ={variable: value}, data_dir=str(tmp_path))
    message = str(info.value)
    assert variable in message and fragment in message
    assert "hunter2" not in message


def test_ipv6_hosts_and_encoded_passwords():
    url = BackendURL("postgresql://me:p%40ss%3Aw%2Frd@[::1]:5432/db")
    assert url.hosts == [("::1", 5432)]
    assert (url.username, url.password) == ("me", "p@ss:w/rd")
    assert "p%40ss" not in repr(url)
