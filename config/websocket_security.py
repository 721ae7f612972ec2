from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """Refuse a browser's WebSocket from a foreign origin (cross-site WebSocket hijacking).

    Browsers always send `Origin` on a WebSocket handshake; native and mobile clients often
    send none, and they authenticate with a bearer token that a foreign page cannot read.
    So: no Origin header is allowed, an Origin must match ALLOWED_HOSTS.
    """

    def __init__(self, application):
        super().__init__(application, settings.ALLOWED_HOSTS)

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)
