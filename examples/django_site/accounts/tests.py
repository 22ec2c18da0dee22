"""The example project through Django's test client (``python manage.py test accounts``)."""

from __future__ import annotations

import tempfile

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase, override_settings

from gaeservices.unique import claim, owner_of
from gaeservices.config import Services, get_services, set_services

from .models import Document, Welcome


@override_settings(EMAIL_BACKEND="gaeservices.django.mail.EmailBackend")
class SiteTests(TestCase):
    def setUp(self) -> None:
        from django.conf import settings

        self.data = tempfile.mkdtemp(prefix="django-site-test-")
        # Tasks run at once (immediate://), mail goes to an outbox (memory://).
        self.services = Services(secret_key=settings.SECRET_KEY, data_dir=self.data, queue="immediate://",
                                 mail="memory://", environ={})
        self.previous = set_services(self.services)

    def tearDown(self) -> None:
        set_services(self.previous)
        self.services.close()

    def register(self, name: str, client=None):  # type: ignore[no-untyped-def]
        client = client or self.client
        with self.captureOnCommitCallbacks(execute=True):
            return client.post("/register/", {"username": name, "email": f"{name}@example.com",
                                              "password1": "a long pass phrase 1", "password2": "a long pass phrase 1"})

    def test_registration_claims_the_name_logs_in_with_a_new_session_key_and_mails_from_a_task(self) -> None:
        self.client.get("/")  # a session before logging in
        before = self.client.cookies["sessionid"].value
        response = self.register("Ada")
        self.assertRedirects(response, "/")
        user = get_user_model().objects.get(username="Ada")
        self.assertNotEqual(self.client.cookies["sessionid"].value, before)  # cycled at login
        self.assertEqual(self.client.get("/").context["user"], user)
        self.assertIsNotNone(owner_of("username", "ada"))
        welcome = Welcome.objects.get(user=user)
        self.assertEqual(welcome.members_then, 1)
        [sent] = get_services().mail.outbox
        self.assertEqual(list(sent.recipients), ["Ada@example.com"])
        self.assertIn("member number 1", sent.message.get_body(("plain",)).get_content())

    def test_a_name_claimed_by_a_concurrent_registration_is_refused(self) -> None:
        # Another registration of "Grace" has passed the form's "is it free?" check and
        # holds the claim, its user not yet inserted: the race a check-then-insert loses.
        self.assertTrue(claim("username", "grace", owner="the-other-registration"))
        response = self.register("GRACE")
        self.assertContains(response, "That name is taken.")
        self.assertEqual(get_user_model().objects.count(), 0)
        self.assertEqual(owner_of("username", "grace"), b"the-other-registration")

    def test_login_cycles_the_session_key_and_keeps_the_session(self) -> None:
        get_user_model().objects.create_user("alan", "alan@example.com", "a long pass phrase 1")
        self.client.get("/")
        self.client.get("/")  # visits: 2
        before = self.client.cookies["sessionid"].value
        response = self.client.post("/login/", {"username": "alan", "password": "a long pass phrase 1"})
        self.assertRedirects(response, "/")
        self.assertNotEqual(self.client.cookies["sessionid"].value, before)
        self.assertEqual(self.client.get("/").context["visits"], 4)  # the data came along
        self.client.post("/logout/")
        self.assertEqual(self.client.get("/").context["visits"], 1)  # a fresh session after logout

    def test_the_about_page_is_cached(self) -> None:
        first = self.client.get("/about/").content
        self.assertEqual(self.client.get("/about/").content, first)

    def test_upload_count_words_in_a_task_and_download(self) -> None:
        self.register("linus")
        page = self.client.get("/files/")
        self.assertContains(page, 'enctype="multipart/form-data"')
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post("/files/", {"file": SimpleUploadedFile("notes é.txt", b"three short words")})
        document = Document.objects.get()
        self.assertEqual(document.words, 3)
        download = self.client.get(f"/files/{document.pk}/")
        self.assertEqual(b"".join(download.streaming_content), b"three short words")
        self.assertIn("attachment", download["Content-Disposition"])
        stranger = self.client_class()
        self.register("mallory", client=stranger)
        self.assertEqual(stranger.get(f"/files/{document.pk}/").status_code, 403)
