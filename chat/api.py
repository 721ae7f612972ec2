"""REST endpoints of the chat: thin views over chat.services and chat.hosts."""

from __future__ import annotations

import asyncio
import json
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import budgets, hosts, selectors, services
from chat.actions import prepare_action
from chat.events import Cancelled, Done, Failed
from chat.options import check_keep_alive
from chat.responses import failed_error, sse_stream, stopped_error
from chat.serializers import (
    ActionInput,
    BranchInput,
    ChatInput,
    ChatReplyOutput,
    ConversationInput,
    ConversationOutput,
    LoadModelInput,
    LoadModelOutput,
    MessageOutput,
    ModelListOutput,
    PullModelInput,
    RunningModelsOutput,
    SimpleChatOutput,
    TokenUsageOutput,
    parse_action,
    parse_chat_input,
)
from config.async_api_view import AsyncAPIView
from config.schema import ErrorOutput
from core.errors import AppError
from core.ollama import OllamaError

# --------------------------------------------------------------------------- usage


class UsageView(APIView):
    """Today's use of the daily token budget (`CHAT_DAILY_TOKEN_BUDGET` or the user's own)."""

    @extend_schema(responses=TokenUsageOutput)
    def get(self, request):
        return Response(TokenUsageOutput(budgets.usage_of(request.user)).data)


# --------------------------------------------------------------------------- models


class ModelsView(APIView):
    @extend_schema(
        operation_id="list_models",
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
        operation_id="list_running_models",
        summary="Models loaded in memory on each Ollama host",
        responses=RunningModelsOutput,
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
        operation_id="load_model",
        request=LoadModelInput,
        responses={
            200: LoadModelOutput,
            400: ErrorOutput,
            403: ErrorOutput,
            404: ErrorOutput,
            502: ErrorOutput,
        },
        summary="Preload a model so the next chat is fast",
    )
    def post(self, request):
        data = LoadModelInput(data=request.data)
        data.is_valid(raise_exception=True)
        model = data.validated_data["model"]
        keep_alive = data.validated_data.get("keep_alive")
        if keep_alive is not None:
            # Unloading (0, under a minute) and pinning (negative, above the maximum) act on
            # everyone's model: staff only (403 keep_alive_forbidden).
            check_keep_alive(
                keep_alive, staff=request.user.is_staff, maximum=settings.OLLAMA_KEEP_ALIVE_MAX
            )

        async def load():
            host = await hosts.pick_host(model)
            started = time.monotonic()
            result = await hosts.client_for(host).load(model, keep_alive=keep_alive)
            return host, result, time.monotonic() - started

        host, result, seconds = async_to_sync(load)()
        # Ollama's load reply carries no timings: the gateway measures the wait itself.
        return Response(
            {"model": model, "host": host, "done_reason": result.done_reason, "seconds": seconds}
        )


class PullModelView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        operation_id="pull_model",
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
        deleted_from, listing = async_to_sync(hosts.delete_everywhere)(name)
        if not deleted_from:
            hosts.raise_if_all_failed(listing)
            raise AppError(
                "model_not_found", f'Model "{name}" is not installed on any Ollama host.', 404
            )
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
    hide_loadtest = False

    def get_queryset(self):
        params = self.request.query_params
        return selectors.conversations_of(
            self.request.user,
            source=params.get("source"),
            q=params.get("q"),
            hide_loadtest=self.hide_loadtest,
        )


class ConversationListView(OwnConversationsMixin, generics.ListCreateAPIView):
    """Your conversations, newest activity first; `?source=` one source only (the load
    test's, `loadtest`, are listed only so); `?q=` in the title."""

    pagination_class = ConversationPagination
    hide_loadtest = True

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

    @extend_schema(responses={204: None, 409: ErrorOutput})  # 409 generation_running
    def delete(self, request, *args, **kwargs):
        return super().delete(request, *args, **kwargs)

    def perform_destroy(self, instance):
        # Through the service: its replies' tokens of today still count against the budget.
        services.delete_conversation(instance)


class ConversationClearView(OwnConversationsMixin, generics.GenericAPIView):
    serializer_class = ConversationOutput

    @extend_schema(
        request=None,
        responses={200: OpenApiResponse(description="{deleted: n}"), 409: ErrorOutput},
    )
    def post(self, request, pk):
        deleted = services.clear_conversation(self.get_object())
        return Response({"deleted": deleted})


