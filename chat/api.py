"""REST endpoints of the chat: thin views over chat.services and chat.hosts."""

from __future__ import annotations

import asyncio
import json
import time

from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import hosts, selectors, services
from chat.events import Done, Failed
from chat.responses import failed_error, sse_stream
from chat.serializers import (
    ChatInput,
    ChatReplyOutput,
    ConversationInput,
    ConversationOutput,
    ErrorOutput,
    LoadModelInput,
    LoadModelOutput,
    MessageOutput,
    ModelListOutput,
    PullModelInput,
    RunningModelsOutput,
    SimpleChatOutput,
    parse_chat_input,
)
from config import database
from core.errors import AppError
from core.ollama import OllamaError

# --------------------------------------------------------------------------- models


class ModelsView(APIView):
    @extend_schema(
        summary="Models installed on the Ollama hosts, with whether each is loaded",
        responses={200: ModelListOutput, 502: ErrorOutput},
    )
    def get(self, request):
        listing, running = async_to_sync(_models_and_running)()
        hosts.raise_if_all_failed(listing)
        merged: dict[str, dict] = {}
        for entry in listing:
            for model in entry.models:
                item = merged.setdefault(
                    model.name,
                    {
                        "name": model.name,
                        "size": model.size,
                        "modified_at": model.modified_at,
                        "digest": model.digest,
                        "details": model.raw.get("details"),
                        "hosts": [],
                        "loaded": False,
                    },
                )
                item["hosts"].append(entry.host)
                if model.name in running.get(entry.host, set()):
                    item["loaded"] = True
        return Response(
            {
                "models": sorted(merged.values(), key=lambda m: m["name"]),
                "unreachable": [
                    {"host": e.host, "detail": str(e.error)} for e in listing if e.error
                ],
            }
        )


async def _models_and_running():
    listing, running = await asyncio.gather(hosts.all_models(fresh=True), hosts.running_by_host())
    return listing, {host: {m["name"] for m in models} for host, models in running.items()}


class RunningModelsView(APIView):
    @extend_schema(
        summary="Models loaded in memory on each Ollama host", responses=RunningModelsOutput
    )
    def get(self, request):
        running = async_to_sync(hosts.running_by_host)()
        return Response(
            {
                "models": [
                    {**model, "host": host} for host, models in running.items() for model in models
                ]
            }
        )


class LoadModelView(APIView):
    @extend_schema(
        request=LoadModelInput,
        responses={200: LoadModelOutput, 404: ErrorOutput, 502: ErrorOutput},
        summary="Preload a model so the next chat is fast",
    )
    def post(self, request):
        data = LoadModelInput(data=request.data)
        data.is_valid(raise_exception=True)
        model = data.validated_data["model"]

        async def load():
            host = await hosts.pick_host(model)
            started = time.monotonic()
            result = await hosts.client_for(host).load(
                model, keep_alive=data.validated_data.get("keep_alive")
            )
            return host, result, time.monotonic() - started

        host, result, seconds = async_to_sync(load)()
        # Ollama's load reply carries no timings: the gateway measures the wait itself.
        return Response(
            {"model": model, "host": host, "done_reason": result.done_reason, "seconds": seconds}
        )


