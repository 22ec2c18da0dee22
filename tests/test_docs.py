"""What README.md and docs/ say, checked against the code where a test can say it.

tests/test_installed.py runs every command, import and dotted name the docs show
from an installed wheel; these are the statements it cannot collect.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

import gaeservices
from gaeservices import ConfigurationError, Services

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_owner_of_is_exported_beside_claim_and_release(services):
    # docs/sessions.md documents owner_of with claim and release, imported from gaeservices.
    from gaeservices import claim, owner_of, release

    assert "owner_of" in gaeservices.__all__
    assert owner_of("username", "ada", services=services) is None
    assert claim("username", "ada", 42, services=services)
    assert owner_of("username", "ada", services=services) == b"42"
    assert release("username", "ada", 42, services=services)


def test_the_readme_shows_the_configuration_error_as_it_is():
    block = re.search(r"```\n(gaeservices\.exceptions\.ConfigurationError: .*?)```", README, re.DOTALL)
    assert block, "the README's example of a configuration error is gone"
    shown = " ".join(block.group(1).split())
    variable, value = re.search(r"(GAESERVICES_\w+)='([^']*)'", shown).groups()
    with pytest.raises(ConfigurationError) as caught:
        Services(environ={variable: value})
    assert shown == f"gaeservices.exceptions.ConfigurationError: {caught.value}"


def test_the_readme_names_where_the_command_is_installed():
    # A virtualenv's console scripts are beside its python: .venv/bin/gaeservices.
    assert "`.venv/bin/gaeservices`" in README
    assert (Path(sys.executable).parent / "gaeservices").exists()


def test_the_app_engine_example_routes_tasks_to_the_packaged_endpoint(testbed, monkeypatch, tmp_path):
    # examples/appengine/app.yaml: "main.py routes this path to gaeservices.wsgi.deferred:application"
    import importlib
    import io
    import wsgiref.util

    monkeypatch.setenv("GAESERVICES_SECRET_KEY", "k-signing-key-for-the-test-suite")
    monkeypatch.setenv("GAESERVICES_DATA_DIR", str(tmp_path))
    from gaeservices.config import set_services

    previous = set_services(None)
    # Both modules build their application on import, on the Services of that moment:
    # import them afresh here, and leave none behind bound to this test's.
    fresh = ("examples.appengine.main", "gaeservices.wsgi.deferred")
    for name in fresh:
        sys.modules.pop(name, None)
    # The SDK's wrap_wsgi_app replaces os.environ with a per-thread view for the rest of
    # the process. On Python 3.13 threads started afterwards see it empty (the SDK's
    # threading patch no longer takes), so later tests' threads lost the testbed's app id.
    saved_environ = os.environ
    try:
        main = importlib.import_module("examples.appengine.main")
        from gaeservices.wsgi.deferred import application

        assert main.deferred is application
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/_ah/queue/deferred", "CONTENT_LENGTH": "5",
                   "HTTP_X_APPENGINE_TASKNAME": "t", "HTTP_X_APPENGINE_QUEUENAME": "default",
                   "wsgi.input": io.BytesIO(b"hello")}
        wsgiref.util.setup_testing_defaults(environ)
        statuses = []
        b"".join(main.application(environ, lambda status, headers, exc_info=None: statuses.append(status)))
        assert statuses[0].split()[0] in ("400", "403")  # the endpoint answered: an unsigned body
    finally:
        os.environ = saved_environ
        set_services(previous)
        for name in fresh:
            sys.modules.pop(name, None)
