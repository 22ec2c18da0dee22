"""The ``gaeservices`` command: what an operator sees when something is wrong.

A taken port, a bad setting or a missing extra is one line on stderr that says
what to do, never a traceback, and nothing is started before it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from gaeservices.cli import COMMANDS, usage


def run(*args: str, cwd, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gaeservices", *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_demo_on_a_taken_port_says_so_in_one_line_and_starts_nothing(tmp_path, taken_port):
    done = run("demo", "--port", str(taken_port), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"gaeservices demo: cannot listen on 127.0.0.1:{taken_port}: "
        "the address is already in use; choose another port with --port\n"
    )
    assert done.stdout == ""
    assert os.listdir(tmp_path) == []  # no data dir, no key, no database: nothing started


def test_a_host_that_does_not_resolve_is_one_line(tmp_path):
    done = run("demo", "--host", "no-such-host.invalid", "--port", "0", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("gaeservices demo: cannot listen on no-such-host.invalid:0: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, env, fragment",
    [
        (["demo", "--port", "0"], {"GAESERVICES_CACHE": "memcache://cache1"}, "host 'cache1' has no port"),
        (["tasks", "list"], {"GAESERVICES_QUEUE": "rabbit://"}, "unknown backend 'rabbit'"),
        (["worker", "--drain"], {"GAESERVICES_SECRET_KEY": "short"}, "key 1 of 1 is 5 bytes"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path, args, env, fragment):
    done = run(*args, cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith(f"gaeservices {args[0]}: ")
    assert fragment in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_demo_serves_on_a_free_port_and_stops_on_sigterm(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gaeservices", "demo", "--port", "0"],
        cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("gaeservices demo on http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split()[3]
        with urllib.request.urlopen(url + "counter/", timeout=30) as response:
            assert response.status == 200 and b"id='hits'>1<" in response.read()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert status == 0


def test_usage_lists_every_command(tmp_path):
    done = run("--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == usage()
    for name in COMMANDS:
        assert f"  {name} " in done.stdout


def test_an_unknown_command_is_refused(tmp_path):
    done = run("nonsense", cwd=tmp_path)
    assert done.returncode == 2 and "unknown command 'nonsense'" in done.stderr



@pytest.mark.parametrize("tasks", [3, 400])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, tasks):
    """``gaeservices tasks list | head``: the reader has gone, before the first line
    (a short listing: written at exit) or in the middle of it (a long one)."""
    import tasks_fixtures as fx

    from gaeservices import Services, defer

    key = "k-signing-key-for-the-test-suite"
    services = Services(secret_key=key, data_dir=str(tmp_path / "data"), environ={})
    try:
        for i in range(tasks):
            defer(fx.record, i, _countdown=3600, _services=services)
    finally:
        services.close()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    environ.update(GAESERVICES_DATA_DIR=str(tmp_path / "data"), GAESERVICES_SECRET_KEY=key)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: no race
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gaeservices", "tasks", "list", "--limit", str(tasks)],
            cwd=tmp_path, env=environ, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE  # as a tool the signal ended
