"""Export, import and share conversations: thin views over chat.exports, chat.imports and
chat.shares."""

from __future__ import annotations

import json
from typing import TypeVar

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from chat import exports, imports, selectors, shares
from chat.errors import ChatRequestError
from chat.models import ShareLink
from config.schema import ErrorOutput
from uploads.handlers import FIELD_NAME, LimitedUploadViewMixin

R = TypeVar("R", HttpResponse, StreamingHttpResponse)


class _JSONOnly(BaseContentNegotiation):
    """`?format=md` names the export's format, not a DRF renderer (whose `format` override
    would answer 404): errors are JSON, the file is the view's own response."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = JSONRenderer()
        return renderer, renderer.media_type


def _attachment(response: R, filename: str) -> R:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


class ConversationExportView(APIView):
    content_negotiation_class = _JSONOnly
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="export_conversation",
        summary="Download one conversation: JSON (every branch) or Markdown (the branch shown)",
        parameters=[
            OpenApiParameter("format", str, enum=["json", "md"], description="default json")
        ],
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/markdown"): OpenApiTypes.STR,
            400: ErrorOutput,
            404: ErrorOutput,
        },
    )
    def get(self, request, pk):
        conversation = selectors.own_conversation(request.user.pk, pk)
        kind = request.query_params.get("format", "json")
        if kind == "md":
            response = HttpResponse(
                exports.export_markdown(conversation), content_type="text/markdown; charset=utf-8"
            )
            return _attachment(response, exports.safe_filename(conversation.title, "md"))
        if kind != "json":
            raise ChatRequestError("invalid_format", "format must be json or md.", 400)
        body = json.dumps(exports.export_one(conversation), indent=1, ensure_ascii=False)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        return _attachment(response, exports.safe_filename(conversation.title, "json"))


class ConversationExportAllView(APIView):
    @extend_schema(
        operation_id="export_all_conversations",
        summary="Download all your conversations as one JSON file (streamed)",
        responses={(200, "application/json"): OpenApiTypes.OBJECT},
    )
    def get(self, request):
        response = StreamingHttpResponse(
            exports.export_all_chunks(request.user.pk),
            content_type="application/json; charset=utf-8",
        )
        return _attachment(response, "conversations.json")


class ImportInput(serializers.Serializer):
    file = serializers.FileField(
        help_text="This server's JSON export, Open WebUI's chat export or ChatGPT's "
        "conversations.json"
    )


class ImportedConversationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    messages = serializers.IntegerField()


class ImportOutput(serializers.Serializer):
    format = serializers.CharField()
    imported = serializers.IntegerField(help_text="Conversations created")
    messages = serializers.IntegerField(help_text="Messages created")
    conversations = ImportedConversationOutput(many=True)


class ImportRateThrottle(UserRateThrottle):
    """Imports per user, at uploads' rate (`UPLOAD_RATE`) in a bucket of their own."""

    scope = "imports"

    def get_rate(self) -> str:
        return settings.UPLOAD_RATE


class ConversationImportView(LimitedUploadViewMixin, APIView):
    parser_classes = [MultiPartParser]
    throttle_classes = [ImportRateThrottle]

    def upload_max_bytes(self) -> int:
        return settings.IMPORT_MAX_BYTES

    @extend_schema(
        operation_id="import_conversations",
        summary="Import conversations from a file (all or nothing)",
        request={"multipart/form-data": ImportInput},
        responses={
            201: ImportOutput,
            400: OpenApiResponse(ErrorOutput, description="`invalid_import`: what is wrong"),
            413: OpenApiResponse(ErrorOutput, description="`file_too_large`"),
        },
    )
    def post(self, request):
        try:
            data = request.data
        except ParseError as exc:
            raise imports.InvalidImport(
                f"The request is not a multipart form: {exc.detail}"
            ) from None
        assert self.upload_handler is not None
        self.upload_handler.raise_error()
        upload = data.get(FIELD_NAME) if hasattr(data, "get") else None
        if upload is None:
            raise imports.InvalidImport(f"Send the file in the multipart field '{FIELD_NAME}'.")
        parsed = imports.parse(
            upload.read(),
            max_conversations=settings.IMPORT_MAX_CONVERSATIONS,
            max_messages=settings.IMPORT_MAX_MESSAGES,
        )
        created = imports.save(request.user, parsed)
        body = {
            "format": parsed.format,
            "imported": len(created),
            "messages": parsed.message_count,
            "conversations": [
                {"id": c.pk, "title": c.title, "messages": len(item.messages)}
                for c, item in zip(created, parsed.conversations, strict=True)
            ],
        }
        return Response(ImportOutput(body).data, status=status.HTTP_201_CREATED)


