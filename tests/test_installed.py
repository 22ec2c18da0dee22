"""Every documented entry point works after ``pip install``, outside the repository.

The sdist and the wheel are built from the repository's files (``python -m build``:
the wheel is built from the sdist, so both must be complete), the wheel is
installed into fresh virtualenvs in a temporary directory -- one with the extras
the documented commands need, one with the core alone -- and every command and
import is run from a directory outside the repository, with no ``PYTHONPATH``.

What is checked is collected from README.md and docs/*.md, so a document that
shows a new command, option, import or dotted name is covered without editing
this file:

- ``gaeservices ...`` lines in code blocks and inline code: the command (and
  sub-command) exists and its ``--help`` lists every option shown;
- ``import`` statements of Python code blocks: they run;
- dotted names (``gaeservices.wsgi.deferred:application``,
  ``gaeservices.tasks.current_task``): they resolve to a module or an object;
- ``gaeservices[extra]``, in the docs and in the package's own messages: the
  extra exists.

To cover a new command that needs an extra, add the extra to ``EXTRAS``; to run a
command for real (not only its ``--help``), add it to ``RUNS``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import unavailable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Extras installed with the wheel: what the documented commands need.
EXTRAS = ["demo", "django", "celery"]

# Other programs the docs show running our modules (`celery -A gaeservices.tasks.celery
# worker`): the environment each needs to load them, as the docs say to set it.
PROGRAMS = {
    "celery": {"GAESERVICES_QUEUE": "celery://redis://127.0.0.1:6379/15"},
}

# Commands run for real in a fresh directory: (arguments, exit status, text in stdout).
RUNS = [
    (["tasks", "list"], 0, "# empty"),
    (["tasks", "purge"], 0, "purged 0 tombstone(s)"),
    (["worker", "--drain"], 0, ""),
]

# Server commands: each takes --port, and a taken port is one line, not a traceback.
SERVERS = [["demo"], ["smtpd"]]

# Dotted names in the docs that are not Python objects, and what they are.
NOT_OBJECTS = {
    "gaeservices.session": "the WSGI environ key that holds the session",
    "gaeservices.run": "the name of the Celery task that carries deferred calls",
    "gaeservices.is_admin": "the WSGI environ key of the task admin page's admin check",
    "gaeservices.filetransfers.upload": "the signing salt of private upload tokens",
    "gaeservices.tasks.admin.csrf": "the signing salt of the task admin page's CSRF tokens",
    "gaeservices.tasks.admin.note": "the signing salt of the task admin page's notes",
}


# --- what the docs show ------------------------------------------------------------

_FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+)`")
_DOTTED = re.compile(r"(?<![\w./-])gaeservices(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?")
_EXTRA = re.compile(r"gaeservices\[([\w,-]+)\]")


def _doc_texts() -> dict[str, str]:
    return {str(path.relative_to(REPO)): path.read_text(encoding="utf-8") for path in DOCS}


def documented_commands() -> dict[tuple[str, ...], tuple[set[str], set[str]]]:
    """For each command the docs show (the words after ``gaeservices``): the options
    shown with it, and the documents that show it.

    ``gaeservices tasks list | run NAME... | purge`` is three commands: an
    alternative that starts with a word replaces the last word of the first.
    """
    found: dict[tuple[str, ...], tuple[set[str], set[str]]] = {}
    for name, text in _doc_texts().items():
        lines = []
        for language, body in _FENCE.findall(text):
            if language not in ("python", "py", "nginx", "apache", "yaml"):
                lines += body.splitlines()
        lines += _INLINE.findall(_FENCE.sub("", text))
        for line in lines:
            line = line.strip().removeprefix("$ ")
            if not line.startswith("gaeservices "):
                continue
            line = line.split("  #")[0].split(" # ")[0]
            path: list[str] = []
            for position, segment in enumerate(line[len("gaeservices "):].split(" | ")):
                tokens = segment.split()
                words = []
                for token in tokens:
                    if not re.fullmatch(r"[a-z][a-z0-9-]*", token):
                        break
                    words.append(token)
                if position == 0:
                    path = words
                elif words:
                    path = path[: max(1, len(path) - len(words))] + words
                options, where = found.setdefault(tuple(path), (set(), set()))
                options.update(m for token in tokens for m in re.findall(r"--[a-z][a-z0-9-]*", token))
                where.add(name)
    return found


def documented_programs() -> dict[tuple[str, ...], tuple[set[str], set[str]]]:
    """For each line of the docs' code blocks that runs one of PROGRAMS on a module
    (``celery -A gaeservices.tasks.celery worker -Q default``): the program and its
    arguments up to the options, the options shown, and the documents."""
    found: dict[tuple[str, ...], tuple[set[str], set[str]]] = {}
    for name, text in _doc_texts().items():
        for language, body in _FENCE.findall(text):
            if language in ("python", "py"):
                continue
            for line in body.splitlines():
                tokens = line.split("#")[0].split()
                if not tokens or tokens[0] not in PROGRAMS or "gaeservices" not in line:
                    continue
                command: list[str] = []
                for position, token in enumerate(tokens):
                    # `-A module` names what to load; any other option ends the command
                    if token.startswith("-") and token != "-A":
                        break
                    command.append(token)
                options, where = found.setdefault(tuple(command), (set(), set()))
                options.update(t.split("=")[0] for t in tokens[len(command):] if t.startswith("-"))
                where.add(name)
    return found


def documented_imports() -> list[tuple[str, str]]:
    """(where, statement) for each import in the docs' Python code blocks."""
    found = []
    for name, text in _doc_texts().items():
        for language, body in _FENCE.findall(text):
            if language not in ("python", "py"):
                continue
            for node in ast.walk(ast.parse(body)):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.append((name, ast.unparse(node)))
    return found


