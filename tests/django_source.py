"""Django's own backend contract tests, taken from the Django release that is installed.

Django defines what a cache backend and a session engine must do in its test suite
(``tests/cache/tests.py``: ``BaseCacheTests``; ``tests/sessions_tests/tests.py``:
``SessionTestsMixin``), which the wheel does not ship. This fetches the sdist of the
installed release from PyPI with pip, checks it against the SHA-256 pinned here, and
unpacks those two test packages into ``.django-tests/<version>/``, where the adapter's
tests import them and run them, unchanged, against our backends.

``make test`` runs it (``python tests/django_source.py``); a test that needs it and
finds it missing fetches it the same way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / ".django-tests"

#: Django release -> SHA-256 of its sdist on PyPI. A release missing here is not
#: fetched: add its hash (``pip download --no-deps --no-binary :all: Django==X``).
PINNED = {
    "5.2.19": "ad03d8abc51dbff95ebf34b27123cf0c26a3b62db7ba0cd520783686362533d1",
    "6.1.3": "b5d2d9e35295065d13b1927b3f19a59bd119f737aa6299def14ccca1ae3c8c0d",
}
PACKAGES = ("cache", "sessions_tests")


class Unavailable(Exception):
    """The contract tests cannot be had for this Django (not pinned, or no network)."""


def tests_dir(version: str | None = None) -> Path:
    """The directory holding Django's ``cache`` and ``sessions_tests`` test packages."""
    if version is None:
        import django

        version = django.__version__
    where = TARGET / version
    if all((where / name / "tests.py").exists() for name in PACKAGES):
        return where
    expected = PINNED.get(version)
    if expected is None:
        raise Unavailable(f"Django {version} has no pinned sdist hash in tests/django_source.py")
    with tempfile.TemporaryDirectory() as download:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-binary", ":all:", "--ignore-requires-python",
            "--dest", download, f"Django=={version}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        archives = list(Path(download).glob("*.tar.gz"))
        if done.returncode != 0 or len(archives) != 1:
            raise Unavailable(f"pip download Django=={version} failed: {done.stderr.strip()[-400:]}")
        archive = archives[0]
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != expected:
            raise Unavailable(f"{archive.name} has SHA-256 {digest}, expected {expected}: refused")
        TARGET.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=TARGET, prefix=".unpacking-"))
        with tarfile.open(archive) as tar:
            prefix = f"{tar.getnames()[0].split('/')[0]}/tests/"
            members = [
                m for m in tar.getmembers()
                if m.isfile() and any(m.name.startswith(prefix + name + "/") for name in PACKAGES)
            ]
            for member in members:
                member.name = member.name[len(prefix):]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:
                tar.extractall(staging, members=members)
    try:
        os.replace(staging, where)
    except OSError:  # another process unpacked it first: its copy is the same
        shutil.rmtree(staging, ignore_errors=True)
    return where


if __name__ == "__main__":
    try:
        print(f"Django's contract tests: {tests_dir()}")
    except Unavailable as exc:
        print(f"Django's contract tests are unavailable: {exc}", file=sys.stderr)
        raise SystemExit(1)
