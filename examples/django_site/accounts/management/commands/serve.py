"""``python manage.py serve``: migrate, run the task queue's worker in-process, serve with waitress."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate, start a task worker thread, and serve the site with waitress (one command for trying it)"

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options):  # type: ignore[no-untyped-def]
        from waitress import serve

        from django_site.wsgi import application
        from gaeservices.cli import listen
        from gaeservices.django.conf import services
        from gaeservices.tasks.worker import Dispatcher

        sock = listen(host, port)  # port 0: a free one
        call_command("migrate", verbosity=0)
        svc = services()
        queue_url = svc.backend_url("queue")
        dispatcher = Dispatcher(svc).start() if queue_url is not None and queue_url.scheme == "local" else None
        bound = sock.getsockname()[1]
        tasks = "a worker thread" if dispatcher is not None else repr(svc.queue)
        self.stdout.write(f"serving http://{host}:{bound}/ (tasks: {tasks})")
        self.stdout.flush()
        try:
            serve(application, sockets=[sock])
        finally:
            if dispatcher is not None:
                dispatcher.stop()
