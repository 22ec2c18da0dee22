"""``INSTALLED_APPS = [..., "gaeservices.django"]``: the template tag library and checks."""

from __future__ import annotations

from django.apps import AppConfig


class GAEServicesConfig(AppConfig):
    name = "gaeservices.django"
    label = "gaeservices"
    verbose_name = "gaeservices"
