from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Conversation(models.Model):
    class Source(models.TextChoices):
        CHAT = "chat", "Chat (web, REST, WebSocket)"
        OLLAMA = "ollama", "Ollama-compatible API"
        OPENAI = "openai", "OpenAI-compatible API"
        # Made by monitoring's load test: hidden from the conversation list unless asked for.
        LOADTEST = "loadtest", "Load test"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="Blank: the server default.")
    system_prompt = models.TextField(blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Default generation options.")
    context_exchanges = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Past exchanges sent with each message; blank: default."
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CHAT)
    # The generation that holds the conversation (one at a time): since when, and the web
    # process running it (see chat.lifecycle), so that a dead process's claim is let go.
    generating_since = models.DateTimeField(null=True, blank=True, editable=False)
    generating_process = models.UUIDField(null=True, blank=True, editable=False)
    # The branch shown and continued: the path from the first message to this one. Every
    # message is kept; regenerating or editing adds a sibling and moves the leaf to it.
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"], name="chat_conv_owner_recent")]
        # Granted in the admin to an account that runs load tests or a trusted service.
        permissions = [("chat_without_limits", "Can chat without the per-user limits")]
        constraints = [
            models.CheckConstraint(
                condition=Q(context_exchanges__isnull=True) | Q(context_exchanges__lte=100),
                name="chat_conv_context_exchanges_range",
            ),
            models.CheckConstraint(
                condition=Q(source__in=["chat", "ollama", "openai", "loadtest"]),
                name="chat_conv_source_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # The message this one answers or follows (null: the first of its conversation). Siblings,
    # children of one parent, are versions of one place in the conversation (chat.tree).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    model = models.CharField(max_length=200, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Ollama options sent.")
    # What was attached, as it was then: the conversation stays readable after a delete.
    attachments = models.JSONField(default=list, blank=True)
    ollama_host = models.CharField(max_length=300, blank=True)

    # Ollama's own figures (durations in nanoseconds), as it reported them.
    done_reason = models.CharField(max_length=20, blank=True)
    total_duration = models.BigIntegerField(null=True, blank=True)
    load_duration = models.BigIntegerField(null=True, blank=True)
    prompt_eval_count = models.IntegerField(null=True, blank=True)
    prompt_eval_duration = models.BigIntegerField(null=True, blank=True)
    eval_count = models.IntegerField(null=True, blank=True)
    eval_duration = models.BigIntegerField(null=True, blank=True)
    # Derived and measured by the gateway.
    tokens_per_second = models.FloatField(null=True, blank=True)
    prompt_tokens_per_second = models.FloatField(null=True, blank=True)
    time_to_first_token = models.FloatField(
        null=True, blank=True, help_text="Seconds from the request to Ollama to the first token."
    )
    queue_wait = models.FloatField(
        null=True, blank=True, help_text="Seconds spent waiting at the gate."
    )
    in_flight_at_start = models.PositiveIntegerField(null=True, blank=True)
    # Chunks with text streamed so far (Ollama sends about one token each), saved with each
    # flush and at the end: what "who is on the GPU now" shows while the reply streams.
    streamed_tokens = models.PositiveIntegerField(default=0, db_default=0)
    resources = models.JSONField(
        null=True, blank=True, help_text="GPU and RAM before and after, and the delta."
    )
    context = models.JSONField(
        null=True,
        blank=True,
        help_text="What the model was sent: messages sent and dropped, tokens, the window.",
    )

    # The web process generating this reply while it is `streaming` (see WebProcess).
    process = models.UUIDField(null=True, blank=True, db_index=True)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="chat_msg_conv_created"),
            models.Index(fields=["status", "updated_at"], name="chat_msg_status_updated"),
            # The per-request figures of monitoring read replies by time.
            models.Index(fields=["role", "created_at"], name="chat_msg_role_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(role__in=["user", "assistant"]), name="chat_msg_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(parent__isnull=True) | Q(parent__lt=F("id")),
                name="chat_msg_parent_before",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=["streaming", "complete", "cancelled", "failed", "interrupted"]
                ),
                name="chat_msg_status_valid",
            ),
            # What a person typed is never "streaming" or "failed".
            models.CheckConstraint(
                condition=~Q(role="user") | Q(status="complete"),
                name="chat_msg_user_complete",
            ),
            models.CheckConstraint(
                condition=~Q(status="failed") | ~Q(error_code=""),
                name="chat_msg_failed_has_code",
            ),
            models.CheckConstraint(
                condition=(
                    (Q(eval_count__isnull=True) | Q(eval_count__gte=0))
                    & (Q(prompt_eval_count__isnull=True) | Q(prompt_eval_count__gte=0))
                    & (Q(queue_wait__isnull=True) | Q(queue_wait__gte=0))
                    & (Q(time_to_first_token__isnull=True) | Q(time_to_first_token__gte=0))
                ),
                name="chat_msg_figures_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:50]}"

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_eval_count is None and self.eval_count is None:
            return None
        return (self.prompt_eval_count or 0) + (self.eval_count or 0)


class WebProcess(models.Model):
    """A web process that generates replies, alive while its heartbeat is recent.

    A process that stops beating (killed, crashed, its machine gone) is dead: another process
    marks its `streaming` replies `interrupted` (chat/lifecycle.py). The clock is the
    database's, so machines whose clocks differ agree on who is dead.
    """

    id = models.UUIDField(primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class ShareLink(models.Model):
    """A read-only link to one branch of a conversation, frozen when it was made (chat.shares).

    Only the SHA-256 of the token is stored: the token is in the link the owner hands out,
    and the table (a backup, the admin) does not give it away. The messages are a snapshot,
    so what is said in the conversation after sharing stays private.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="share_links"
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The token's first characters, to tell one's links apart in a list (not enough to use).
    token_prefix = models.CharField(max_length=8, editable=False)
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    snapshot = models.JSONField(default=list, help_text="The branch shared: role, content, ...")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.token_prefix}… · {self.title or self.conversation_id}"


class UsageCarry(models.Model):
    """Tokens of a user's replies of one day that were deleted, still counted by that day's
    budget (chat.budgets): deleting a conversation must not give its tokens back.

    The day is the calendar day in TIME_ZONE of chat.budgets.day_bounds. Only the day's own
    replies are carried (an older day's budget no longer matters), so a user has one row at
    most: their last day with a deletion."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_carries"
    )
    day = models.DateField()
    tokens = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "deleted usage"
        verbose_name_plural = "deleted usage"
        ordering = ["-day", "user_id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="chat_usagecarry_user_day"),
            models.CheckConstraint(
                condition=Q(tokens__gte=0), name="chat_usagecarry_tokens_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} · {self.day}: {self.tokens} tokens"
