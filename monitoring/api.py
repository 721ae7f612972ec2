"""REST: the latest sample per host, bucketed time series and summaries (any logged-in user:
every host is the operator's own machine), the per-request figures of the chat with their
throughput aggregates (staff: every user's requests; others: their own), and who is on the GPU
now, with staff's cancel (staff: everyone; others: their own entries and counts of the rest)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import cancels
from chat.models import Message
from config.schema import ErrorOutput
from monitoring.selectors import now, requests, samples
from monitoring.serializers import LatestOutput, NowCancelInput, NowCancelOutput, NowOutput

#: Without an explicit resolution the throughput series aims at about this many points.
THROUGHPUT_POINTS = 120


def _describe_seconds(seconds: float) -> str:
    if seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''} ({int(seconds)} s)"
    return f"{int(seconds)} s"


#: The dates a window may name: no sample or reply predates the epoch, and the arithmetic on
#: a window (an hour before `until`, buckets) must stay inside Python's datetime range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class QueryDateTimeField(serializers.DateTimeField):
    # An unencoded "+00:00" in a query string arrives as " 00:00"; put the plus back rather
    # than answer a puzzling format error.
    _lost_plus = re.compile(r" (\d\d:?\d\d)$")

    def to_internal_value(self, value):
        if isinstance(value, str):
            value = self._lost_plus.sub(r"+\1", value.strip())
        moment = super().to_internal_value(value)
        if not EARLIEST <= moment < LATEST:
            raise serializers.ValidationError(
                f"Give a date from {EARLIEST:%Y-%m-%d} to {LATEST - timedelta(days=1):%Y-%m-%d}."
            )
        return moment


class WindowInput(serializers.Serializer):
    since = QueryDateTimeField(
        required=False, help_text="ISO 8601 start (inclusive); default: one hour before until"
    )
    until = QueryDateTimeField(required=False, help_text="ISO 8601 end (exclusive); default: now")
    host = serializers.CharField(
        required=False, max_length=255, help_text="only this host (TELEMETRY_HOST of a machine)"
    )

    def validate(self, attrs):
        return _window(attrs)


def _window(attrs):
    """Fill in since/until (default: the hour before until, until now), check the order and the
    length; add ``window_seconds``."""
    until = attrs.get("until") or timezone.now()
    since = attrs.get("since") or until - timedelta(hours=1)
    if since >= until:
        raise serializers.ValidationError({"since": ["since must be earlier than until."]})
    window = (until - since).total_seconds()
    limit = samples.MAX_WINDOW.total_seconds()
    if window > limit:
        raise serializers.ValidationError(
            {
                "since": [
                    f"The window from since to until is {_describe_seconds(window)}; "
                    f"the maximum is {_describe_seconds(limit)}."
                ]
            }
        )
    attrs["since"], attrs["until"] = since, until
    attrs["window_seconds"] = window
    return attrs


def _check_points(window: float, resolution: int) -> None:
    points = math.ceil(window / resolution)
    if points > samples.MAX_POINTS:
        least = math.ceil(window / samples.MAX_POINTS)
        raise serializers.ValidationError(
            {
                "resolution": [
                    f"A {int(window)} s window at {resolution} s resolution is {points} "
                    f"points; the maximum is {samples.MAX_POINTS}: use resolution={least} "
                    "or more, or a shorter window."
                ]
            }
        )


class SeriesInput(WindowInput):
    resolution = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=86400,
        help_text=(
            "bucket width in seconds (1..86400); default: the sampling interval, or wider to "
            f"keep about {samples.DEFAULT_POINTS} points"
        ),
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        window = attrs["window_seconds"]
        resolution = attrs.get("resolution")
        if resolution is None:
            resolution = max(
                math.ceil(settings.TELEMETRY_INTERVAL), math.ceil(window / samples.DEFAULT_POINTS)
            )
        _check_points(window, resolution)
        attrs["resolution"] = resolution
        return attrs


# --- output shapes (documentation and the browsable API) -------------------------------------


class HostPointOutput(serializers.Serializer):
    t = serializers.DateTimeField(help_text="bucket start")
    samples = serializers.IntegerField()
    ram_used_mb = serializers.FloatField(allow_null=True)
    ram_percent = serializers.FloatField(allow_null=True)
    ram_total_mb = serializers.FloatField(allow_null=True)
    swap_used_mb = serializers.FloatField(allow_null=True)
    cpu_percent = serializers.FloatField(allow_null=True)
    load_1 = serializers.FloatField(allow_null=True)
    ollama_rss_mb = serializers.FloatField(allow_null=True)


class GpuPointOutput(serializers.Serializer):
    t = serializers.DateTimeField(help_text="bucket start")
    samples = serializers.IntegerField()
    memory_used_mb = serializers.FloatField(allow_null=True)
    memory_total_mb = serializers.FloatField(allow_null=True)
    utilization_percent = serializers.FloatField(allow_null=True)
    memory_utilization_percent = serializers.FloatField(allow_null=True)
    temperature_c = serializers.FloatField(allow_null=True)
    power_draw_w = serializers.FloatField(allow_null=True)
    power_limit_w = serializers.FloatField(allow_null=True)


class GpuSeriesOutput(serializers.Serializer):
    index = serializers.IntegerField()
    uuid = serializers.CharField()
    name = serializers.CharField()
    points = GpuPointOutput(many=True)


class HostSeriesOutput(serializers.Serializer):
    host = serializers.CharField()
    points = HostPointOutput(many=True)
    gpus = GpuSeriesOutput(many=True)


class SeriesOutput(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    resolution = serializers.IntegerField(help_text="seconds per bucket")
    hosts = HostSeriesOutput(many=True)


class StatsOutput(serializers.Serializer):
    min = serializers.FloatField(allow_null=True)
    avg = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)


class GpuSummaryOutput(serializers.Serializer):
    index = serializers.IntegerField()
    uuid = serializers.CharField()
    name = serializers.CharField()
    samples = serializers.IntegerField()
    memory_total_mb = serializers.FloatField(allow_null=True)
    memory_used_mb = StatsOutput()
    utilization_percent = StatsOutput()
    memory_utilization_percent = StatsOutput()
    temperature_c = StatsOutput()
    power_draw_w = StatsOutput()


class ModelSummaryOutput(serializers.Serializer):
    ollama_url = serializers.CharField()
    model = serializers.CharField()
    samples = serializers.IntegerField(help_text="samples in which it was loaded")
    first = serializers.DateTimeField()
    last = serializers.DateTimeField()
    max_size = serializers.IntegerField(allow_null=True)
    max_size_vram = serializers.IntegerField(allow_null=True)


class HostSummaryOutput(serializers.Serializer):
    host = serializers.CharField()
    samples = serializers.IntegerField()
    first = serializers.DateTimeField()
    last = serializers.DateTimeField()
    ram_used_mb = StatsOutput()
    ram_percent = StatsOutput()
    swap_used_mb = StatsOutput()
    cpu_percent = StatsOutput()
    load_1 = StatsOutput()
    ollama_rss_mb = StatsOutput()
    gpus = GpuSummaryOutput(many=True)
    models = ModelSummaryOutput(many=True)


class SummaryOutput(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    hosts = HostSummaryOutput(many=True)


_HOST_PARAM = OpenApiParameter("host", str, description="only this host")
_WINDOW_PARAMS = [
    OpenApiParameter("since", str, description="ISO 8601 start (inclusive); default until - 1 h"),
    OpenApiParameter("until", str, description="ISO 8601 end (exclusive); default now"),
    _HOST_PARAM,
]


# --- views ------------------------------------------------------------------------------------


class LatestView(APIView):
    """The newest sample of every host (or one), with its GPUs and each Ollama server's models."""

    @extend_schema(parameters=[_HOST_PARAM], responses=LatestOutput)
    def get(self, request):
        host = request.query_params.get("host") or None
        now = timezone.now()
        stale_after = settings.TELEMETRY_INTERVAL * samples.STALE_INTERVALS
        hosts = []
        for sample in samples.latest_samples(host):
            sample.age_seconds = round((now - sample.taken_at).total_seconds(), 1)
            sample.stale = sample.age_seconds > stale_after
            hosts.append(sample)
        return Response(
            LatestOutput({"interval": settings.TELEMETRY_INTERVAL, "hosts": hosts}).data
        )


