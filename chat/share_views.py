"""The page of a share link, /s/<token>: the snapshot taken when the link was made."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chat import shares


def share_page(request: HttpRequest, token: str) -> HttpResponse:
    if settings.SHARE_LINKS == "users" and not request.user.is_authenticated:
        # Checked first: whether a token exists is not told to visitors who may not look.
        return redirect_to_login(request.get_full_path())
    link = shares.visible_link(token, request.user)
    if link is None:
        raise Http404("No such share link (it may have been revoked).")
    response = render(
        request,
        "chat/share.html",
        {
            "link": link,
            "share_data": {
                "title": link.title or "Untitled conversation",
                "model": link.model,
                "created": link.created_at.isoformat(),
                "messages": link.snapshot,
            },
        },
    )
    # Not for search engines, and the token in this page's address goes to no other site.
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, no-store"
    return response
