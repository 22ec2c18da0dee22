"""queue.yaml for the local queue: parsed as App Engine parses it, enforced across workers."""

from __future__ import annotations

import os

import pytest

from gaeservices.exceptions import ConfigurationError
from gaeservices.tasks.queueconfig import load_queue_yaml, parse_age, parse_queue_yaml, parse_rate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "appengine", "queue.yaml")


def test_the_example_reads_as_the_sdk_reads_it():
    """Our reading of the example queue.yaml agrees with the SDK's own parser."""
    from google.appengine.api import queueinfo

    with open(EXAMPLE) as f:
        theirs = queueinfo.LoadSingleQueue(f.read())
    ours = load_queue_yaml(EXAMPLE)
    for entry in theirs.queue:
        mine = ours.settings[entry.name]
        assert mine.rate == pytest.approx(queueinfo.ParseRate(entry.rate))
        assert mine.bucket_size == (int(entry.bucket_size) if entry.bucket_size else 5)
        assert mine.max_concurrent == entry.max_concurrent_requests
        retry = entry.retry_parameters
        if retry is None:
            assert mine.retry is None
            continue
        assert mine.retry.task_retry_limit == retry.task_retry_limit
        if retry.task_age_limit:
            assert mine.retry.task_age_limit == queueinfo.ParseTaskAgeLimit(retry.task_age_limit)
        for name in ("min_backoff_seconds", "max_backoff_seconds", "max_doublings"):
            if getattr(retry, name) is not None:
                assert getattr(mine.retry, name) == pytest.approx(float(getattr(retry, name)))


@pytest.mark.parametrize("text, per_second", [("5/s", 5), ("30/m", 0.5), ("3600/h", 1), ("86400/d", 1), ("0", 0), ("2.5/s", 2.5)])
def test_rates_as_the_sdk_parses_them(text, per_second):
    from google.appengine.api import queueinfo

    assert parse_rate(text) == pytest.approx(per_second)
    assert parse_rate(text) == pytest.approx(queueinfo.ParseRate(text))


@pytest.mark.parametrize("text", ["5", "5/x", "/s", "five/s", "-1/s", "5/s/s", ""])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_ages():
    assert [parse_age(t) for t in ("30s", "10m", "2h", "2d", "1.5h")] == [30, 600, 7200, 172800, 5400]
    with pytest.raises(ValueError):
        parse_age("2 days")


def test_default_exists_at_app_engines_rate_unless_declared():
    config = parse_queue_yaml({"queue": [{"name": "mail", "rate": "1/s"}]})
    assert config.settings["default"].rate == 5.0 and config.settings["default"].bucket_size == 5
    config.check_queue("mail")
    config.check_queue("default")
    with pytest.raises(ConfigurationError, match="'reports' is not declared"):
        config.check_queue("reports")


def test_pull_queues_hold_no_deferred_tasks():
    config = parse_queue_yaml({"queue": [{"name": "pulled", "mode": "pull"}]})
    with pytest.raises(ConfigurationError, match="pull queue"):
        config.check_queue("pulled")


