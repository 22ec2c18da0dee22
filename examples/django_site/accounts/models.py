from django.conf import settings
from django.db import models


class Document(models.Model):
    """An upload: saved by the default storage (the file-transfer service's)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    file = models.FileField(upload_to="documents/%Y/%m")
    words = models.IntegerField(null=True)  # counted later by a task
    uploaded = models.DateTimeField(auto_now_add=True)


class Welcome(models.Model):
    """Written by the deferred welcome task, in the worker: proof it ran there with the ORM."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    members_then = models.IntegerField()
    worker_pid = models.IntegerField()
