"""Deferred mail on celery://, sent by real Celery workers (RabbitMQ and Redis) to a real
SMTP server: the same guarantees as on the local queue, through defer's public options."""

from __future__ import annotations

import email
import time
import uuid
from email import policy

import pytest
from celery_fixtures import SECRET_KEY, Broker, CeleryWorker, wait_for, worker_env
from mail_fixtures import RecordingHandler

from gaeservices import Services, send_mail
from gaeservices.mail import delivery_status
from gaeservices.mail.devserver import SMTPServerThread
from gaeservices.tasks import RetryOptions

FAST = RetryOptions(min_backoff_seconds=0.2, max_backoff_seconds=0.5, max_doublings=2)


class Setup:
    def __init__(self, services, handler, server, worker):
        self.services = services
        self.handler = handler
        self.server = server
        self.worker = worker


@pytest.fixture(scope="module", params=["amqp", "redis"])
def mail_env(request, tmp_path_factory):
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        from conftest import unavailable

        unavailable("aiosmtpd", "pip install 'gaeservices[mail]'")
    broker = Broker(request.param)
    broker.queues |= {"outgoing"}
    folder = tmp_path_factory.mktemp(f"mail-celery-{request.param}")
    store_url = f"sqlite:///{folder}/store.sqlite3"
    handler = RecordingHandler()
    server = SMTPServerThread(handler).start()
    url = broker.url()
    env = worker_env(url, store_url, str(folder / "worker-data"), GAESERVICES_MAIL=f"{server.url}?timeout=2",
                     EMAIL_QUEUE_NAME="outgoing")
    worker = CeleryWorker(env, [broker.prefix + "outgoing"], str(folder / "worker.log"))
    services = Services(secret_key=SECRET_KEY, data_dir=str(folder / "data"), store=store_url, queue=url,
                        mail=server.url, email_queue_name="outgoing", environ={})
    worker.start()
    yield Setup(services, handler, server, worker)
    worker.stop()
    services.close()
    server.stop()
    broker.cleanup()


def ids(handler):
    return [str(email.message_from_bytes(r.raw, policy=policy.default)["Message-ID"]) for r in handler.received]


def test_the_server_down_then_started_every_mail_arrives_once(mail_env):
    mail_env.handler.received.clear()
    mail_env.server.stop()
    tag = uuid.uuid4().hex[:8]
    sent = [
        send_mail("s@example.com", ["a@example.com"], f"{tag} {i}", "b", services=mail_env.services,
                  retry_options=FAST)
        for i in range(10)
    ]
    try:
        wait_for(lambda: mail_env.worker.log().count("not sent yet") >= 10, 60, "retries while the server is down")
    finally:
        mail_env.server.start()
    wait_for(lambda: len(mail_env.handler.received) >= 10, 60, "every mail to arrive")
    wait_for(lambda: all(delivery_status(i, services=mail_env.services) is not None for i in sent), 30,
             "every delivery to be recorded")
    assert sorted(ids(mail_env.handler)) == sorted(sent)  # each once
    assert all(delivery_status(i, services=mail_env.services).state == "sent" for i in sent)


def test_a_5xx_answer_is_recorded_and_not_retried(mail_env):
    mail_env.handler.received.clear()
    mail_env.handler.data_answer = "554 5.7.1 refused by policy"
    attempts = []
    mail_env.handler.on_data = lambda envelope: attempts.append(1)
    try:
        message_id = send_mail("s@example.com", "a@example.com", "refused", "b", services=mail_env.services,
                               retry_options=FAST)
        status = wait_for(lambda: delivery_status(message_id, services=mail_env.services), 60, "the refusal")
        time.sleep(1.5)  # retries would have come by now (backoff 0.2-0.5 s)
    finally:
        mail_env.handler.data_answer = None
        mail_env.handler.on_data = None
    assert attempts == [1]
    assert status.state == "failed"
    assert status.refused == {"a@example.com": "554 5.7.1 refused by policy"}
    mail_env.worker.wait_log("554 5.7.1 refused by policy")
    assert mail_env.handler.received == []
