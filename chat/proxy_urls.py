from django.urls import include, path

from chat import proxy

urlpatterns = [
    path("", proxy.root, name="ollama_root"),
    path("api/version", proxy.version, name="ollama_version"),
    path("api/tags", proxy.tags, name="ollama_tags"),
    path("api/ps", proxy.ps, name="ollama_ps"),
    path("api/show", proxy.show, name="ollama_show"),
    path("api/chat", proxy.chat, name="ollama_chat"),
    path("api/generate", proxy.generate, name="ollama_generate"),
    path("api/embed", proxy.embed, name="ollama_embed"),
    path("api/embeddings", proxy.embeddings_v1, name="ollama_embeddings"),
    path("api/pull", proxy.pull, name="ollama_pull"),
    path("api/delete", proxy.delete, name="ollama_delete"),
    path("api/create", proxy.create, name="ollama_create"),
    path("api/copy", proxy.copy, name="ollama_copy"),
    path("api/push", proxy.push, name="ollama_push"),
    # Where Ollama serves its OpenAI-compatible API: the gateway's own (chat.openai_api).
    path("v1/", include("chat.openai_urls")),
]
