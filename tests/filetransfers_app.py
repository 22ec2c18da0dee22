"""The application the front-server tests run under gunicorn: the demo, plus two raw
download endpoints an attacker would aim at.

- ``/raw?name=N`` serves the name ``N`` under the files root as it comes, so
  traversal attempts reach ``serve_file`` unfiltered;
- ``/raw-path?path=P`` serves the absolute path ``P`` as a trusted storage object
  would (``serve_file`` trusts an object's ``path``), so what the front server does
  with a path outside its allowed directory is tested too.

The demo and ``serve_file`` read their settings from the environment.
"""

from __future__ import annotations

from webob import Request

from gaeservices.demo.app import make_app
from gaeservices.filetransfers import serve_file

demo = make_app()


class Stored:
    """A storage object with a path, as a Django FieldFile has."""

    def __init__(self, path: str) -> None:
        self.path = path


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/raw":
        request = Request(environ)
        return serve_file(request, request.GET.get("name", ""))(environ, start_response)
    if path == "/raw-path":
        request = Request(environ)
        return serve_file(request, Stored(request.GET.get("path", "")))(environ, start_response)
    return demo(environ, start_response)