# --------------------------------------------------------------------------- share


class ShareLinkOutput(serializers.ModelSerializer):
    conversation = serializers.UUIDField(source="conversation_id")
    messages = serializers.SerializerMethodField()

    class Meta:
        model = ShareLink
        fields = ["id", "conversation", "title", "token_prefix", "created_at", "messages"]
        read_only_fields = fields

    def get_messages(self, link: ShareLink) -> int:
        return len(link.snapshot)


class NewShareLinkOutput(ShareLinkOutput):
    token = serializers.CharField(help_text="Shown once: only its hash is kept")
    url = serializers.CharField()

    class Meta(ShareLinkOutput.Meta):
        fields = [*ShareLinkOutput.Meta.fields, "token", "url"]
        read_only_fields = fields


class ConversationShareView(APIView):
    @extend_schema(
        operation_id="list_conversation_share_links",
        summary="The share links of a conversation",
        responses={200: ShareLinkOutput(many=True), 404: ErrorOutput},
    )
    def get(self, request, pk):
        conversation = selectors.own_conversation(request.user.pk, pk)
        links = shares.links_of(request.user, conversation.pk)
        return Response(ShareLinkOutput(links, many=True).data)

    @extend_schema(
        operation_id="create_share_link",
        summary="A read-only link to the branch shown, as it is now (a snapshot)",
        request=None,
        responses={201: NewShareLinkOutput, 403: ErrorOutput, 404: ErrorOutput},
    )
    def post(self, request, pk):
        conversation = selectors.own_conversation(request.user.pk, pk)
        link, token = shares.create_link(conversation)
        link.token = token  # type: ignore[attr-defined]  # for the output, once
        link.url = request.build_absolute_uri(  # type: ignore[attr-defined]
            reverse("share_page", args=[token])
        )
        return Response(NewShareLinkOutput(link).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="revoke_share_links",
        summary="Revoke the conversation's share links (all, or `?link=<id>`)",
        parameters=[OpenApiParameter("link", int, description="one link's id; default: all")],
        responses={200: OpenApiResponse(description="{revoked: n}"), 404: ErrorOutput},
    )
    def delete(self, request, pk):
        conversation = selectors.own_conversation(request.user.pk, pk)
        raw = request.query_params.get("link")
        if raw is not None and not raw.isdigit():
            raise ChatRequestError("invalid_link", "link must be a share link's id.", 400)
        revoked = shares.revoke(request.user, conversation, int(raw) if raw else None)
        return Response({"revoked": revoked})


class ShareListView(APIView):
    @extend_schema(
        operation_id="list_share_links",
        summary="All your share links, newest first",
        responses={200: ShareLinkOutput(many=True)},
    )
    def get(self, request):
        return Response(ShareLinkOutput(shares.links_of(request.user), many=True).data)


class ShareDetailView(APIView):
    @extend_schema(
        operation_id="revoke_share_link",
        summary="Revoke one share link",
        responses={204: None, 404: ErrorOutput},
    )
    def delete(self, request, link_id: int):
        deleted, _ = shares.links_of(request.user).filter(pk=link_id).delete()
        if not deleted:
            raise ChatRequestError("not_found", "Share link not found.", 404)
        return Response(status=status.HTTP_204_NO_CONTENT)
