from django.conf import settings


def site(request):
    return {"registration_enabled": settings.REGISTRATION_ENABLED}
