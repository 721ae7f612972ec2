"""ASGI entry point served by Daphne: Django for HTTP, Channels consumers for WebSockets."""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.websocket_security import BrowserOriginValidator  # noqa: E402
from config.websocket_urls import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": BrowserOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

if "twisted.internet.reactor" in sys.modules:
    # Served by Daphne: beat, and drain generations on SIGTERM (see chat/lifecycle.py);
    # no form parsing by Twisted and a request body limit (see config/daphne_http.py).
    from chat import lifecycle
    from config import daphne_http

    lifecycle.install_daphne_hooks()
    daphne_http.install()
