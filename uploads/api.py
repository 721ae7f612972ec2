"""The uploads REST API: thin views over ``uploads.services`` and ``uploads.selectors``.

Every error body is ``{"detail": <message>, "code": <stable code>}`` (plus figures such as
``max_bytes`` for the size and quota errors).
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, mixins, serializers, status
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.reverse import reverse

from uploads import selectors, services
from uploads.errors import UploadError
from uploads.filenames import UnsafePath, content_disposition
from uploads.handlers import FIELD_NAME, LimitedUploadViewMixin
from uploads.models import Upload
from uploads.throttling import UploadRateThrottle

logger = logging.getLogger(__name__)

DOWNLOAD_CSP = "default-src 'none'; sandbox"


class UploadInput(serializers.Serializer):
    # Empty files are let through here so that the type check reports them as
    # `empty_file`, like every other rejection.
    file = serializers.FileField(allow_empty_file=True, use_url=False)


class UploadOutput(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Upload
        fields = [
            "id",
            "original_name",
            "size",
            "content_type",
            "kind",
            "sha256",
            "created",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, upload: Upload) -> str:
        return reverse(
            "uploads_api:download", args=[upload.pk], request=self.context.get("request")
        )


class UsageOutput(serializers.Serializer):
    files = serializers.IntegerField()
    used_bytes = serializers.IntegerField()
    quota_bytes = serializers.IntegerField()
    max_upload_bytes = serializers.IntegerField()


class UploadsAPIView(generics.GenericAPIView):
    serializer_class = UploadOutput

    def get_queryset(self):
        return selectors.uploads_for(self.request.user)

    def get_object(self) -> Upload:
        try:
            return selectors.get_upload(self.request.user, self.kwargs["pk"])
        except Upload.DoesNotExist:
            raise NotFound("No upload with this id.") from None


class UploadListCreateView(LimitedUploadViewMixin, mixins.ListModelMixin, UploadsAPIView):
    parser_classes = [MultiPartParser]

    def upload_max_bytes(self) -> int:
        return settings.UPLOAD_MAX_BYTES

    def get_throttles(self):
        throttles = super().get_throttles()
        if self.request.method == "POST":
            throttles.append(UploadRateThrottle())
        return throttles

    @extend_schema(description="Your uploads, newest first, paginated.")
    def get(self, request):
        return self.list(request)

    @extend_schema(
        description=(
            "Upload one file in the multipart field `file`. Its type is detected from its "
            "content and extension together; size, quota and rate are limited."
        ),
        request={"multipart/form-data": UploadInput},
        responses={
            201: UploadOutput,
            400: OpenApiResponse(description="refused: `code` says why"),
            413: OpenApiResponse(description="`file_too_large` or `quota_exceeded`"),
            429: OpenApiResponse(description="too many uploads; see Retry-After"),
        },
    )
    def post(self, request):
        try:
            data = request.data
        except ParseError as exc:
            raise UploadError("malformed_request", str(exc.detail)) from exc
        # Installed by initialize_request for every POST.
        assert self.upload_handler is not None
        self.upload_handler.raise_error()
        form = UploadInput(data=data)
        if not form.is_valid():
            raise UploadError(
                "no_file", f"Send one file in the multipart form field '{FIELD_NAME}'."
            )
        upload = services.store_upload(owner=request.user, file=form.validated_data["file"])
        location = reverse("uploads_api:detail", args=[upload.pk], request=request)
        return Response(
            self.get_serializer(upload).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )


class UploadDetailView(UploadsAPIView):
    @extend_schema(responses=UploadOutput)
    def get(self, request, pk):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk):
        services.delete_upload(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class _AnyAccept(BaseContentNegotiation):
    """A download is the file whatever the client's Accept says (no 406 for image/png)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class StreamingFileResponse(FileResponse):
    """A FileResponse that streams under ASGI too.

    Django's ASGI handler iterates a response asynchronously; given a plain (sync) file,
    StreamingHttpResponse falls back to reading it *whole* into memory first. Reading it
    block by block in a worker thread keeps a 20 MB download at one block in memory.
    """

    block_size = 64 * 1024

    async def __aiter__(self):
        assert self.file_to_stream is not None  # a FileResponse is always given its file
        read = sync_to_async(self.file_to_stream.read, thread_sensitive=False)
        while chunk := await read(self.block_size):
            yield chunk


class UploadDownloadView(UploadsAPIView):
    renderer_classes = [JSONRenderer]  # for error bodies only
    content_negotiation_class = _AnyAccept

    @extend_schema(responses={(200, "*/*"): OpenApiTypes.BINARY})
    def get(self, request, pk):
        upload = self.get_object()
        try:
            fh = selectors.open_upload(upload)
        except (OSError, UnsafePath):
            logger.exception(
                "upload %s: its file %r cannot be opened", upload.pk, upload.stored_name
            )
            raise NotFound("The stored file is missing.", code="file_missing") from None
        response = StreamingFileResponse(fh, content_type=upload.content_type)
        response["Content-Disposition"] = content_disposition(upload.original_name)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = DOWNLOAD_CSP
        # Private files: no shared cache may keep them, no other site may embed them.
        response["Cache-Control"] = "private, no-store"
        response["Cross-Origin-Resource-Policy"] = "same-origin"
        response["ETag"] = f'"{upload.sha256}"'
        return response


class UsageView(UploadsAPIView):
    """How much of your quota you use, and the limits of this server."""

    @extend_schema(responses=UsageOutput)
    def get(self, request):
        return Response(
            UsageOutput(
                {
                    "files": self.get_queryset().count(),
                    "used_bytes": services.used_bytes(request.user),
                    "quota_bytes": settings.UPLOAD_QUOTA_BYTES,
                    "max_upload_bytes": settings.UPLOAD_MAX_BYTES,
                }
            ).data
        )
