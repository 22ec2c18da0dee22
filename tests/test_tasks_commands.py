"""The commands as a user runs them: the installed ``gaeservices`` script, from the
application's directory, with nothing on PYTHONPATH.

README's flow: ``gaeservices demo --disable-task-running`` leaves the demo's tasks in
the queue; ``gaeservices tasks run --all`` run from the same directory runs them,
and so does ``gaeservices worker --drain``. An application's own module is found
because the worker puts the current directory on the import path (or
``--pythonpath``'s directories), as gunicorn and celery do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import pytest

SCRIPT = os.path.join(os.path.dirname(sys.executable), "gaeservices")
KEY = "k-signing-key-for-the-test-suite"


def clean_env(**extra):
    """The user's environment: no PYTHONPATH, none of our variables unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def command(*argv, cwd, env, timeout=120):
    return subprocess.run([SCRIPT, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


APP = '''
    """An application's own tasks, in its own directory."""
    import os

    def write(path, text):
        with open(path, "a") as f:
            f.write(text + "\\n")

    def broken(path):
        write(path, "broken ran")
        raise ValueError("a bug in the application")
'''

ENQUEUE = '''
    import os, sys
    from gaeservices import defer
    from gaeservices.tasks import RetryOptions
    import myapp

    out = os.path.abspath("out.txt")
    for i in range(3):
        defer(myapp.write, out, f"line {i}")
    if "--broken" in sys.argv:
        defer(myapp.broken, out, _name="broken", _retry_options=RetryOptions(task_retry_limit=0))
'''


@pytest.fixture
def app_dir(tmp_path):
    folder = tmp_path / "myproject"
    folder.mkdir()
    (folder / "myapp.py").write_text(textwrap.dedent(APP))
    (folder / "enqueue.py").write_text(textwrap.dedent(ENQUEUE))
    return folder


def enqueue(app_dir, env, *args):
    done = subprocess.run(
        [sys.executable, "enqueue.py", *args], cwd=str(app_dir), env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def out_lines(app_dir):
    path = app_dir / "out.txt"
    return sorted(path.read_text().splitlines()) if path.exists() else []


def test_the_worker_imports_the_application_from_its_directory(app_dir):
    env = clean_env(GAESERVICES_SECRET_KEY=KEY)
    enqueue(app_dir, env)
    done = command("worker", "--drain", cwd=str(app_dir), env=env)
    assert done.returncode == 0, done.stderr
    assert "ModuleNotFoundError" not in done.stderr
    assert out_lines(app_dir) == ["line 0", "line 1", "line 2"]
    listing = command("tasks", "list", "--state", "done", cwd=str(app_dir), env=env)
    assert listing.stdout.count("\tdone\t") == 3, listing.stdout


def test_pythonpath_names_the_application_from_elsewhere(app_dir, tmp_path):
    env = clean_env(GAESERVICES_SECRET_KEY=KEY, GAESERVICES_DATA_DIR=str(app_dir / ".gaeservices"))
    enqueue(app_dir, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = command("worker", "--drain", "--pythonpath", str(app_dir), cwd=str(elsewhere), env=env)
    assert done.returncode == 0, done.stderr
    assert out_lines(app_dir) == ["line 0", "line 1", "line 2"]


def test_tasks_run_exits_non_zero_when_a_task_fails(app_dir):
    env = clean_env(GAESERVICES_SECRET_KEY=KEY)
    enqueue(app_dir, env, "--broken")
    done = command("tasks", "run", "--all", cwd=str(app_dir), env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "broken\tretry\tValueError: a bug in the application" in done.stdout
    assert done.stdout.count("\tsuccess") == 3
    assert out_lines(app_dir) == ["broken ran", "line 0", "line 1", "line 2"]


def test_the_readme_flow_demo_then_tasks_run_then_worker(tmp_path):
    """`gaeservices demo --disable-task-running`, then `tasks run --all`, then `worker --drain`."""
    folder = tmp_path / "site"
    folder.mkdir()
    env = clean_env()  # the embedded defaults: key and queue under ./.gaeservices
    demo = subprocess.Popen(
        [SCRIPT, "demo", "--port", "0", "--disable-task-running"], cwd=str(folder), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = ""
        while not base:
            line = demo.stdout.readline()
            assert line, demo.stderr.read()
            if line.startswith("gaeservices demo on "):
                base = line.split()[3].rstrip("/")

        def submit(text):
            data = urllib.parse.urlencode({"text": text}).encode()
            request = urllib.request.Request(base + "/tasks/", data=data, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200  # after the redirect

        def page():
            with urllib.request.urlopen(base + "/tasks/", timeout=30) as response:
                return response.read().decode()

        submit("one two two three three three")
        time.sleep(0.3)
        assert "6 words" not in page()  # nothing runs tasks: they wait in the queue
        done = command("tasks", "run", "--all", cwd=str(folder), env=env)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "\tsuccess" in done.stdout
        assert "6 words" in page()

        submit("four words right here")
        time.sleep(0.3)
        assert "4 words" not in page()
        done = command("worker", "--drain", cwd=str(folder), env=env)
        assert done.returncode == 0, done.stderr
        assert "4 words" in page()
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