class SeriesView(APIView):
    """Averages per time bucket for each host and each GPU (empty buckets are omitted)."""

    @extend_schema(
        parameters=[
            *_WINDOW_PARAMS,
            OpenApiParameter("resolution", int, description="seconds per bucket, 1..86400"),
        ],
        responses=SeriesOutput,
    )
    def get(self, request):
        params = SeriesInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = samples.series(
            since=data["since"],
            until=data["until"],
            resolution=data["resolution"],
            host=data.get("host"),
        )
        return Response(SeriesOutput(result).data)


class SummaryView(APIView):
    """Min/avg/max of RAM, CPU and each GPU over a window, and the models seen loaded."""

    @extend_schema(parameters=_WINDOW_PARAMS, responses=SummaryOutput)
    def get(self, request):
        params = WindowInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = samples.summary(since=data["since"], until=data["until"], host=data.get("host"))
        return Response(SummaryOutput(result).data)


# --- per-request figures and throughput -------------------------------------------------------
#
# Staff see every user's requests and may narrow them with ``user``; everyone else sees only
# their own requests, and a ``user`` other than themselves is refused with 403 (rather than
# silently ignored, so that a script written for a staff account fails loudly).

MODEL_HELP = "only this model, exactly as requested (e.g. llama3.2:3b)"
HOST_HELP = "only this Ollama server (its URL, as in OLLAMA_URLS)"
USER_HELP = (
    "staff only: only this user's requests, by id or email; others get 403 unless it is themselves"
)