class ConversationMessagesView(generics.ListAPIView):
    """The current branch, oldest first; `?ordering=-id&page_size=N` gives its latest N (newest
    first); `?branch=all` lists every message of the tree."""

    serializer_class = MessageOutput
    pagination_class = MessagePagination
    filter_backends = [OrderingFilter]
    ordering_fields = ["id"]  # ids grow with time, and unlike timestamps never tie
    ordering = ["id"]

    @extend_schema(
        parameters=[
            OpenApiParameter("branch", str, enum=["current", "all"], description="default current")
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        conversation = selectors.own_conversation(self.request.user.pk, self.kwargs["pk"])
        self.tree = selectors.tree_of(conversation.pk)
        if self.request.query_params.get("branch") == "all":
            return conversation.messages.all()
        return conversation.messages.filter(pk__in=self.tree.path_to(conversation.current_leaf_id))

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "tree": getattr(self, "tree", None)}


class ConversationBranchView(APIView):
    @extend_schema(
        request=BranchInput,
        responses={200: ConversationOutput},
        summary="Show the branch through a message (its newest leaf becomes the current one)",
    )
    def post(self, request, pk):
        data = BranchInput(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = services.switch_branch(
            selectors.own_conversation(request.user.pk, pk), data.validated_data["message"]
        )
        return Response(ConversationOutput(conversation).data)


# --------------------------------------------------------------------------- chat
#
# Coroutine views (config.async_api_view): DRF's authentication, checks and the reading of the
# input in one hop to a database thread, then the services awaited on the event loop. No
# connection is held while a reply is generated: the hop hands its connection back, and the
# generation saves on its own threads.


async def _run_to_end(user_id: int, chat_input: services.ChatInput):
    plan = await services.prepare_chat(user_id, chat_input)
    events = await services.collect(services.generate(plan))
    return plan, services.final_event(events)


class ChatView(AsyncAPIView):
    """The whole reply in one JSON object, with Ollama's timings and the derived figures."""

    simple = False

    def read_post(self, request) -> services.ChatInput:
        return parse_chat_input(request.data)

    @extend_schema(
        request=ChatInput,
        responses={
            200: ChatReplyOutput,
            400: ErrorOutput,
            404: ErrorOutput,
            409: ErrorOutput,  # generation_running, stopped_by_staff
            502: ErrorOutput,
            503: ErrorOutput,
        },
    )
    async def post(self, request, chat_input: services.ChatInput):
        plan, final = await _run_to_end(request.user.pk, chat_input)
        return _reply(plan, final, simple=self.simple)


def _reply(plan: services.GenerationPlan, final, *, simple: bool = False) -> Response:
    if isinstance(final, Failed):
        raise failed_error(final, plan.conversation_id)
    if isinstance(final, Cancelled) and final.code:  # stopped by staff (chat.cancels)
        raise stopped_error(final, plan.conversation_id)
    assert isinstance(final, Done)
    if simple:
        return Response({"response": final.content, "conversation": plan.conversation_id})
    return Response(
        {
            "response": final.content,
            "conversation": plan.conversation_id,
            "message": final.message_id,
            **final.metrics,
        }
    )


def _sse_response(plan: services.GenerationPlan) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        sse_stream(services.generate(plan)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class MessageActionView(AsyncAPIView):
    """Regenerate a reply, edit a question and send it again, or continue a reply: the JSON of
    POST /api/chat/, or with `?stream=1` its Server-Sent Events."""

    kind = "regenerate"

    def read_post(self, request, pk: int):
        return parse_action(self.kind, pk, request.data)

    @extend_schema(
        request=ActionInput,
        parameters=[OpenApiParameter("stream", int, enum=[0, 1], description="1: SSE")],
        responses={200: ChatReplyOutput, 409: ErrorOutput, 502: ErrorOutput},
    )
    async def post(self, request, action, pk: int):
        if request.query_params.get("stream") == "1":
            return _sse_response(await prepare_action(request.user.pk, action))
        plan, final = await _action_to_end(request.user.pk, action)
        return _reply(plan, final)


async def _action_to_end(user_id: int, action):
    plan = await prepare_action(user_id, action)
    events = await services.collect(services.generate(plan))
    return plan, services.final_event(events)


class SimpleChatView(ChatView):
    simple = True

    @extend_schema(
        request=ChatInput, responses={200: SimpleChatOutput, 400: ErrorOutput, 409: ErrorOutput}
    )
    async def post(self, request, chat_input: services.ChatInput):
        return await super().post(request, chat_input)


class StreamChatView(AsyncAPIView):
    """Server-Sent Events: status, queued, content, metrics, error, then `[DONE]`."""

    def read_post(self, request) -> services.ChatInput:
        return parse_chat_input(request.data)

    @extend_schema(
        request=ChatInput,
        responses={200: OpenApiResponse(description="text/event-stream of JSON events")},
    )
    async def post(self, request, chat_input: services.ChatInput):
        return _sse_response(await services.prepare_chat(request.user.pk, chat_input))
