"""Make this folder ready for ``gcloud app deploy app.yaml queue.yaml``.

1. Builds gaeservices' wheel from the checkout (``../..``) into ``./wheels``,
   where requirements.txt points pip (gaeservices is not on PyPI).
2. Puts a new random signing key in app.yaml in place of the placeholder; a
   key already there is kept (a new key on every deploy would end every session
   and refuse every task signed with the old one).

app.yaml then holds your key: keep that copy out of version control.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
PLACEHOLDER = 'GAESERVICES_SECRET_KEY: "REPLACE-ME"'


def build_wheel() -> str:
    wheels = os.path.join(HERE, "wheels")
    for old in glob.glob(os.path.join(wheels, "gaeservices-*.whl")):
        os.remove(old)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", wheels, CHECKOUT],
        check=True,
    )
    (wheel,) = glob.glob(os.path.join(wheels, "gaeservices-*.whl"))
    return wheel


def put_key() -> bool:
    """True when a new key was written, False when app.yaml had one already."""
    path = os.path.join(HERE, "app.yaml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if PLACEHOLDER not in text:
        if not re.search(r"^\s*GAESERVICES_SECRET_KEY: \S", text, re.MULTILINE):
            raise SystemExit("app.yaml sets no GAESERVICES_SECRET_KEY: put one under env_variables")
        return False
    key = secrets.token_urlsafe(48)  # 64 characters, 288 random bits
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text.replace(PLACEHOLDER, f'GAESERVICES_SECRET_KEY: "{key}"'))
    os.replace(path + ".tmp", path)
    return True


def main() -> None:
    wheel = build_wheel()
    print(f"built {os.path.relpath(wheel, HERE)}")
    if put_key():
        print("app.yaml: a new signing key replaces the placeholder; keep this app.yaml out of version control")
    else:
        print("app.yaml: keeping the signing key it has")
    print("next: gcloud app deploy app.yaml queue.yaml")


if __name__ == "__main__":
    main()
