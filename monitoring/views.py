from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def dashboard(request):
    return render(
        request,
        "monitoring/dashboard.html",
        {"telemetry_interval": settings.TELEMETRY_INTERVAL},
    )


def _now_admin(request):
    """Who is on the GPU now, in the admin (staff: see and stop any generation)."""
    return render(
        request,
        "monitoring/now_admin.html",
        {**admin.site.each_context(request), "title": "On the GPU now"},
    )


# Staff only, with the admin's own login redirect (the admin's pages are the staff's place).
now_admin = admin.site.admin_view(_now_admin)
