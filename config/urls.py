from csp.decorators import csp_update
from django.contrib import admin
from django.http import HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from accounts.views import admin_login
from chat import share_views
from chat import views as chat_views
from config import api_index, error_pages, health, metrics_view
from monitoring import views as monitoring_views


def favicon(request):
    """Browsers ask for /favicon.ico on pages that name no icon (the admin, the API pages).
    Resolved per request: in production the name is the hashed one of collectstatic."""
    return HttpResponseRedirect(static("favicon.svg"))


# Swagger UI and Redoc inject their own styles, draw icons from data: URLs and Redoc runs a
# blob: worker; their scripts stay same-origin (the split view loads its set-up as a file).
docs_csp = csp_update(
    {"style-src": ["'unsafe-inline'"], "img-src": ["data:"], "worker-src": ["blob:"]}
)

urlpatterns = [
    path("", chat_views.index, name="home"),
    path("s/<str:token>", share_views.share_page, name="share_page"),
    path("favicon.ico", favicon),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", metrics_view.metrics, name="metrics"),
    path("accounts/", include("accounts.urls")),
    # One login form for the whole site, so that its throttle cannot be bypassed: the admin's
    # login URL (where the admin sends visitors not signed in) is answered by it, not the admin.
    path("admin/login/", admin_login),
    path("admin/monitoring/now/", monitoring_views.now_admin, name="monitoring_now_admin"),
    path("admin/", admin.site.urls),
    path("api/", api_index.ApiIndexView.as_view(), name="api-index"),
    path("api/auth/", include("accounts.api_urls")),
    path("api/", include("chat.api_urls")),
    path("api/uploads/", include("uploads.api_urls")),
    path("api/monitoring/", include("monitoring.api_urls")),
    path("ollama/", include("chat.proxy_urls")),
    path("v1/", include("chat.openai_urls")),
    path("uploads/", include("uploads.urls")),
    path("monitoring/", include("monitoring.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        docs_csp(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="swagger-ui",
    ),
    path("api/redoc/", docs_csp(SpectacularRedocView.as_view(url_name="schema")), name="redoc"),
    # Last: what nothing above matched under the APIs is their own 404, DEBUG or not (Django's
    # handler404 is not used while DEBUG shows its technical page).
    re_path(r"^(?:api|ollama|v1)/", error_pages.unmatched),
]

handler400 = "config.error_pages.bad_request"
handler403 = "config.error_pages.permission_denied"
handler404 = "config.error_pages.page_not_found"
handler500 = "config.error_pages.server_error"
