from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts.views import admin_login
from chat import views as chat_views
from config import health

# One login form for the whole site, so that its throttle cannot be bypassed.
admin.site.login = admin_login

urlpatterns = [
    path("", chat_views.index, name="home"),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/auth/", include("accounts.api_urls")),
    path("api/", include("chat.api_urls")),
    path("api/uploads/", include("uploads.api_urls")),
    path("api/monitoring/", include("monitoring.api_urls")),
    path("ollama/", include("chat.proxy_urls")),
    path("uploads/", include("uploads.urls")),
    path("monitoring/", include("monitoring.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]
