"""Deferred sending through EMAIL_QUEUE_NAME, run by real workers against a real SMTP server.

The server goes down and comes back, answers 4xx and 5xx, and workers are
killed with SIGKILL at the worst moments: every mail arrives, and once the
server's acceptance is recorded, never twice.
"""

from __future__ import annotations

import email
import io
import os
import signal
import subprocess
import sys
import time
from email import policy

import pytest
from mail_fixtures import RecordingHandler

from gaeservices import Services, send_mail, set_services
from gaeservices.mail import delivery_status
from gaeservices.mail.devserver import SMTPServerThread
from gaeservices.tasks import admin
from gaeservices.tasks.api import RetryOptions
from gaeservices.tasks.worker import Dispatcher

pytest_plugins = ["mail_fixtures"]

KEY = "k-signing-key-for-the-test-suite"
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
FAST = RetryOptions(min_backoff_seconds=0.05, max_backoff_seconds=0.3, max_doublings=3)


@pytest.fixture
def pg_url(postgres_url):
    """postgres_url, whose pooled connections are closed after the test (engines are
    shared per URL for the process's life, and each test has a schema of its own)."""
    from gaeservices.config import BackendURL
    from gaeservices.store.engine import dispose_engine

    yield postgres_url
    dispose_engine(BackendURL(postgres_url))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    return request.getfixturevalue("pg_url")


def make_services(tmp_path, store_url, mail, queue="local://"):
    return Services(
        secret_key=KEY, data_dir=str(tmp_path), environ={}, store=store_url, queue=queue, mail=mail,
        email_queue_name="outgoing",
    )


@pytest.fixture
def installed():
    """Install a Services as the process default (the task finds its backends there)."""
    previous = []

    def install(services):
        previous.append(set_services(services))
        return services

    yield install
    if previous:
        set_services(previous[0])


