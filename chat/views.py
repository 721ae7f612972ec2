"""The chat page: the whole web chat runs in the browser against the REST API and /ws/chat/."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from chat.attachments import MAX_ATTACHMENTS
from chat.options import NUMERIC_OPTIONS
from uploads.filetypes import ALLOWED_EXTENSIONS


@login_required
def index(request):
    """The chat (the home page). Its configuration goes to the page as JSON (`json_script`)."""
    option_limits = {
        name: {"min": spec.minimum, "max": spec.maximum, "integer": spec.kind is int}
        for name, spec in NUMERIC_OPTIONS.items()
        if name in {"temperature", "top_p", "max_tokens", "num_ctx"}
    }
    config = {
        "user": {"email": request.user.email},
        "urls": {
            "models": reverse("models"),
            "conversations": reverse("conversations"),
            "search": reverse("search"),
            "login": reverse("login"),
            "usage": reverse("usage"),
            "home": reverse("home"),
            "websocket": "/ws/chat/",
            "uploads": reverse("uploads_api:list"),
            "files": reverse("uploads:index"),
        },
        "uploads": {
            "maxBytes": settings.UPLOAD_MAX_BYTES,
            "maxAttachments": MAX_ATTACHMENTS,
            "accept": ",".join(sorted(ALLOWED_EXTENSIONS)),
        },
        "defaultModel": settings.OLLAMA_DEFAULT_MODEL,
        "maxMessageChars": settings.CHAT_MAX_MESSAGE_CHARS,
        "optionLimits": option_limits,
    }
    return render(request, "chat/index.html", {"chat_config": config})
