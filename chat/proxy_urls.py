from django.urls import path

from chat import proxy

urlpatterns = [
    path("", proxy.root, name="ollama_root"),
    path("api/version", proxy.version, name="ollama_version"),
    path("api/tags", proxy.tags, name="ollama_tags"),
    path("api/ps", proxy.ps, name="ollama_ps"),
    path("api/show", proxy.show, name="ollama_show"),
    path("api/chat", proxy.chat, name="ollama_chat"),
    path("api/generate", proxy.generate, name="ollama_generate"),
]
