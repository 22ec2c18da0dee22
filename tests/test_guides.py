"""The guides in docs/ and the README: their links lead somewhere, and the first app
of docs/getting-started.md runs as written.

tests/test_installed.py runs every ``gaeservices`` command, import and dotted name
the documents show, from an installed wheel; these are what it cannot collect.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo_fixtures import Client

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
DOCUMENTS = [REPO / "README.md", *sorted(DOCS.glob("*.md")), *sorted((REPO / "examples").glob("*/README.md"))]
GUIDES = ["getting-started.md", "deploy-laptop.md", "deploy-servers.md", "deploy-multiprocess.md",
          "deploy-appengine.md", "deploy-celery.md", "migrating.md", "security.md"]
KEY = "k-signing-key-for-the-test-suite"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        base, n = slug(heading), 0
        while (candidate := base if n == 0 else f"{base}-{n}") in found:
            n += 1
        found.add(candidate)
    return found


def links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_leads_to_a_file_and_a_heading_that_exist(document):
    for target in links(document):
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert resolved.exists(), f"{target}: no such file"
        if anchor:
            assert resolved.suffix == ".md", target
            assert anchor in anchors(resolved), f"{target}: no such heading in {resolved.name}"


def test_the_readme_starts_with_the_two_commands_and_links_the_guides():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert readme.index(first_block.group(0)) < readme.index("\n## ")  # before anything else
    assert [line.split("#")[0].strip() for line in first_block.group(1).splitlines()] == ["make demo", "make test"]
    for guide in GUIDES:
        assert f"(docs/{guide})" in readme, guide


def code_block(document: str, after: str, language: str) -> str:
    text = (DOCS / document).read_text(encoding="utf-8")
    return re.search(rf"```{language}\n(.*?)```", text[text.index(after):], re.S).group(1)


def test_the_first_app_of_getting_started_runs_as_written(tmp_path):
    (tmp_path / "app.py").write_text(code_block("getting-started.md", "`app.py`", "python"))
    commands = [line.split("  #")[0].strip()
                for line in code_block("getting-started.md", "Run it, and the worker", "sh").splitlines()]
    serve, worker, fetch = commands
    assert serve == "venv/bin/waitress-serve --listen 127.0.0.1:8000 app:application"
    assert worker == "venv/bin/gaeservices worker"
    assert fetch == "curl -s -c cookies -b cookies http://127.0.0.1:8000/"
    bin_dir = Path(sys.executable).parent  # the guide's venv/bin: the one running these tests
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    processes = []
    logs = {}
    try:
        for name, command in (("serve", serve.replace(":8000", ":0")), ("worker", worker)):
            argv = shlex.split(command)
            argv[0] = str(bin_dir / Path(argv[0]).name)
            logs[name] = tmp_path / f"{name}.log"
            with open(logs[name], "w") as out:
                processes.append(subprocess.Popen(argv, cwd=tmp_path, env=environ, stdout=out,
                                                  stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 30
        while not (found := re.search(r"Serving on (http://\S+)", logs["serve"].read_text())):
            assert time.monotonic() < deadline, logs["serve"].read_text()
            time.sleep(0.05)
        client = Client(found.group(1) + "/")  # curl's cookie jar: a client that keeps cookies
        first, second = client.get("/")[1], client.get("/")[1]
        assert first.startswith("your visit 1;") and second.startswith("your visit 2;")
        deadline = time.monotonic() + 30  # the worker ran welcome(), which queued the mail it then printed
        while "Subject: A new visitor" not in logs["worker"].read_text():
            assert time.monotonic() < deadline, logs["worker"].read_text()
            time.sleep(0.1)
        assert "came by." in logs["worker"].read_text()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
