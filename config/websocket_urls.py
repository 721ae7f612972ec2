# The apps' consumers are routed here (chat and monitoring add theirs).
from django.urls import path

from chat.consumers import ChatConsumer
from monitoring.consumers import MonitoringConsumer

websocket_urlpatterns: list = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/monitoring/", MonitoringConsumer.as_asgi()),
]
