from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from chat.models import Conversation, Message
from chat.options import InvalidOptions, validate_options
from chat.services import ChatInput as ChatRequest
from chat.services import message_metrics


class OptionsField(serializers.JSONField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            return validate_options(value)
        except InvalidOptions as exc:
            raise serializers.ValidationError(exc.errors, code="invalid_options") from None


class StrictCharField(serializers.CharField):
    """Text only: DRF's CharField would take 5 or 1.5 for "5" or "1.5"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ChatInput(serializers.Serializer):
    """A chat message on every transport (REST, SSE, the WebSocket's chat.send).

    Shapes and types only: whether the text is empty or too long is chat.services'
    prepare_chat() to say, with `empty_message` or `message_too_long`.
    """

    message = StrictCharField(allow_blank=True, trim_whitespace=False)
    conversation = serializers.UUIDField(required=False, allow_null=True)
    model = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=200)
    system = StrictCharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False, max_length=20_000
    )
    options = OptionsField(required=False, allow_null=True)
    attachments = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        allow_null=True,
        max_length=10,
        help_text="Upload ids",
    )


def parse_chat_input(data) -> ChatRequest:
    """Validate a chat message's fields (raises DRF's ValidationError) for generate()."""
    form = ChatInput(data=data)
    form.is_valid(raise_exception=True)
    values = form.validated_data
    return ChatRequest(
        message=values["message"],
        conversation_id=values.get("conversation"),
        model=values.get("model") or None,
        system=values.get("system"),
        options=values.get("options") or {},
        attachments=values.get("attachments") or [],
    )


class ConversationInput(serializers.ModelSerializer):
    options = OptionsField(required=False)
    context_exchanges = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=100
    )

    class Meta:
        model = Conversation
        fields = ["title", "model", "system_prompt", "options", "context_exchanges"]
        extra_kwargs = {"system_prompt": {"trim_whitespace": False, "max_length": 20_000}}


class ConversationOutput(serializers.ModelSerializer):
    message_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Conversation
        fields = [
            "id",
            "title",
            "model",
            "system_prompt",
            "options",
            "context_exchanges",
            "source",
            "created_at",
            "updated_at",
            "message_count",
        ]
        read_only_fields = fields


class MessageOutput(serializers.ModelSerializer):
    metrics = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "content",
            "status",
            "model",
            "created_at",
            "completed_at",
            "error_code",
            "error",
            "attachments",
            "metrics",
        ]
        read_only_fields = fields

    def get_metrics(self, message: Message) -> dict | None:
        if message.role != Message.Role.ASSISTANT or message.status == Message.Status.STREAMING:
            return None
        return message_metrics(message)


class LoadModelInput(serializers.Serializer):
    model = serializers.CharField(max_length=200)
    keep_alive = serializers.CharField(required=False, max_length=20)


class PullModelInput(serializers.Serializer):
    model = serializers.CharField(max_length=200)
    host = serializers.CharField(required=False, max_length=300)
    stream = serializers.BooleanField(required=False, default=True)

    def validate_host(self, value: str) -> str:
        value = value.rstrip("/")
        if value not in settings.OLLAMA_URLS:
            raise serializers.ValidationError("Not one of the configured Ollama hosts.")
        return value


class ChatReplyOutput(serializers.Serializer):
    """POST /api/chat/: the reply, Ollama's raw figures, derived figures and resources."""

    response = serializers.CharField()
    conversation = serializers.UUIDField()
    message = serializers.IntegerField()
    model = serializers.CharField()
    done_reason = serializers.CharField(allow_null=True)
    total_duration = serializers.IntegerField(allow_null=True, help_text="nanoseconds")
    load_duration = serializers.IntegerField(allow_null=True, help_text="nanoseconds")
    prompt_eval_count = serializers.IntegerField(allow_null=True)
    prompt_eval_duration = serializers.IntegerField(allow_null=True, help_text="nanoseconds")
    eval_count = serializers.IntegerField(allow_null=True)
    eval_duration = serializers.IntegerField(allow_null=True, help_text="nanoseconds")
    tokens_per_second = serializers.FloatField(allow_null=True)
    prompt_tokens_per_second = serializers.FloatField(allow_null=True)
    total_tokens = serializers.IntegerField(allow_null=True)
    total_duration_seconds = serializers.FloatField(allow_null=True)
    load_duration_seconds = serializers.FloatField(allow_null=True)
    prompt_eval_duration_seconds = serializers.FloatField(allow_null=True)
    eval_duration_seconds = serializers.FloatField(allow_null=True)
    time_to_first_token_seconds = serializers.FloatField(allow_null=True)
    queue_wait_seconds = serializers.FloatField(allow_null=True)
    in_flight_at_start = serializers.IntegerField(allow_null=True)
    gpu_usage_before = serializers.JSONField(allow_null=True)
    gpu_usage_after = serializers.JSONField(allow_null=True)
    ram_usage_before = serializers.JSONField(allow_null=True)
    ram_usage_after = serializers.JSONField(allow_null=True)
    resource_delta = serializers.JSONField(allow_null=True)


class SimpleChatOutput(serializers.Serializer):
    response = serializers.CharField()
    conversation = serializers.UUIDField()


class ErrorOutput(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class ModelOutput(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    modified_at = serializers.CharField(allow_null=True)
    digest = serializers.CharField(allow_null=True)
    details = serializers.JSONField(allow_null=True)
    hosts = serializers.ListField(child=serializers.CharField())
    loaded = serializers.BooleanField()


class ModelListOutput(serializers.Serializer):
    models = ModelOutput(many=True)
    unreachable = serializers.ListField(child=serializers.DictField())


class RunningModelsOutput(serializers.Serializer):
    models = serializers.ListField(child=serializers.DictField())


class LoadModelOutput(serializers.Serializer):
    model = serializers.CharField()
    host = serializers.CharField()
    done_reason = serializers.CharField(allow_null=True)
    seconds = serializers.FloatField(help_text="Time the load took, measured by the gateway")
