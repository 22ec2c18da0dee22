"""Views of the adapter's in-process Django tests: a django-filetransfers style upload page."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.template import engines
from django.urls import reverse

from gaeservices.django.filetransfers import prepare_upload, serve_file, verify_upload
from gaeservices.exceptions import UploadRejectedError

FORM = engines["django"].from_string(
    "{% load filetransfers %}"
    '<form action="{{ upload_url }}" method="post" enctype="multipart/form-data">'
    "{% render_upload_data upload_data %}<input type=file name=file></form>"
)


def upload(request, private=False):
    view_url = reverse("private-upload" if private else "upload")
    if request.method == "POST":
        if private:
            try:
                verify_upload(request)
            except UploadRejectedError as exc:
                return HttpResponseForbidden(str(exc))
        saved = default_storage.save(request.FILES["file"].name, request.FILES["file"])
        return JsonResponse({"name": saved})
    upload_url, upload_data = prepare_upload(request, view_url, private=private)
    return HttpResponse(FORM.render({"upload_url": upload_url, "upload_data": upload_data}))


def download(request, name):
    return serve_file(request, default_storage.open(name), save_as=True)