def documented_names() -> list[tuple[str, str]]:
    """(where, dotted name) for each ``gaeservices.x.y[:attr]`` the docs mention."""
    found = set()
    for name, text in _doc_texts().items():
        for match in _DOTTED.findall(text):
            found.add((name, match.rstrip(".")))
    return sorted(found)


def named_extras() -> set[str]:
    """Every extra named as ``gaeservices[extra]`` in the docs and the package's messages."""
    texts = list(_doc_texts().values())
    texts += [p.read_text(encoding="utf-8") for p in (REPO / "gaeservices").rglob("*.py")]
    return {extra for text in texts for group in _EXTRA.findall(text) for extra in group.split(",")}


# --- the build and the virtualenvs ------------------------------------------------------


def _copy_sources(destination: Path) -> None:
    """The repository's files as a clone has them (tracked, and new but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = REPO / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and the wheel, built from a copy of the repository's files."""
    try:
        import build  # noqa: F401
    except ImportError:
        unavailable("the build package", "pip install 'gaeservices[dev]'")
    root = tmp_path_factory.mktemp("dist")
    _copy_sources(root / "src")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(root / "out"), str(root / "src")],
        check=True, capture_output=True,
    )
    (wheel,) = (root / "out").glob("*.whl")
    (sdist,) = (root / "out").glob("*.tar.gz")
    return wheel, sdist