class RequestFilterInput(serializers.Serializer):
    since = QueryDateTimeField(required=False, help_text="ISO 8601 start (inclusive)")
    until = QueryDateTimeField(required=False, help_text="ISO 8601 end (exclusive)")
    model = serializers.CharField(required=False, max_length=200, help_text=MODEL_HELP)
    host = serializers.CharField(required=False, max_length=300, help_text=HOST_HELP)
    user = serializers.CharField(required=False, max_length=254, help_text=USER_HELP)

    def validate_user(self, value: str):
        value = value.strip()
        if value.isdigit() and int(value) > 0:
            return ("id", int(value))
        if "@" in value:
            return ("email", value.lower())
        raise serializers.ValidationError(
            "Give a user id (a positive integer) or an email address."
        )

    def validate(self, attrs):
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since >= until:
            raise serializers.ValidationError({"since": ["since must be earlier than until."]})
        return attrs


class RequestListInput(RequestFilterInput):
    status = serializers.ChoiceField(
        choices=Message.Status.values,
        required=False,
        help_text="only replies with this status",
        error_messages={
            "invalid_choice": (
                '"{input}" is not a status; use one of ' + ", ".join(Message.Status.values) + "."
            )
        },
    )


class ThroughputInput(RequestFilterInput):
    since = QueryDateTimeField(
        required=False, help_text="ISO 8601 start (inclusive); default: one hour before until"
    )
    until = QueryDateTimeField(required=False, help_text="ISO 8601 end (exclusive); default: now")
    resolution = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=86400,
        help_text=(
            "bucket width of the series in seconds (1..86400); default: 60, or wider to keep "
            f"about {THROUGHPUT_POINTS} points"
        ),
    )

    def validate(self, attrs):
        attrs = _window(super().validate(attrs))
        window = attrs["window_seconds"]
        resolution = attrs.get("resolution")
        if resolution is None:
            resolution = max(60, math.ceil(window / THROUGHPUT_POINTS))
        _check_points(window, resolution)
        attrs["resolution"] = resolution
        return attrs


def _filters(request, data: dict) -> requests.RequestFilters:
    return requests.RequestFilters(
        model=data.get("model") or None,
        host=data.get("host") or None,
        status=data.get("status") or None,
        since=data.get("since"),
        until=data.get("until"),
        user_id=_requested_user(request.user, data.get("user")),
    )


def _requested_user(viewer, ref: tuple[str, int | str] | None) -> int | None:
    """The user id of the ``user`` filter, after the permission check (see above)."""
    if ref is None:
        return None
    kind, value = ref
    if not viewer.is_staff:
        own = value == viewer.pk if kind == "id" else value == viewer.email.lower()
        if not own:
            raise PermissionDenied(
                "Only staff can see other users' requests; leave out user to see your own."
            )
        return viewer.pk
    lookup = {"pk": value} if kind == "id" else {"email__iexact": value}
    user_id = get_user_model().objects.filter(**lookup).values_list("pk", flat=True).first()
    if user_id is None:
        what = f"id {value}" if kind == "id" else f"email {value}"
        raise ValidationError({"user": [f"No user with {what}."]})
    return user_id


