"""URLs of the adapter's in-process Django tests."""

from django.urls import include, path

urlpatterns = [path("", include("gaeservices.django.urls"))]