class PullModelView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        request=PullModelInput,
        responses={200: OpenApiResponse(description="application/x-ndjson progress lines")},
        summary="Pull a model onto an Ollama host (staff); streams NDJSON progress",
    )
    def post(self, request):
        data = PullModelInput(data=request.data)
        data.is_valid(raise_exception=True)
        model = data.validated_data["model"]
        host = data.validated_data.get("host") or hosts.hosts()[0]
        if not data.validated_data["stream"]:
            last = async_to_sync(_pull_to_end)(host, model)
            return Response({"model": model, "host": host, **last})
        response = StreamingHttpResponse(
            _pull_progress(host, model), content_type="application/x-ndjson"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


async def _pull_to_end(host: str, model: str) -> dict:
    last: dict = {}
    async with hosts.client_for(host).pull(model) as progress:
        async for update in progress:
            last = update
    return last


async def _pull_progress(host: str, model: str):
    try:
        async with hosts.client_for(host).pull(model) as progress:
            async for update in progress:
                yield (json.dumps({**update, "host": host}) + "\n").encode()
    except OllamaError as exc:
        yield (json.dumps({"error": exc.detail, **exc.as_body()}) + "\n").encode()


class DeleteModelView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        summary="Delete a model from every Ollama host that has it (staff)",
        responses={204: None, 404: ErrorOutput},
    )
    def delete(self, request, name: str):
        async def delete_everywhere():
            wanted = hosts.normalize_model(name)
            listing = await hosts.all_models(fresh=True)
            having = [
                e.host
                for e in listing
                if any(hosts.normalize_model(m.name) == wanted for m in e.models)
            ]
            for host in having:
                await hosts.client_for(host).delete(name)
            return having, listing

        deleted_from, listing = async_to_sync(delete_everywhere)()
        if not deleted_from:
            hosts.raise_if_all_failed(listing)
            raise AppError(
                "model_not_found", f'Model "{name}" is not installed on any Ollama host.', 404
            )
        hosts.forget_models()
        return Response(status=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- conversations


class ConversationPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class MessagePagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500


class OwnConversationsMixin(generics.GenericAPIView):
    def get_queryset(self):
        params = self.request.query_params
        return selectors.conversations_of(
            self.request.user, source=params.get("source"), q=params.get("q")
        )


class ConversationListView(OwnConversationsMixin, generics.ListCreateAPIView):
    pagination_class = ConversationPagination

    def get_serializer_class(self):
        return ConversationInput if self.request.method == "POST" else ConversationOutput

    @extend_schema(request=ConversationInput, responses={201: ConversationOutput})
    def post(self, request):
        data = ConversationInput(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = services.create_conversation(owner=request.user, **data.validated_data)
        return Response(ConversationOutput(conversation).data, status=status.HTTP_201_CREATED)


class ConversationDetailView(OwnConversationsMixin, generics.RetrieveUpdateDestroyAPIView):
    def get_serializer_class(self):
        return ConversationInput if self.request.method in {"PUT", "PATCH"} else ConversationOutput

    def update(self, request, *args, **kwargs):
        conversation = self.get_object()
        data = ConversationInput(conversation, data=request.data, partial=request.method == "PATCH")
        data.is_valid(raise_exception=True)
        services.update_conversation(conversation, **data.validated_data)
        return Response(ConversationOutput(self.get_object()).data)


class ConversationClearView(OwnConversationsMixin, generics.GenericAPIView):
    serializer_class = ConversationOutput

    @extend_schema(request=None, responses={200: OpenApiResponse(description="{deleted: n}")})
    def post(self, request, pk):
        deleted = services.clear_conversation(self.get_object())
        return Response({"deleted": deleted})


class ConversationMessagesView(generics.ListAPIView):
    """Oldest first; `?ordering=-id&page_size=N` gives the latest N (newest first)."""

    serializer_class = MessageOutput
    pagination_class = MessagePagination
    filter_backends = [OrderingFilter]
    ordering_fields = ["id"]  # ids grow with time, and unlike timestamps never tie
    ordering = ["id"]

    def get_queryset(self):
        return selectors.messages_of(self.request.user, self.kwargs["pk"])


# --------------------------------------------------------------------------- chat


async def _run_to_end(user_id: int, chat_input: services.ChatInput):
    plan = await services.prepare_chat(user_id, chat_input)
    events = await services.collect(services.generate(plan))
    return plan, services.final_event(events)


class ChatView(APIView):
    """The whole reply in one JSON object, with Ollama's timings and the derived figures."""

    simple = False

    @extend_schema(
        request=ChatInput,
        responses={
            200: ChatReplyOutput,
            400: ErrorOutput,
            404: ErrorOutput,
            502: ErrorOutput,
            503: ErrorOutput,
        },
    )
    def post(self, request):
        chat_input = parse_chat_input(request.data)
        # The generation saves on its own threads: this request's connection goes back to the
        # pool rather than idle for the whole reply.
        database.release_connections()
        plan, final = async_to_sync(_run_to_end)(request.user.pk, chat_input)
        if isinstance(final, Failed):
            raise failed_error(final, plan.conversation_id)
        assert isinstance(final, Done)
        if self.simple:
            return Response({"response": final.content, "conversation": plan.conversation_id})
        return Response(
            {
                "response": final.content,
                "conversation": plan.conversation_id,
                "message": final.message_id,
                **final.metrics,
            }
        )


class SimpleChatView(ChatView):
    simple = True

    @extend_schema(request=ChatInput, responses={200: SimpleChatOutput, 400: ErrorOutput})
    def post(self, request):
        return super().post(request)


class StreamChatView(APIView):
    """Server-Sent Events: status, queued, content, metrics, error, then `[DONE]`."""

    @extend_schema(
        request=ChatInput,
        responses={200: OpenApiResponse(description="text/event-stream of JSON events")},
    )
    def post(self, request):
        chat_input = parse_chat_input(request.data)
        plan = async_to_sync(services.prepare_chat)(request.user.pk, chat_input)
        database.release_connections()  # as in ChatView: none held while the reply streams
        response = StreamingHttpResponse(
            sse_stream(services.generate(plan)), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