def wait_for(predicate, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def mail_tasks(services, state=None):
    return services.queue.tasks(queue=services.email_queue_name, state=state, limit=10_000)


def message_ids(handler):
    return [str(email.message_from_bytes(r.raw, policy=policy.default)["Message-ID"]) for r in handler.received]


# --- the queue ------------------------------------------------------------------------


def test_held_mail_waits_in_the_queue_and_runs_with_gaeservices_tasks(tmp_path, store_url, smtp_server, installed):
    services = installed(make_services(tmp_path, store_url, smtp_server.url))
    message_id = send_mail("s@example.com", "a@example.com", "held", "body", services=services)
    (task,) = mail_tasks(services)
    assert task.queue == "outgoing" and task.state == "pending"
    out = io.StringIO()
    admin.main(["list", "--queue", "outgoing"], services=services, out=out)
    assert task.name in out.getvalue()
    assert smtp_server.handler.received == []  # nothing runs it yet
    assert delivery_status(message_id, services=services) is None

    out = io.StringIO()
    assert admin.main(["run", "--all", "--queue", "outgoing"], services=services, out=out) == 0
    assert f"{task.name}\tsuccess" in out.getvalue()
    assert message_ids(smtp_server.handler) == [message_id]
    status = delivery_status(message_id, services=services)
    assert status.state == "sent" and status.sent["a@example.com"].startswith("250")
    services.close()


def test_a_worker_reuses_one_connection_for_many_mails(tmp_path, smtp_server, installed):
    services = installed(make_services(tmp_path, f"sqlite:///{tmp_path}/s.db", smtp_server.url))
    ids = [send_mail("s@example.com", f"r{i}@example.com", f"n{i}", "b", services=services) for i in range(30)]
    Dispatcher(services, drain=True).run()
    assert sorted(message_ids(smtp_server.handler)) == sorted(ids)
    assert services.mail.connections_opened == 1
    services.close()


def test_the_server_down_then_started_every_mail_arrives_exactly_once(tmp_path, store_url, installed):
    handler = RecordingHandler()
    server = SMTPServerThread(handler).start()
    server.stop()  # down: nothing listens on its port
    services = installed(make_services(tmp_path, store_url, f"{server.url}?timeout=2"))
    ids = [
        send_mail("s@example.com", ["a@example.com", "b@example.com"], f"n{i}", "b", services=services,
                  retry_options=FAST)
        for i in range(20)
    ]
    dispatcher = Dispatcher(services, threads=2, poll=0.05).start()
    try:
        wait_for(lambda: all(t.attempts >= 2 for t in mail_tasks(services)), what="retries while down")
        assert handler.received == []
        errors = {t.last_error.strip().splitlines()[-1] for t in mail_tasks(services) if t.last_error}
        assert any("cannot connect" in e and "Connection refused" in e for e in errors), errors
        server.start()  # back, on the same port
        wait_for(lambda: len(mail_tasks(services, "done")) == 20, what="every mail to be sent")
    finally:
        dispatcher.stop()
        server.stop()
    assert sorted(message_ids(handler)) == sorted(ids)  # each exactly once
    assert all(r.recipients == ["a@example.com", "b@example.com"] for r in handler.received)
    assert all(delivery_status(i, services=services).state == "sent" for i in ids)
    services.close()


def test_a_5xx_answer_is_a_recorded_permanent_failure(tmp_path, store_url, smtp_server, installed):
    services = installed(make_services(tmp_path, store_url, smtp_server.url))
    smtp_server.handler.data_answer = "554 5.7.1 Message refused: looks like spam"
    message_id = send_mail("s@example.com", "a@example.com", "spam?", "b", services=services, retry_options=FAST)
    Dispatcher(services, drain=True).run()
    (task,) = mail_tasks(services)
    assert (task.state, task.attempts) == ("failed", 1)  # not retried
    assert "554 5.7.1 Message refused: looks like spam" in task.last_error
    status = delivery_status(message_id, services=services)
    assert status.state == "failed"
    assert status.refused == {"a@example.com": "554 5.7.1 Message refused: looks like spam"}
    services.close()


def test_recipients_refused_deferred_and_accepted_each_get_their_due(tmp_path, smtp_server, installed):
    services = installed(make_services(tmp_path, f"sqlite:///{tmp_path}/s.db", smtp_server.url))
    handler = smtp_server.handler
    handler.refuse_rcpt = {"gone@example.com": "550 5.1.1 no such user", "full@example.com": "452 4.2.2 mailbox full"}
    message_id = send_mail(
        "s@example.com", ["ok@example.com", "gone@example.com", "full@example.com"], "s", "b",
        services=services, retry_options=FAST,
    )
    dispatcher = Dispatcher(services, poll=0.05).start()
    try:
        wait_for(lambda: mail_tasks(services)[0].attempts >= 3, what="the deferred recipient to be retried")
        handler.refuse_rcpt = {"gone@example.com": "550 5.1.1 no such user"}  # the mailbox has room again
        wait_for(lambda: mail_tasks(services)[0].state == "done", what="the last recipient")
    finally:
        dispatcher.stop()
    # ok@ got it once, full@ once (on a retry), gone@ never; no one twice
    assert [r.recipients for r in handler.received] == [["ok@example.com"], ["full@example.com"]]
    status = delivery_status(message_id, services=services)
    assert status.state == "partial"
    assert sorted(status.sent) == ["full@example.com", "ok@example.com"]
    assert status.refused == {"gone@example.com": "550 5.1.1 no such user"}
    services.close()


def test_a_task_run_again_after_acceptance_sends_nothing(tmp_path, smtp_server, installed):
    from sqlalchemy import text

    from gaeservices.tasks.context import TaskContext
    from gaeservices.tasks.endpoint import DeferredApp

    services = installed(make_services(tmp_path, f"sqlite:///{tmp_path}/s.db", smtp_server.url))
    message_id = send_mail("s@example.com", "a@example.com", "once", "b", services=services)
    (task,) = mail_tasks(services)
    with services.queue.engine.connect() as connection:  # the signed body, as queued
        body = connection.execute(text("SELECT body FROM gaeservices_tasks WHERE name = :n"), {"n": task.name}).scalar()
    Dispatcher(services, drain=True).run()
    assert services.queue.get(task.name).state == "done"
    # A queue may deliver a task twice (App Engine and Celery say so): run the same
    # signed body again, as a redelivery would.
    result = DeferredApp(services).execute(body, TaskContext(task.name, "outgoing", 2))
    assert result.outcome == "success"
    assert message_ids(smtp_server.handler) == [message_id]
    services.close()


def test_immediate_queue_sends_inside_send_mail(tmp_path, smtp_server, installed):
    services = installed(make_services(tmp_path, f"sqlite:///{tmp_path}/s.db", smtp_server.url, queue="immediate://"))
    message_id = send_mail("s@example.com", "a@example.com", "now", "b", services=services)
    assert message_ids(smtp_server.handler) == [message_id]
    services.close()


def test_deferred_through_app_engine_task_queue_and_mail_api(testbed, tmp_path, installed):
    from test_tasks_appengine import run_all

    services = installed(Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, store="datastore://",
                                  queue="appengine://", mail="appengine://"))
    message_id = send_mail("s@example.com", ["a@example.com"], "via App Engine", "b", bcc=["h@example.com"],
                           services=services)
    assert testbed.get_stub("mail").get_sent_messages() == []  # queued, not sent
    assert run_all(testbed, services) == [200]
    (sent,) = testbed.get_stub("mail").get_sent_messages()
    assert sent.subject == "via App Engine" and sent.bcc == "h@example.com"
    assert delivery_status(message_id, services=services).state == "sent"  # recorded in Datastore
    assert run_all(testbed, services) == [200]  # a redelivery sends nothing more
    assert len(testbed.get_stub("mail").get_sent_messages()) == 1
    services.close()


