"""`/v1/`: the OpenAI-compatible API (chat.openai_api); also served under `/ollama/v1/`, where
Ollama itself serves its own."""

from django.urls import path

from chat import openai_api

urlpatterns = [
    path("models", openai_api.models),
    path("models/<path:name>", openai_api.model),
    path("chat/completions", openai_api.chat_completions),
    path("completions", openai_api.completions),
    path("embeddings", openai_api.create_embeddings),
]
