from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chat.actions import ActionInput as ActionRequest
from chat.models import Conversation, Message
from chat.options import InvalidOptions, keep_alive_seconds, validate_options
from chat.services import ChatInput as ChatRequest
from chat.services import message_metrics
from core.errors import AppError


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
    # Marks the conversation a message starts (a load test's, hidden from the conversation
    # list unless asked for); every other source is the transport's own to set.
    source = serializers.ChoiceField(  # type: ignore[assignment]  # a field, not Field.source
        choices=[Conversation.Source.LOADTEST.value],
        required=False,
        allow_null=True,
        help_text="`loadtest`: the new conversation is a load test's (hidden from the list).",
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
        source=values.get("source") or None,
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
    message_count = serializers.SerializerMethodField()

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

    def get_message_count(self, conversation: Conversation) -> int:
        # Lists annotate the count (chat.selectors.conversations_of); a single row counts.
        annotated = getattr(conversation, "message_count", None)
        return annotated if annotated is not None else conversation.messages.count()


class MessageOutput(serializers.ModelSerializer):
    """A message with its place in the tree: `siblings` are the versions at its place (itself
    among them, oldest first); the view puts the conversation's tree in the context."""

    metrics = serializers.SerializerMethodField()
    siblings = serializers.SerializerMethodField()
    sibling_index = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id",
            "parent",
            "siblings",
            "sibling_index",
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

    def _siblings(self, message: Message) -> list[int]:
        tree = self.context.get("tree")
        return (
            tree.siblings(message.pk) if tree is not None and message.pk in tree else [message.pk]
        )

    def get_siblings(self, message: Message) -> list[int]:
        return self._siblings(message)

    def get_sibling_index(self, message: Message) -> int:
        return self._siblings(message).index(message.pk)


class ActionInput(serializers.Serializer):
    """POST /api/messages/<id>/regenerate|edit|continue/. `message` (the new text) is for an
    edit, which also takes `attachments` (left out: the original's are kept)."""

    message = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    attachments = serializers.ListField(
        child=serializers.UUIDField(), required=False, allow_null=True, max_length=10
    )
    model = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=200)
    options = OptionsField(required=False, allow_null=True)


class BranchInput(serializers.Serializer):
    message = serializers.IntegerField(help_text="A message of the branch to show")


def parse_action(kind: str, message_id: int, data) -> ActionRequest:
    """Validate an action's fields (raises DRF's ValidationError)."""
    form = ActionInput(data=data)
    form.is_valid(raise_exception=True)
    values = form.validated_data
    if kind == "edit" and "message" not in values:
        raise serializers.ValidationError({"message": ["This field is required."]}, "required")
    return ActionRequest(
        kind=kind,  # type: ignore[arg-type]  # one of the three routes
        message_id=message_id,
        text=values.get("message"),
        attachments=values.get("attachments"),
        model=values.get("model") or None,
        options=values.get("options") or {},
    )


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "number"}]})
class KeepAliveField(serializers.Field):
    """Ollama's keep_alive: a duration string ("5m", "1h30m") or a number of seconds, checked
    by chat.options (the value goes to Ollama as the client wrote it)."""

    def to_internal_value(self, data):
        try:
            keep_alive_seconds(data)
        except AppError as exc:
            raise serializers.ValidationError(exc.detail, code=exc.code) from None
        return data

    def to_representation(self, value):
        return value


class LoadModelInput(serializers.Serializer):
    model = serializers.CharField(max_length=200)
    keep_alive = KeepAliveField(
        required=False,
        help_text=(
            'How long the model stays loaded: "5m", "1h" or seconds, between 1m and '
            "OLLAMA_KEEP_ALIVE_MAX (1h by default); 0 (unload), negative (forever) and longer "
            "are for staff"
        ),
    )


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


class TokenUsageOutput(serializers.Serializer):
    """Today's tokens against the daily budget (chat/budgets.py)."""

    day = serializers.DateField(help_text="Today, in the server's TIME_ZONE.")
    tokens = serializers.IntegerField(help_text="Tokens used today.")
    budget = serializers.IntegerField(
        allow_null=True, help_text="Tokens allowed per day; null: unlimited."
    )
    resets_at = serializers.DateTimeField(help_text="The next midnight, when the budget resets.")
    fraction = serializers.FloatField(
        allow_null=True, help_text="tokens / budget (may exceed 1); null: unlimited."
    )


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