@pytest.mark.parametrize(
    "document, message",
    [
        ({"queue": [{"name": "q"}]}, "needs a rate"),
        ({"queue": [{"name": "q", "rate": "1/s", "bucket_size": 0}]}, "bucket_size must be at least 1"),
        ({"queue": [{"name": "q", "rate": "1/s", "bucket_size": 2.5}]}, "whole number"),
        ({"queue": [{"name": "q", "rate": "1/s", "max_concurrent_requests": "many"}]}, "must be a number"),
        ({"queue": [{"name": "q", "rate": "1/s", "retry_parameters": {"task_retry_limit": -1}}]}, "at least 0"),
        ({"queue": [{"name": "q", "rate": "1/s", "retry_parameters": {"retries": 3}}]}, "unknown retry parameters"),
        ({"queue": [{"name": "q", "rate": "1/s", "speed": 3}]}, "unknown settings"),
        ({"queue": [{"name": "q_1", "rate": "1/s"}]}, "bad queue name"),
        ({"queue": [{"name": "q", "rate": "1/s"}, {"name": "q", "rate": "2/s"}]}, "declared twice"),
        ({"queue": "default"}, "a `queue:` list"),
    ],
)
def test_mistakes_name_the_file_and_the_queue(document, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_queue_yaml(document, "app/queue.yaml")
    assert str(caught.value).startswith("app/queue.yaml: ")


def test_a_file_that_is_not_yaml(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text("queue: [\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_queue_yaml(str(path))
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_queue_yaml(str(tmp_path / "missing.yaml"))


# --- enforced by the local queue, across worker processes -------------------------------

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import tasks_fixtures as fx  # noqa: E402

from gaeservices import Services, defer  # noqa: E402
from gaeservices.exceptions import InvalidTaskError  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
QUEUE_YAML = """
queue:
- name: default
  rate: 100/s
- name: slow
  rate: 5/s
  bucket_size: 2
- name: one-at-a-time
  rate: 100/s
  bucket_size: 100
  max_concurrent_requests: 1
- name: retried
  rate: 100/s
  retry_parameters:
    task_retry_limit: 1
    min_backoff_seconds: 0.05
- name: paused
  rate: 0
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def queue_yaml(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text(QUEUE_YAML)
    return str(path)


@pytest.fixture
def svc(tmp_path, store_url, queue_yaml):
    s = Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, store=store_url,
        queue=f"local://?queue_yaml={queue_yaml}",
    )
    yield s
    s.close()


def workers(tmp_path, store_url, queue_yaml, count, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    env.update(
        GAESERVICES_STORE=store_url, GAESERVICES_QUEUE=f"local://?queue_yaml={queue_yaml}",
        GAESERVICES_SECRET_KEY="k-signing-key-for-the-test-suite", GAESERVICES_DATA_DIR=str(tmp_path),
        PYTHONPATH=TESTS_DIR,
    )
    script = os.path.join(os.path.dirname(sys.executable), "gaeservices")
    return [
        subprocess.Popen([script, "worker", "--drain", "--poll", "0.05", *args], env=env, cwd=str(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]


def finish(processes, timeout=60):
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            raise
    return codes


def records(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path).read().splitlines():
        tag, start, end, pid = line.split()
        out.append((tag, float(start), float(end), pid))
    return out


def test_a_rate_holds_across_workers(svc, tmp_path, store_url, queue_yaml):
    evidence = str(tmp_path / "slow.txt")
    for i in range(8):
        defer(fx.timed, evidence, f"t{i}", _queue="slow", _services=svc)
    assert finish(workers(tmp_path, store_url, queue_yaml, 2, "--threads", "2")) == [0, 0]
    starts = sorted(start for _, start, _, _ in records(evidence))
    assert len(starts) == 8
    # The bucket (2) goes at once, then 5 a second: six more are claimed over at
    # least 1.2 s. Times are taken as tasks start, a little after their claim: a
    # worker's first task may start late (0.3 s allowed), which can only narrow
    # the spread, and squeeze one window by a task per worker (2 allowed).
    assert starts[-1] - starts[0] >= (8 - 2) / 5 - 0.3
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            window = starts[j] - first
            assert j - i + 1 <= 2 + 5 * window + 2, (i, j, window)


def test_max_concurrent_requests_holds_across_workers(svc, tmp_path, store_url, queue_yaml):
    evidence = str(tmp_path / "one.txt")
    for i in range(5):
        defer(fx.timed, evidence, f"t{i}", 0.2, _queue="one-at-a-time", _services=svc)
    assert finish(workers(tmp_path, store_url, queue_yaml, 2, "--threads", "2")) == [0, 0]
    runs = sorted((start, end) for _, start, end, _ in records(evidence))
    assert len(runs) == 5
    for (_, end), (start, _) in zip(runs, runs[1:]):
        assert start >= end - 0.01  # never two at once


def test_retry_parameters_of_the_queue_apply_to_tasks_without_their_own(svc, tmp_path):
    from gaeservices.tasks.worker import Dispatcher

    evidence = str(tmp_path / "retried.txt")
    queue_default = defer(fx.fail_always, evidence, "queue", _queue="retried", _services=svc)
    own = defer(fx.fail_always, evidence, "own", _queue="retried", _retry_options={"task_retry_limit": 0}, _services=svc)
    deadline = time.time() + 20
    while time.time() < deadline and {svc.queue.get(h.name).state for h in (queue_default, own)} != {"failed"}:
        Dispatcher(svc, drain=True, poll=0.05).run()
        time.sleep(0.05)
    tags = [line.split()[0] for line in open(evidence).read().splitlines()]
    assert tags.count("queue") == 2  # queue.yaml: task_retry_limit 1
    assert tags.count("own") == 1  # its own _retry_options win


def test_a_queue_not_in_the_file_is_refused_when_deferred(svc):
    with pytest.raises(InvalidTaskError, match="'reports' is not declared"):
        defer(fx.noop, _queue="reports", _services=svc)


def test_a_paused_queue_holds_its_tasks_and_drain_still_ends(svc, tmp_path, store_url, queue_yaml):
    evidence = str(tmp_path / "paused.txt")
    held = defer(fx.note, evidence, "held", _queue="paused", _services=svc)
    defer(fx.note, evidence, "ran", _services=svc)
    assert finish(workers(tmp_path, store_url, queue_yaml, 1), timeout=60) == [0]
    assert open(evidence).read().splitlines() == ["ran"]
    assert svc.queue.get(held.name).state == "pending"


def test_the_worker_takes_queue_yaml_from_its_command_line(tmp_path, store_url, queue_yaml):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, store=store_url)
    evidence = str(tmp_path / "cli.txt")
    for i in range(5):
        defer(fx.timed, evidence, f"t{i}", _queue="slow", _services=svc)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    env.update(GAESERVICES_STORE=store_url, GAESERVICES_SECRET_KEY="k-signing-key-for-the-test-suite",
               GAESERVICES_DATA_DIR=str(tmp_path), PYTHONPATH=TESTS_DIR)
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "gaeservices"), "worker", "--drain", "--poll", "0.05",
         "--queue-yaml", queue_yaml], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "limits from" in done.stderr
    starts = sorted(start for _, start, _, _ in records(evidence))
    assert len(starts) == 5 and starts[-1] - starts[0] >= (5 - 2) / 5 - 0.3  # unlimited: all at once
    svc.close()


# --- the worker's progress ----------------------------------------------------------


def _progress_env(tmp_path, store_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    env.update(GAESERVICES_STORE=store_url, GAESERVICES_SECRET_KEY="k-signing-key-for-the-test-suite",
               GAESERVICES_DATA_DIR=str(tmp_path), PYTHONPATH=TESTS_DIR)
    return env


def _queue_some(tmp_path, store_url):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, store=store_url)
    evidence = str(tmp_path / "progress.txt")
    for i in range(6):
        defer(fx.timed, evidence, f"t{i}", 0.1, _services=svc)
    defer(fx.fail_for_good, evidence, "bad", _services=svc)
    svc.close()


def test_on_a_terminal_the_worker_shows_a_status_line(tmp_path, store_url):
    import pty

    _queue_some(tmp_path, store_url)
    controller, terminal = pty.openpty()
    script = os.path.join(os.path.dirname(sys.executable), "gaeservices")
    process = subprocess.Popen(
        [script, "worker", "--drain", "--poll", "0.05", "--progress", "0.1", "--log-level", "WARNING"],
        env=_progress_env(tmp_path, store_url), cwd=str(tmp_path), stdin=terminal, stdout=terminal, stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the worker closed its end
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(60) == 0
    os.close(controller)
    text = output.decode("utf-8", "replace")
    assert "\r\x1b[K" in text  # redrawn in place
    assert "\r\x1b[Kdone 6  failed 1  queued 0" in text  # the final line
    assert "tasks/s" in text


def test_elsewhere_the_worker_logs_its_progress(tmp_path, store_url):
    _queue_some(tmp_path, store_url)
    script = os.path.join(os.path.dirname(sys.executable), "gaeservices")
    done = subprocess.run(
        [script, "worker", "--drain", "--poll", "0.05", "--progress", "0.1"],
        env=_progress_env(tmp_path, store_url), cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "progress: " in line]
    assert lines and "progress: done 6  failed 1  queued 0  " in lines[-1], done.stderr
