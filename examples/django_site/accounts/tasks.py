"""Work done later, in a worker: one deferred function and, on Django 6, one django.tasks task."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from .models import Document, Welcome


def welcome(user_id: int) -> None:
    """Deferred at registration (gaeservices.defer): reads models, sends the welcome mail."""
    user = get_user_model().objects.get(pk=user_id)
    members = get_user_model().objects.count()
    Welcome.objects.update_or_create(user=user, defaults={"members_then": members, "worker_pid": os.getpid()})
    send_mail(
        "Welcome to the example site",
        f"Hello {user.username}, you are member number {members}.",
        None,
        [user.email],
    )


def count_words(document_id: int) -> int:
    document = Document.objects.get(pk=document_id)
    with document.file.open("rb") as f:
        words = len(f.read().split())
    Document.objects.filter(pk=document_id).update(words=words)
    return words


try:  # django.tasks exists from Django 6.0 on
    from django.tasks import task
except ImportError:  # Django 5.2: the same work goes through defer
    count_words_task = None
else:

    @task
    def count_words_task(document_id: int) -> int:
        return count_words(document_id)
