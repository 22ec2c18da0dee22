"""The demo's tasks page: a deferred word count, run by the page's dispatcher."""

from __future__ import annotations

import argparse
import io
import time

from gaeservices import Services


def request(app, method="GET", body=b""):
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": "/", "SCRIPT_NAME": "/tasks", "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    status = []
    text = b"".join(app(environ, lambda s, h, e=None: status.append(s))).decode()
    return status[0], text


def test_the_demo_defers_and_shows_the_result(tmp_path):
    from gaeservices.demo import tasks as demo_tasks
    from gaeservices.config import set_services

    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    previous = set_services(services)  # the task finds the store through the default
    try:
        app = demo_tasks.make_app(services)
        parser = argparse.ArgumentParser()
        demo_tasks.add_arguments(parser)
        held = parser.parse_args(["--disable-task-running"])
        demo_tasks.start(services, held)
        assert request(app, "POST", b"text=one+two+two+three+three+three")[0].startswith("303")
        time.sleep(0.3)
        assert "queued" in request(app)[1]  # nothing runs tasks yet

        dispatcher = demo_tasks.start(services, parser.parse_args([]))
        deadline = time.time() + 10
        while "6 words" not in (text := request(app)[1]):
            assert time.time() < deadline, text
            time.sleep(0.05)
        assert "three (3)" in text
        dispatcher.stop()
    finally:
        set_services(previous)
        services.close()


def test_the_page_reads_every_tasks_state_in_one_query(tmp_path):
    """However many tasks the page lists, it asks the queue once, not once per task."""
    import sqlalchemy as sa

    from gaeservices.demo import tasks as demo_tasks

    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def statements_to_show(jobs):
        while request(app)[1].count("<span class='state s-queued'>") < jobs:
            assert request(app, "POST", b"text=a+b")[0].startswith("303")
        statements.clear()
        status, text = request(app)
        assert status.startswith("200") and text.count("<span class='state s-queued'>") == jobs
        return list(statements)

    engine = services.queue.engine
    try:
        app = demo_tasks.make_app(services)  # no dispatcher: the tasks stay queued
        sa.event.listen(engine, "before_cursor_execute", count)
        two, six = statements_to_show(2), statements_to_show(6)
        assert len(two) == len(six), six
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
        services.close()
