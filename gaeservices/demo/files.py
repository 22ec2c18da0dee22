"""File transfers: upload a file, list uploads, download each inline or as an attachment.

Downloads go out through the configured backend (``GAESERVICES_FILES_SERVE``):
``stream`` by default, so ``make demo`` needs nothing in front; behind Apache with
mod_xsendfile set ``xsendfile``, behind nginx ``xaccel`` (docs/filetransfers.md has
both configurations). Uploads are user content: each is served with the type its
uploader's browser claimed, which ``serve_file`` checks, so an uploaded page or SVG
is an attachment, never a page on this origin. The list of uploads is kept in the
store, one atomic update per upload, so uploads at the same moment are all listed.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from webob import Request, Response

from gaeservices.config import Services
from gaeservices.exceptions import UploadRejectedError
from gaeservices.filetransfers import (
    prepare_upload,
    serve_file,
    upload_fields_html,
    uploaded_files,
)
from gaeservices.filetransfers.backends import settings

from .app import page, recall, remember

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/files"
TITLE = "File transfers: upload and download"


INDEX_KEY = "demo:files:index"
KEPT = 100


def _load(services: Services) -> list[dict]:
    return recall(services, INDEX_KEY)


def make_app(services: Services) -> WSGIApplication:
    def files(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        base = request.script_name
        path = request.path_info
        if path == "/upload" and request.method == "POST":
            try:
                stored = uploaded_files(request, private=True, services=services)
            except UploadRejectedError as exc:  # nothing was stored; 403, 413, 400 or 411
                return Response(str(exc) + "\n", status=exc.status, content_type="text/plain",
                                charset="utf-8")(environ, start_response)
            for f in stored:  # one atomic update each: uploads at the same moment are all kept
                remember(services, INDEX_KEY, {"name": f.name, "filename": f.filename, "size": f.size,
                                               "type": f.content_type}, limit=KEPT)
            return Response(status=303, location=base + "/")(environ, start_response)
        if path.startswith("/download/"):
            by_name = {e["name"]: e for e in _load(services)}
            entry = by_name.get(request.GET.get("name", ""))
            if entry is None:
                return Response("no such upload\n", status=404, content_type="text/plain")(environ, start_response)
            save_as = entry["filename"] if path == "/download/attachment" else False
            response = serve_file(request, entry["name"], save_as=save_as, content_type=entry["type"] or None,
                                  services=services)
            return response(environ, start_response)
        if path != "/":
            return Response("not found\n", status=404, content_type="text/plain")(environ, start_response)

        upload_url, upload_data = prepare_upload(request, base + "/upload", private=True, services=services)
        rows = "".join(
            f"<tr><td>{html.escape(e['filename'])}</td><td class='n'>{e['size']:,} bytes</td>"
            f"<td><a href='{base}/download/inline?name={quote(e['name'])}'>view</a> · "
            f"<a href='{base}/download/attachment?name={quote(e['name'])}'>download</a></td></tr>"
            for e in _load(services)
        )
        table = (f"<table id='uploads'><tr><th>file</th><th class='n'>size</th><th></th></tr>{rows}</table>"
                 if rows else "<p class='note' id='uploads'>No uploads yet.</p>")
        body = (
            f"<form method='post' enctype='multipart/form-data' action='{html.escape(upload_url)}'>"
            f"{upload_fields_html(upload_data)}<input type='file' name='file' required> "
            "<button>Upload</button></form>"
            + table +
            "<p class='note'>Each form carries a one-time token: resubmitting an upload is refused. "
            f"Uploads over {settings(services).max_upload_size:,} bytes are refused before they are read. "
            f"Downloads go through the <code>{html.escape(settings(services).serve)}</code> backend, "
            "with ranges and revalidation; pages, SVG and script are offered as attachments.</p>"
        )
        return Response(page(TITLE, body), content_type="text/html", charset="utf-8")(environ, start_response)

    return files

