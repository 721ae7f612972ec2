"""DRF's browsable API under the site's Content-Security-Policy."""

from __future__ import annotations

from rest_framework import renderers


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF's pages style themselves inline (style attributes and the code highlighting's
    `<style>`): those responses alone may use inline styles. Scripts stay same-origin."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None:
            response._csp_update = {"style-src": ["'unsafe-inline'"]}  # read by django-csp
        return super().render(data, accepted_media_type, renderer_context)
