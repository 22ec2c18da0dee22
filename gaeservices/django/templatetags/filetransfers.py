"""``{% load filetransfers %}`` and ``{% render_upload_data upload_data %}``, as in django-filetransfers."""

from __future__ import annotations

from collections.abc import Mapping

from django import template
from django.utils.safestring import SafeString, mark_safe

from ...filetransfers.api import upload_fields_html

register = template.Library()


@register.simple_tag
def render_upload_data(upload_data: Mapping[str, str]) -> SafeString:
    """The hidden fields an upload form must carry, every name and value HTML-escaped."""
    return mark_safe(upload_fields_html(upload_data or {}))  # escaped by upload_fields_html
