"""URLs of the adapter's in-process Django tests."""

from django.urls import include, path

import django_test_views as views

urlpatterns = [
    path("", include("gaeservices.django.urls")),
    path("upload/", views.upload, name="upload"),
    path("private-upload/", views.upload, {"private": True}, name="private-upload"),
    path("download/<path:name>", views.download, name="download"),
]