class GpuUsageOutput(serializers.Serializer):
    index = serializers.IntegerField(required=False, allow_null=True)
    uuid = serializers.CharField(required=False, allow_null=True)
    name = serializers.CharField(required=False, allow_null=True)
    memory_used_mb = serializers.FloatField(required=False, allow_null=True)
    memory_total_mb = serializers.FloatField(required=False, allow_null=True)
    utilization_percent = serializers.FloatField(required=False, allow_null=True)


class RamUsageOutput(serializers.Serializer):
    used_mb = serializers.FloatField(required=False, allow_null=True)
    total_mb = serializers.FloatField(required=False, allow_null=True)
    available_mb = serializers.FloatField(required=False, allow_null=True)
    percent = serializers.FloatField(required=False, allow_null=True)
    error = serializers.CharField(required=False, allow_null=True)


class GpuDeltaOutput(serializers.Serializer):
    index = serializers.IntegerField(required=False, allow_null=True)
    uuid = serializers.CharField(required=False, allow_null=True)
    memory_used_mb_before = serializers.FloatField(required=False, allow_null=True)
    memory_used_mb_after = serializers.FloatField(required=False, allow_null=True)
    memory_used_mb_delta = serializers.FloatField(required=False, allow_null=True)
    utilization_percent_before = serializers.FloatField(required=False, allow_null=True)
    utilization_percent_after = serializers.FloatField(required=False, allow_null=True)
    utilization_percent_delta = serializers.FloatField(required=False, allow_null=True)


class ResourceDeltaOutput(serializers.Serializer):
    gpu = GpuDeltaOutput(many=True, required=False)
    gpu_memory_used_mb_delta = serializers.FloatField(required=False, allow_null=True)
    ram_used_mb_delta = serializers.FloatField(required=False, allow_null=True)
    ram_percent_delta = serializers.FloatField(required=False, allow_null=True)
    elapsed_seconds = serializers.FloatField(required=False, allow_null=True)


class RequestFigureOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="the assistant message")
    conversation = serializers.UUIDField()
    user = serializers.IntegerField(help_text="the conversation's owner")
    user_email = serializers.EmailField()
    model = serializers.CharField()
    host = serializers.CharField(help_text="the Ollama server that answered")
    status = serializers.ChoiceField(choices=Message.Status.values)
    error_code = serializers.CharField()
    done_reason = serializers.CharField()
    created_at = serializers.DateTimeField(help_text="when the generation got its slot")
    completed_at = serializers.DateTimeField(allow_null=True)
    tokens_per_second = serializers.FloatField(
        allow_null=True, help_text="Ollama's eval_count / eval_duration"
    )
    prompt_tokens_per_second = serializers.FloatField(allow_null=True)
    time_to_first_token_seconds = serializers.FloatField(
        allow_null=True, help_text="from the request to Ollama to the first token"
    )
    queue_wait_seconds = serializers.FloatField(
        allow_null=True, help_text="time spent waiting at the gateway's gate"
    )
    eval_count = serializers.IntegerField(allow_null=True)
    prompt_eval_count = serializers.IntegerField(allow_null=True)
    total_duration_seconds = serializers.FloatField(allow_null=True)
    load_duration_seconds = serializers.FloatField(
        allow_null=True, help_text="model load time: well above zero means a (re)load"
    )
    eval_duration_seconds = serializers.FloatField(allow_null=True)
    in_flight_at_start = serializers.IntegerField(
        allow_null=True, help_text="generations in flight on the host, this one included"
    )
    gpu_usage_before = GpuUsageOutput(many=True, help_text="empty: no GPU figures")
    gpu_usage_after = GpuUsageOutput(many=True)
    ram_usage_before = RamUsageOutput(allow_null=True)
    ram_usage_after = RamUsageOutput(allow_null=True)
    resource_delta = ResourceDeltaOutput(allow_null=True)
    gpu_memory_used_mb_delta = serializers.FloatField(
        allow_null=True, help_text="resource_delta's sum over the GPUs"
    )
    ram_used_mb_delta = serializers.FloatField(allow_null=True)


class FigureStatsOutput(serializers.Serializer):
    count = serializers.IntegerField(help_text="requests with this figure")
    avg = serializers.FloatField(allow_null=True)
    min = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True, help_text="median; null: see notes")


