"""A Flask application on gaeservices: word reports built by deferred tasks.

- ``SessionMiddleware`` (around ``app.wsgi_app``) keeps each visitor's reports
  in a server-side session; Flask's own cookie session is not used.
- ``defer(build_report, ...)`` queues the work (``reports.py``: a task lives in
  a module the worker imports); a worker runs it, writes the report file and
  queues a mail with ``send_mail`` (deferred mail goes through the same queue).
- ``XSendfileMiddleware`` serves the ``X-Sendfile`` responses of the download
  view itself (ranges, validators), as Apache's mod_xsendfile would in front.
- The cache counts the reports built, with one atomic ``incr``.

``python app.py`` serves on http://127.0.0.1:5000/ and runs the queue in a
thread of the same process. In production serve ``app:application`` with
gunicorn and run ``gaeservices worker`` beside it.
"""

from __future__ import annotations

import argparse
import os
import secrets

from flask import Flask, abort, redirect, render_template_string, request, url_for

from gaeservices import SessionMiddleware, XSendfileMiddleware, defer, get_services
from reports import build_report, report_path, reports_dir

app = Flask(__name__)


def session():
    return request.environ["gaeservices.session"]


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Word reports</title></head>
<body><h1>Word reports</h1>
<form method="post" action="{{ url_for('create') }}">
<p><textarea name="text" rows="5" cols="60" required>To be, or not to be, that is the question.</textarea></p>
<p><input name="email" type="email" placeholder="mail me when it is ready (optional)" size="40">
<button>Build the report later</button></p></form>
<p>Reports built so far: <span id="built">{{ built }}</span>.</p>
<ul id="reports">{% for id, ready in reports %}<li>
{% if ready %}<a href="{{ url_for('download', report_id=id) }}">report {{ id }}</a>
{% else %}report {{ id }}: queued{% endif %}</li>{% endfor %}</ul>
</body></html>"""


@app.get("/")
def index():
    reports = [(r, os.path.exists(report_path(r))) for r in session().get("reports", [])]
    built = get_services().cache.get("example:reports-built", 0)
    return render_template_string(PAGE, reports=reports, built=built)


@app.post("/reports")
def create():
    report_id = secrets.token_hex(6)
    defer(build_report, report_id, request.form.get("text", "")[:100_000], request.form.get("email", "").strip())
    session()["reports"] = [report_id, *session().get("reports", [])][:20]
    return redirect(url_for("index"), code=303)


@app.get("/reports/<report_id>.txt")
def download(report_id):
    if report_id not in session().get("reports", []):
        abort(404)  # only your own reports (and so only well-formed ids)
    path = report_path(report_id)
    if not os.path.exists(path):
        abort(404)
    return "", 200, {"X-Sendfile": path, "Content-Type": "text/plain; charset=utf-8"}


# The middlewares, outermost first: the session is saved after the file is sent.
app.wsgi_app = SessionMiddleware(XSendfileMiddleware(app.wsgi_app, roots=[reports_dir()]))
application = app  # what gunicorn serves: gunicorn app:application


def main() -> None:
    from werkzeug.serving import make_server

    from gaeservices.tasks.worker import Dispatcher

    parser = argparse.ArgumentParser(description="serve the example and run its tasks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0: any free port")
    options = parser.parse_args()
    dispatcher = Dispatcher(threads=1).start()  # runs deferred tasks in this process
    server = make_server(options.host, options.port, app, threaded=True)
    print(f"serving on http://{options.host}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dispatcher.stop()


if __name__ == "__main__":
    main()