# --- workers killed with SIGKILL ------------------------------------------------------


def _worker(env):
    return subprocess.Popen(
        [sys.executable, "-m", "gaeservices", "worker", "--poll", "0.1", "--queues", "outgoing"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _env(tmp_path, store_url, mail_url):
    return dict(
        os.environ,
        GAESERVICES_STORE=store_url,
        GAESERVICES_QUEUE="local://?lease=2",
        GAESERVICES_MAIL=mail_url,
        GAESERVICES_SECRET_KEY=KEY,
        GAESERVICES_DATA_DIR=str(tmp_path),
        EMAIL_QUEUE_NAME="outgoing",
        PYTHONPATH=os.pathsep.join([TESTS_DIR, ROOT]),
    )


def _stop(process):
    if process.poll() is None:
        process.kill()
    process.wait(10)


def test_a_worker_killed_after_the_server_accepted_does_not_send_again(tmp_path, pg_url, smtp_server):
    """The worker dies after the server said 250 and the delivery was recorded, before
    the queue heard of it: the task runs again, and sends nothing.

    To kill at exactly that point, the test holds a lock on the task's row from the
    moment the server receives the message: the worker records the delivery (in the
    store's table), then blocks acknowledging the task, and is killed there.
    """
    import psycopg

    services = make_services(tmp_path, pg_url, smtp_server.url)
    message_id = send_mail("s@example.com", "a@example.com", "exactly once", "b", services=services)
    (task,) = mail_tasks(services)
    from conftest import libpq_url

    lock = psycopg.connect(libpq_url(pg_url))  # libpq takes the URL, search_path option included

    def hold_the_task(envelope):
        lock.execute("SELECT name FROM gaeservices_tasks WHERE name = %s FOR UPDATE", (task.name,))
        return None  # and answer 250

    smtp_server.handler.on_data = hold_the_task
    env = _env(tmp_path, pg_url, smtp_server.url)
    first = _worker(env)
    try:
        smtp_server.handler.wait_for(1)
        wait_for(lambda: delivery_status(message_id, services=services) is not None, what="the delivery record")
        time.sleep(0.5)  # the worker is now waiting on the row to acknowledge
        assert services.queue.get(task.name).state == "pending"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        _stop(first)
        lock.rollback()
        lock.close()
    smtp_server.handler.on_data = None
    time.sleep(0.5)  # the dead worker's acknowledgement, had it been committed, would show now
    assert (services.queue.get(task.name).state, services.queue.get(task.name).attempts) == ("pending", 1)
    second = _worker(env)
    try:
        wait_for(lambda: services.queue.get(task.name).state == "done", what="the task to run again and finish")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
        _stop(second)
    assert services.queue.get(task.name).attempts == 2  # it did run again...
    assert message_ids(smtp_server.handler) == [message_id]  # ...and sent nothing
    services.close()


def test_a_worker_killed_while_the_server_takes_the_message_sends_it_again(tmp_path, smtp_server):
    """The one window left: the worker dies after the server has the message, before it
    hears the server's 250 and records it. The mail is sent again -- at least once,
    never lost -- and docs/mail.md says so."""
    store_url = f"sqlite:///{tmp_path}/store.sqlite3"
    services = make_services(tmp_path, store_url, smtp_server.url)
    message_id = send_mail("s@example.com", "a@example.com", "window", "b", services=services)
    env = _env(tmp_path, store_url, smtp_server.url)
    workers = []

    def kill_the_sender(envelope):
        if len(workers) == 1:
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
        return None

    smtp_server.handler.on_data = kill_the_sender
    workers.append(_worker(env))
    try:
        smtp_server.handler.wait_for(1)
        workers.append(_worker(env))
        smtp_server.handler.wait_for(2)
        (task,) = mail_tasks(services)
        wait_for(lambda: services.queue.get(task.name).state == "done", what="the second run to finish")
    finally:
        for worker in workers:
            _stop(worker)
    assert message_ids(smtp_server.handler) == [message_id, message_id]
    assert delivery_status(message_id, services=services).state == "sent"
    services.close()


def test_a_record_written_meanwhile_is_merged_not_overwritten(tmp_path):
    from gaeservices.mail.api import RECORD_PREFIX, DeliveryStatus, _record

    services = make_services(tmp_path, f"sqlite:///{tmp_path}/s.db", "memory://")
    key = RECORD_PREFIX + "<m@example.com>"
    # another run of the same task recorded a@ after this run found no record
    _record(services.store, key, ["a@example.com", "b@example.com"], {"a@example.com": "250 ok"}, {}, fresh=True)
    _record(services.store, key, ["a@example.com", "b@example.com"], {"b@example.com": "250 ok"}, {}, fresh=True)
    status = DeliveryStatus.decode("<m@example.com>", services.store.get(key))
    assert sorted(status.sent) == ["a@example.com", "b@example.com"] and status.state == "sent"
    services.close()