def _venv(root: Path, requirement: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
    done = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", requirement],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    """A virtualenv holding the wheel and the extras in EXTRAS."""
    wheel, _ = dist
    root = _venv(tmp_path_factory.mktemp("venv") / "env", f"{wheel}[{','.join(EXTRAS)}]")
    check = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout  # the dependencies resolved consistently
    return root


@pytest.fixture(scope="module")
def core_venv(dist, tmp_path_factory):
    """A virtualenv holding the wheel alone: `pip install gaeservices`."""
    wheel, _ = dist
    return _venv(tmp_path_factory.mktemp("core") / "env", str(wheel))


def _environ(venv: Path) -> dict[str, str]:
    environ = {
        k: v for k, v in os.environ.items()
        if not k.startswith("GAESERVICES_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
    return environ


def run(venv: Path, cwd: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command of the virtualenv (``gaeservices``, ``python``) from ``cwd``."""
    program = str(venv / "bin" / argv[0])
    return subprocess.run(
        [program, *argv[1:]], cwd=cwd, env=_environ(venv), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def outside(tmp_path):
    """A working directory outside the repository."""
    assert REPO not in tmp_path.parents
    return tmp_path


# --- the packages -----------------------------------------------------------------


def test_the_wheel_holds_the_package_and_nothing_else(dist):
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        extras = set(re.findall(r"^Provides-Extra: (\S+)$", archive.read(metadata).decode(), re.MULTILINE))
    tops = {name.split("/")[0] for name in names}
    assert tops == {"gaeservices", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    tracked = {
        str(p.relative_to(REPO)) for p in (REPO / "gaeservices").rglob("*")
        if p.is_file() and p.suffix in (".py", ".typed")
    }
    assert tracked <= set(names), tracked - set(names)
    assert "gaeservices = gaeservices.cli:main" in entry_points
    missing = named_extras() - extras
    assert not missing, f"extras named in the docs or messages but not declared in setup.py: {missing}"


def test_the_sdist_builds_what_the_wheel_holds(dist):
    _, sdist = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.py", "pyproject.toml", "README.md", "gaeservices/py.typed"} <= names
    assert {str(p.relative_to(REPO)) for p in (REPO / "gaeservices").rglob("*.py")} <= names


# --- commands -----------------------------------------------------------------------


def test_help_of_every_command(venv, outside):
    done = run(venv, outside, "gaeservices", "--help")
    assert done.returncode == 0, done.stderr
    as_module = run(venv, outside, "python", "-m", "gaeservices", "--help")  # the README's other way
    assert as_module.returncode == 0 and as_module.stdout == done.stdout, as_module.stderr
    listed = json.loads(run(venv, outside, "python", "-c",
                            "import json; from gaeservices.cli import COMMANDS; print(json.dumps(list(COMMANDS)))").stdout)
    assert listed and all(f"  {name} " in done.stdout for name in listed)
    for name in listed:
        help_ = run(venv, outside, "gaeservices", name, "--help")
        assert help_.returncode == 0 and f"gaeservices {name}" in help_.stdout, (name, help_.stderr)


@pytest.mark.parametrize("words", sorted(documented_commands()), ids=" ".join)
def test_documented_command(venv, outside, words):
    options, where = documented_commands()[words]
    shown = f"gaeservices {' '.join(words)} (shown in {', '.join(sorted(where))})"
    assert words, f"{shown}: a `gaeservices` line without a command"
    done = run(venv, outside, "gaeservices", *words, "--help")
    assert done.returncode == 0, f"{shown}: --help failed: {done.stderr}"
    for option in sorted(options):
        assert option in done.stdout, f"{shown}: no option {option}"


@pytest.mark.parametrize("command", sorted(documented_programs()), ids=" ".join)
def test_documented_program(venv, outside, command):
    options, where = documented_programs()[command]
    environ = {**_environ(venv), **PROGRAMS[command[0]]}
    done = subprocess.run(
        [str(venv / "bin" / command[0]), *command[1:], "--help"],
        cwd=outside, env=environ, capture_output=True, text=True, timeout=120,
    )
    shown = f"{' '.join(command)} (shown in {', '.join(sorted(where))})"
    assert done.returncode == 0, f"{shown}: --help failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    for option in sorted(options):
        assert option in done.stdout, f"{shown}: no option {option}"


@pytest.mark.parametrize("argv, status, text", RUNS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_command_runs(venv, outside, argv, status, text):
    done = run(venv, outside, "gaeservices", *argv)
    assert done.returncode == status, done.stderr
    assert text in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", SERVERS, ids=" ".join)
def test_a_server_on_a_taken_port_says_so_in_one_line(venv, outside, argv):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(venv, outside, "gaeservices", *argv, "--port", str(port))
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"gaeservices {argv[0]}: cannot listen on 127.0.0.1:{port}: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_demo_answers_http_on_a_free_port(venv, outside):
    process = subprocess.Popen(
        [str(venv / "bin" / "gaeservices"), "demo", "--port", "0"],
        cwd=outside, env=_environ(venv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("gaeservices demo on http://127.0.0.1:"), (line, process.stderr.read())
        base = line.split()[3]
        with urllib.request.urlopen(base, timeout=30) as response:
            index = response.read().decode()
        pages = re.findall(r"href='(/[a-z]+/)'", index)
        assert len(pages) >= 4, index
        for page in pages:
            with urllib.request.urlopen(base.rstrip("/") + page, timeout=30) as response:
                assert response.status == 200, page
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert status == 0, process.stderr.read()


# --- imports --------------------------------------------------------------------------

_TRY = """
import json, sys, traceback
failures = {}
for statement in json.loads(sys.argv[1]):
    try:
        exec(statement, {})
    except BaseException:
        failures[statement] = traceback.format_exc(limit=-2)
print(json.dumps(failures))
"""

_RESOLVE = """
import importlib, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    module_part, _, attribute = name.partition(":")
    parts = module_part.split(".")
    obj, error = None, None
    # the longest importable module prefix, then attributes
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError as exc:
            if exc.name is None or not ".".join(parts[:cut]).startswith(exc.name):
                error = repr(exc)
                break
            continue
        rest = parts[cut:] + (attribute.split(".") if attribute else [])
        for item in rest:
            if not hasattr(obj, item):
                error = f"{type(obj).__name__} {getattr(obj, '__name__', obj)!r} has no {item!r}"
                break
            obj = getattr(obj, item)
        break
    if error is not None or obj is None:
        failures[name] = error or "no such module"
print(json.dumps(failures))
"""


def test_documented_imports_run(venv, outside):
    statements = sorted({statement for _, statement in documented_imports()})
    assert "from gaeservices import SessionMiddleware" in statements  # the collector works
    done = run(venv, outside, "python", "-c", _TRY, json.dumps(statements))
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout)
    assert failures == {}, "an import that needs an extra: add the extra to EXTRAS"


def test_documented_names_resolve(venv, outside):
    names = sorted({name for _, name in documented_names()} - set(NOT_OBJECTS))
    assert "gaeservices.wsgi.deferred:application" in names  # the collector works
    done = run(venv, outside, "python", "-c", _RESOLVE, json.dumps(names))
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout)
    where = {name: [w for w, n in documented_names() if n == name] for name in failures}
    assert failures == {}, where


def test_the_deferred_endpoint_is_an_application(venv, outside):
    # Not only importable: it answers, and refuses an unsigned task before anything else.
    code = (
        "import io, wsgiref.util\n"
        "from gaeservices.wsgi.deferred import application\n"
        "environ = {'REQUEST_METHOD': 'POST', 'PATH_INFO': '/_ah/queue/deferred', 'CONTENT_LENGTH': '5',\n"
        "           'HTTP_X_APPENGINE_TASKNAME': 't', 'HTTP_X_APPENGINE_QUEUENAME': 'default',\n"
        "           'wsgi.input': io.BytesIO(b'hello')}\n"
        "wsgiref.util.setup_testing_defaults(environ)\n"
        "statuses = []\n"
        "b''.join(application(environ, lambda status, headers, exc_info=None: statuses.append(status)))\n"
        "print(statuses[0])\n"
    )
    done = run(venv, outside, "python", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] in ("400", "403"), done.stdout


# --- the core alone -----------------------------------------------------------------


def test_the_core_alone_imports_and_names_the_extra_it_lacks(core_venv, outside):
    done = run(core_venv, outside, "python", "-c", "import gaeservices; print(gaeservices.__version__)")
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert run(core_venv, outside, "gaeservices", "--help").returncode == 0
    for argv, extra in ((["demo", "--port", "0"], "demo"), (["tasks", "list"], "sql")):
        failed = run(core_venv, outside, "gaeservices", *argv)
        assert failed.returncode == 2, (argv, failed.stderr)
        assert failed.stderr.count("\n") == 1 and f"pip install 'gaeservices[{extra}]'" in failed.stderr, failed.stderr


def test_the_collectors_find_what_the_docs_show():
    # If a collector silently found nothing, the tests above would pass on nothing.
    commands = documented_commands()
    assert {("demo",), ("worker",), ("tasks", "list"), ("tasks", "run"), ("tasks", "purge")} <= set(commands)
    assert {"--queues", "--push-to"} <= commands[("worker",)][0]
    assert len(documented_imports()) >= 5
    assert {"sql", "appengine"} <= named_extras()
    assert ("celery", "-A", "gaeservices.tasks.celery", "worker") in documented_programs()
