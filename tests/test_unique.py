"""Unique claims on SQLite, PostgreSQL and the Datastore stub: exactly one winner."""

from __future__ import annotations

import threading
import time

import pytest

from gaeservices import claim, release
from gaeservices.config import Services
from gaeservices.unique import owner_of


@pytest.fixture(params=["sqlite", "postgresql", "datastore"])
def services(request, tmp_path):
    if request.param == "datastore":
        request.getfixturevalue("testbed")
        store = "datastore://"
    elif request.param == "sqlite":
        store = request.getfixturevalue("sqlite_url")
    else:
        store = request.getfixturevalue("postgres_url")
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), store=store, cache="memory://", environ={})
    yield svc
    svc.close()
    if request.param == "postgresql":
        from gaeservices.store.engine import dispose_engine

        dispose_engine(svc.backend_url("store"))


def test_claim_and_release(services):
    assert claim("username", "alice", "user-1", services=services)
    assert claim("username", "alice", "user-1", services=services)  # already ours
    assert not claim("username", "alice", "user-2", services=services)
    assert owner_of("username", "alice", services=services) == b"user-1"
    assert not release("username", "alice", "user-2", services=services)  # not theirs to release
    assert claim("username", "alice", "user-1", services=services)
    assert release("username", "alice", "user-1", services=services)
    assert owner_of("username", "alice", services=services) is None
    assert not release("username", "alice", "user-1", services=services)
    assert claim("username", "alice", "user-2", services=services)


def test_namespaces_are_separate(services):
    assert claim("username", "bob", 1, services=services)
    assert claim("email", "bob", 2, services=services)
    assert not claim("username", "bob", 2, services=services)
    assert owner_of("email", "bob", services=services) == b"2"


def test_owner_forms(services):
    assert claim("n", "int-owner", 42, services=services)
    assert claim("n", "int-owner", "42", services=services)  # the same owner, spelled as text
    assert claim("n", "bytes-owner", b"\x00\xff", services=services)
    with pytest.raises(TypeError):
        claim("n", "v", 1.5, services=services)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        claim("n", b"v", 1, services=services)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        claim("a:b", "v", 1, services=services)


def test_values_compared_exactly(services):
    assert claim("username", "Alice", 1, services=services)
    assert claim("username", "alice", 2, services=services)


def test_long_and_unicode_values(services):
    long_value = "ü" * 5000
    assert claim("slug", long_value, 1, services=services)
    assert not claim("slug", long_value, 2, services=services)
    assert claim("slug", long_value[:-1] + "x", 2, services=services)


def past(moment):
    """Wait until the clock is past ``moment`` (a loaded machine may be later, never earlier)."""
    while time.time() <= moment:
        time.sleep(max(0.005, moment - time.time()))


def test_a_lapsed_claim_can_be_taken(services):
    before = time.time()
    assert claim("reservation", "seat-1", "a", timeout=0.3, services=services)
    claimed = time.time()
    taken = claim("reservation", "seat-1", "b", services=services)
    if time.time() < before + 0.3:  # asked while a's claim held
        assert not taken
    if taken:  # a loaded machine's late ask found the claim lapsed: b has it
        assert owner_of("reservation", "seat-1", services=services) == b"b"
        return
    past(claimed + 0.3)
    assert claim("reservation", "seat-1", "b", services=services)
    assert owner_of("reservation", "seat-1", services=services) == b"b"


def test_claiming_again_renews_a_lease(services):
    assert claim("reservation", "seat-2", "a", timeout=0.5, services=services)
    first_ends = time.time() + 0.5  # at the latest
    time.sleep(0.3)
    renewing = time.time()
    assert claim("reservation", "seat-2", "a", timeout=0.5, services=services)  # a's, renewed
    past(first_ends)
    taken = claim("reservation", "seat-2", "b", services=services)
    if time.time() < renewing + 0.5:  # asked past the first lease, within the renewed one
        assert not taken
    assert owner_of("reservation", "seat-2", services=services) == (b"b" if taken else b"a")


def _race(services, n, value):
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def contender(i):
        barrier.wait()
        try:
            results[i] = claim("username", value, f"user-{i}", services=services)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("round_", range(5))
def test_race_for_one_value_has_exactly_one_winner(services, round_):
    results = _race(services, 16, f"popular-{round_}")
    assert results.count(True) == 1, results
    winner = results.index(True)
    assert owner_of("username", f"popular-{round_}", services=services) == f"user-{winner}".encode()


def test_race_after_release_has_exactly_one_winner(services):
    assert claim("username", "recycled", "old-owner", services=services)
    assert release("username", "recycled", "old-owner", services=services)
    results = _race(services, 16, "recycled")
    assert results.count(True) == 1, results


def test_race_for_a_lapsed_claim_has_exactly_one_winner(services):
    assert claim("username", "lapsed", "old-owner", timeout=0, services=services)
    results = _race(services, 16, "lapsed")
    assert results.count(True) == 1, results


def test_public_names():
    import gaeservices

    assert gaeservices.claim is claim
    assert gaeservices.release is release
