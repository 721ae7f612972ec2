from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def dashboard(request):
    return render(
        request,
        "monitoring/dashboard.html",
        {"telemetry_interval": settings.TELEMETRY_INTERVAL},
    )