class ThroughputGroupOutput(serializers.Serializer):
    requests = serializers.IntegerField(help_text="completed requests")
    eval_tokens = serializers.IntegerField(help_text="tokens generated")
    tokens_per_second = FigureStatsOutput()
    time_to_first_token_seconds = FigureStatsOutput()
    queue_wait_seconds = FigureStatsOutput()


class ThroughputModelOutput(ThroughputGroupOutput):
    model = serializers.CharField()
    statuses = serializers.DictField(
        child=serializers.IntegerField(), help_text="requests per status, failures included"
    )


class ThroughputLevelOutput(ThroughputGroupOutput):
    in_flight_at_start = serializers.IntegerField(
        allow_null=True, help_text="concurrency level: generations in flight when it started"
    )


class ThroughputPointOutput(serializers.Serializer):
    t = serializers.DateTimeField(help_text="bucket start")
    requests = serializers.IntegerField()
    eval_tokens = serializers.IntegerField()
    tokens_per_second = serializers.FloatField(allow_null=True, help_text="average")
    time_to_first_token_seconds = serializers.FloatField(allow_null=True, help_text="average")
    queue_wait_seconds = serializers.FloatField(allow_null=True, help_text="average")


class ThroughputSeriesOutput(serializers.Serializer):
    model = serializers.CharField()
    points = ThroughputPointOutput(many=True)


class ThroughputOutput(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    resolution = serializers.IntegerField(help_text="seconds per bucket of the series")
    user = serializers.IntegerField(
        allow_null=True, help_text="whose requests: null means every user's (staff)"
    )
    overall = ThroughputGroupOutput()
    by_model = ThroughputModelOutput(many=True)
    by_concurrency = ThroughputLevelOutput(many=True)
    series = ThroughputSeriesOutput(many=True)
    notes = serializers.ListField(child=serializers.CharField())


class RequestPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class RequestListView(generics.ListAPIView):
    """Every assistant reply with its figures, newest first (staff: every user's; others: their
    own). Paginated: `page`, `page_size` (at most 500)."""

    queryset = Message.objects.none()  # the rows come from monitoring.selectors.requests
    serializer_class = RequestFigureOutput
    pagination_class = RequestPagination

    @extend_schema(parameters=[RequestListInput])
    def get(self, request, *args, **kwargs):
        params = RequestListInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        filters = _filters(request, params.validated_data)
        page = self.paginate_queryset(requests.request_rows(request.user, filters))
        assert page is not None  # pagination_class is set
        rows = [requests.request_row(message) for message in page]
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)


class ThroughputView(APIView):
    """Tokens/s, time to first token and queue wait of the completed replies in a window
    (default the last hour): overall, by model, by concurrency level, and per model over time."""

    @extend_schema(parameters=[ThroughputInput], responses=ThroughputOutput)
    def get(self, request):
        params = ThroughputInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = requests.throughput(
            request.user, _filters(request, data), resolution=data["resolution"]
        )
        return Response(ThroughputOutput(result).data)


# --- who is on the GPU now --------------------------------------------------------------------


class NowView(APIView):
    """Per Ollama host, the generations running (user, model, since when, tokens so far,
    tokens/s) and the queue in its order of service. Staff see every user's; everyone else their
    own, and how many of other users' run and wait."""

    @extend_schema(responses=NowOutput)
    def get(self, request):
        view = async_to_sync(now.full)()
        return Response(
            NowOutput(now.for_viewer(view, request.user.pk, request.user.is_staff)).data
        )


class NowCancelView(APIView):
    """Staff: stop the generation of any user's conversation, running or queued, whichever
    process and transport runs it. The reply is saved `cancelled` with the code
    `stopped_by_staff`, and the user's client is told so. Answers once the stop is sent."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        operation_id="cancel_generation",
        request=NowCancelInput,
        responses={202: NowCancelOutput, 404: ErrorOutput, 409: ErrorOutput},
    )
    def post(self, request):
        data = NowCancelInput(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = data.validated_data["conversation"]
        here = async_to_sync(cancels.stop_by_staff)(conversation, request.user.email)
        return Response(
            {
                "conversation": conversation,
                "here": here,
                "detail": "Stopped." if here else "The stop was sent to the process running it.",
            },
            status=status.HTTP_202_ACCEPTED,
        )
