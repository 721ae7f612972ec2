from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from uploads.filetypes import ALLOWED_EXTENSIONS


@login_required
@require_GET
def index(request):
    """The files page; the list, uploads and deletes go through the JSON API from JS."""
    return render(
        request,
        "uploads/index.html",
        {
            "max_upload_bytes": settings.UPLOAD_MAX_BYTES,
            "quota_bytes": settings.UPLOAD_QUOTA_BYTES,
            "accept": ",".join(sorted(ALLOWED_EXTENSIONS)),
        },
    )
