"""GET /api/search/: full-text search over the caller's own conversations (chat.search)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.pagination import PageNumberPagination

from chat import search
from chat.errors import ChatRequestError
from chat.models import Conversation
from chat.search import Search, clean_query
from config.schema import ErrorOutput


class SearchPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class SearchConversationOutput(serializers.Serializer):
    id = serializers.UUIDField(source="conversation_id")
    title = serializers.CharField(source="conversation_title")


class SearchHitOutput(serializers.Serializer):
    """A title or a message that matches, with a snippet whose matches are `highlights`:
    [start, end) offsets in Unicode code points (not UTF-16 units) into `snippet`, plain text."""

    kind = serializers.ChoiceField(choices=["title", "message"])
    conversation = SearchConversationOutput(source="*")
    message = serializers.IntegerField(source="message_id", allow_null=True)
    role = serializers.ChoiceField(choices=["user", "assistant"], allow_null=True)
    created_at = serializers.DateTimeField()
    snippet = serializers.CharField()
    highlights = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2)
    )


class SearchView(generics.ListAPIView):
    """Your own conversations' titles and messages (every branch) that match `q`, newest first
    (or by relevance with `order=relevance`), with a snippet of each."""

    serializer_class = SearchHitOutput
    pagination_class = SearchPagination

    @extend_schema(
        operation_id="search_messages",
        parameters=[
            OpenApiParameter(
                "q",
                str,
                required=True,
                description=(
                    'Words (all must match), "quoted phrases", `or` between alternatives, '
                    f"`-word` to leave out; at most {search.MAX_QUERY_CHARS} characters."
                ),
            ),
            OpenApiParameter(
                "source",
                str,
                enum=[choice.value for choice in Conversation.Source],
                description="Only conversations of this source; default: all but `loadtest`.",
            ),
            OpenApiParameter("order", str, enum=list(search.ORDERS), description="default newest"),
            OpenApiParameter(
                "kind", str, enum=list(search.KINDS), description="default: titles and messages"
            ),
        ],
        responses={200: SearchHitOutput(many=True), 400: ErrorOutput},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        text = clean_query(params.get("q"))
        source = params.get("source") or None
        if source is not None and source not in Conversation.Source.values:
            raise ChatRequestError(
                "invalid_source",
                f"Unknown source {source!r}; one of: {', '.join(Conversation.Source.values)}.",
                400,
            )
        user_id = self.request.user.pk
        assert user_id is not None  # authenticated (the default permission)
        return Search(
            user_id,
            text,
            source=source,
            order=params.get("order") or "newest",
            kind=params.get("kind") or None,
        )
