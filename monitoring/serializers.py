"""Output shapes shared by the REST API and the WebSocket push (one shape for both, so the
dashboard renders a pushed sample and a polled one with the same code)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from monitoring.models import GpuSample, HostSample, LoadedModelSample


class GpuSampleOutput(serializers.ModelSerializer):
    class Meta:
        model = GpuSample
        fields = [
            "index",
            "uuid",
            "name",
            "memory_used_mb",
            "memory_total_mb",
            "utilization_percent",
            "memory_utilization_percent",
            "temperature_c",
            "power_draw_w",
            "power_limit_w",
            "fan_speed_percent",
            "error",
        ]
        read_only_fields = fields


class LoadedModelOutput(serializers.ModelSerializer):
    name = serializers.CharField(source="model")

    class Meta:
        model = LoadedModelSample
        fields = ["name", "size", "size_vram", "expires_at", "context_length"]
        read_only_fields = fields


class OllamaServerOutput(serializers.Serializer):
    url = serializers.CharField()
    available = serializers.BooleanField()
    reason = serializers.CharField(allow_null=True)
    elapsed_ms = serializers.FloatField(allow_null=True)
    models = LoadedModelOutput(many=True)


class HostSampleOutput(serializers.ModelSerializer):
    gpus = GpuSampleOutput(many=True, read_only=True)
    ollama = serializers.SerializerMethodField(
        help_text="One entry per Ollama server this machine asked, with the models it had loaded."
    )

    class Meta:
        model = HostSample
        fields = [
            "id",
            "host",
            "taken_at",
            "ram_total_mb",
            "ram_used_mb",
            "ram_available_mb",
            "ram_percent",
            "swap_total_mb",
            "swap_used_mb",
            "swap_percent",
            "cpu_count",
            "cpu_percent",
            "cpu_per_core",
            "load_1",
            "load_5",
            "load_15",
            "ollama_rss_mb",
            "ollama_process_count",
            "gpu_available",
            "gpu_reason",
            "gpu_driver_version",
            "gpus",
            "ollama",
            "notes",
        ]
        read_only_fields = fields

    @extend_schema_field(OllamaServerOutput(many=True))
    def get_ollama(self, sample: HostSample) -> list[dict]:
        by_url: dict[str, list[LoadedModelSample]] = {}
        for model in sample.loaded_models.all():
            by_url.setdefault(model.ollama_url, []).append(model)
        servers = []
        for status in sample.ollama_status or []:
            if not isinstance(status, dict):
                continue
            url = status.get("url") or ""
            servers.append(
                {
                    "url": url,
                    "available": bool(status.get("available")),
                    "reason": status.get("reason"),
                    "elapsed_ms": status.get("elapsed_ms"),
                    "models": LoadedModelOutput(by_url.get(url, []), many=True).data,
                }
            )
        return servers


class LatestHostOutput(HostSampleOutput):
    age_seconds = serializers.FloatField(help_text="seconds since the sample was taken")
    stale = serializers.BooleanField(
        help_text="no newer sample for three sampling intervals: that machine's worker is down?"
    )

    class Meta(HostSampleOutput.Meta):
        fields = [*HostSampleOutput.Meta.fields, "age_seconds", "stale"]
        read_only_fields = fields


class LatestOutput(serializers.Serializer):
    interval = serializers.FloatField(help_text="TELEMETRY_INTERVAL, seconds")
    hosts = LatestHostOutput(many=True)


# --- who is on the GPU now (GET /api/monitoring/now/ and the socket's monitoring.now) --------


class NowRunningOutput(serializers.Serializer):
    conversation = serializers.UUIDField(allow_null=True)
    message = serializers.IntegerField(
        allow_null=True, help_text="the reply being written (null for the moment it is created)"
    )
    user = serializers.IntegerField(allow_null=True)
    user_email = serializers.CharField()
    model = serializers.CharField()
    since = serializers.DateTimeField(help_text="when it got its slot")
    seconds = serializers.FloatField(help_text="seconds since then")
    tokens = serializers.IntegerField(help_text="tokens streamed so far (as of the last save)")
    tokens_per_second = serializers.FloatField(
        allow_null=True, help_text="tokens over the time from the slot to the last save"
    )


class NowQueuedOutput(serializers.Serializer):
    conversation = serializers.UUIDField(allow_null=True)
    user = serializers.IntegerField(allow_null=True)
    user_email = serializers.CharField()
    model = serializers.CharField()
    since = serializers.DateTimeField(help_text="when it joined the queue")
    waiting_seconds = serializers.FloatField()
    position = serializers.IntegerField(help_text="1-based, in the order of service")
    estimated_wait_seconds = serializers.FloatField(
        allow_null=True, help_text="from the model's recent replies on the host; null: no history"
    )


class NowHostOutput(serializers.Serializer):
    host = serializers.CharField(help_text="the Ollama URL")
    max_concurrency = serializers.IntegerField()
    max_queue = serializers.IntegerField()
    running = NowRunningOutput(many=True)
    queue = NowQueuedOutput(many=True)
    others_running = serializers.IntegerField(
        help_text="other users' running generations, not listed (0 for staff, who see all)"
    )
    others_queued = serializers.IntegerField(help_text="other users' queued requests, not listed")


class NowOutput(serializers.Serializer):
    at = serializers.DateTimeField(help_text="the server's time of this view")
    staff = serializers.BooleanField(help_text="true: every user's entries are listed")
    hosts = NowHostOutput(many=True)


class NowCancelInput(serializers.Serializer):
    conversation = serializers.UUIDField(help_text="the conversation whose generation to stop")


class NowCancelOutput(serializers.Serializer):
    conversation = serializers.UUIDField()
    here = serializers.BooleanField(
        help_text="true: stopped by this process; false: sent to the process that runs it"
    )
    detail = serializers.CharField()
