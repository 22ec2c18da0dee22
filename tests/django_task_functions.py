"""Django tasks (``django.tasks``, Django 6) for the adapter's tests: module-level, importable by a worker."""

from __future__ import annotations

from django.tasks import task

ran: list[tuple] = []


@task
def add(a, b):
    ran.append(("add", a, b))
    return {"sum": a + b}


@task(queue_name="mail")
def on_mail_queue(text):
    ran.append(("mail", text))


@task
def explode(reason):
    ran.append(("explode", reason))
    raise LookupError(reason)


@task(takes_context=True)
def with_context(context, tag):
    ran.append(("context", tag, context.attempt, context.task_result.id))
    return context.attempt


def plain(tag):
    ran.append(("plain", tag))
