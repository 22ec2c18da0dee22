"""A Django project signs with its SECRET_KEY (and fallbacks) unless GAESERVICES_SECRET_KEY is set."""

from __future__ import annotations

import pytest
from django_fixtures import SECRET_KEY, configure

configure()

from django.test import override_settings  # noqa: E402

from gaeservices.config import Services  # noqa: E402
from gaeservices.exceptions import ConfigurationError  # noqa: E402

OLD = "an-older-django-secret-key-still-verifying"
OURS = "k-signing-key-for-the-test-suite"


def test_services_of_a_django_process_sign_with_secret_key_then_its_fallbacks(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "the.project.settings"}
    with override_settings(SECRET_KEY_FALLBACKS=[OLD]):
        services = Services(environ=env, data_dir=str(tmp_path))
        assert services.secret_keys == [SECRET_KEY.encode(), OLD.encode()]
        signed = Services(secret_key=OLD, environ={}, data_dir=str(tmp_path)).signer("s").sign(b"x")
        assert services.signer("s").unsign(signed) == b"x"  # a fallback verifies
    assert not (tmp_path / "secret_key").exists()  # nothing generated


def test_gaeservices_secret_key_wins_over_django(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "the.project.settings", "GAESERVICES_SECRET_KEY": OURS}
    assert Services(environ=env, data_dir=str(tmp_path)).secret_keys == [OURS.encode()]


def test_a_short_secret_key_is_refused_naming_the_setting(tmp_path):
    with override_settings(SECRET_KEY="too-short"):
        with pytest.raises(ConfigurationError, match="SECRET_KEY is 9 bytes"):
            Services(environ={"DJANGO_SETTINGS_MODULE": "x"}, data_dir=str(tmp_path))
    with override_settings(SECRET_KEY_FALLBACKS=["short"]):
        with pytest.raises(ConfigurationError, match=r"SECRET_KEY_FALLBACKS\[0\]"):
            Services(environ={"DJANGO_SETTINGS_MODULE": "x"}, data_dir=str(tmp_path))


def test_without_django_settings_module_nothing_of_django_is_read(tmp_path):
    with override_settings(SECRET_KEY="too-short"):  # would fail if it were read
        Services(environ={}, data_dir=str(tmp_path), secret_key=OURS)
