from __future__ import annotations

import secrets

from django import forms
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import cache_page

from gaeservices import claim, defer, release
from gaeservices.django.filetransfers import prepare_upload, serve_file

from . import tasks
from .models import Document


def home(request: HttpRequest) -> HttpResponse:
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    return render(request, "accounts/home.html", {"visits": visits})


@cache_page(60)
def about(request: HttpRequest) -> HttpResponse:
    """A cached view: rendered once a minute, whatever the traffic."""
    return HttpResponse(f"<p>Rendered at {timezone.now().isoformat()}</p>")


class RegistrationForm(UserCreationForm):
    email = forms.EmailField(required=True)

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")


def register(request: HttpRequest) -> HttpResponse:
    form = RegistrationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        name = form.cleaned_data["username"].casefold()
        # Reserve the name first: of any number of concurrent registrations of it,
        # exactly one claim wins -- the check-then-insert race cannot happen.
        registration = secrets.token_hex(8)
        if not claim("username", name, owner=registration):
            form.add_error("username", "That name is taken.")
        else:
            try:
                with transaction.atomic():
                    user = form.save()
                    # Queued when the transaction commits, not if it rolls back.
                    defer(tasks.welcome, user.pk, _transactional=True, _queue="mail")
            except Exception:
                release("username", name, owner=registration)
                raise
            login(request, user)  # cycles the session key
            return redirect("home")
    return render(request, "accounts/register.html", {"form": form})


class UploadForm(forms.Form):
    file = forms.FileField()


@login_required
def files(request: HttpRequest) -> HttpResponse:
    view_url = reverse("files")
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            document = Document.objects.create(owner=request.user, file=form.cleaned_data["file"])
            if tasks.count_words_task is not None:
                tasks.count_words_task.enqueue(document.pk)  # django.tasks (Django 6)
            else:
                defer(tasks.count_words, document.pk)
            return redirect("files")
    upload_url, upload_data = prepare_upload(request, view_url)
    return render(
        request,
        "accounts/files.html",
        {
            "documents": Document.objects.filter(owner=request.user).order_by("-uploaded"),
            "upload_url": upload_url,
            "upload_data": upload_data,
            "form": UploadForm(),
        },
    )


@login_required
def download(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        document = Document.objects.get(pk=pk)
    except Document.DoesNotExist:
        raise Http404 from None
    if document.owner_id != request.user.pk:
        return HttpResponseForbidden("not yours")
    return serve_file(request, document.file, save_as=True)


def members() -> int:
    return get_user_model().objects.count()
