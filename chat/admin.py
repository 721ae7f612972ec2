from django.contrib import admin

from chat import services
from chat.models import Conversation, Message, ShareLink, UsageCarry
from config.admin_display import rounded

#: Float measurements, shown rounded (the rest of a message's fields as they are).
ROUNDED = {
    "tokens_per_second": rounded("tokens_per_second", 1, " tok/s", "tokens/s"),
    "prompt_tokens_per_second": rounded("prompt_tokens_per_second", 1, " tok/s", "prompt tokens/s"),
    "time_to_first_token": rounded("time_to_first_token", 2, " s", "time to first token"),
    "queue_wait": rounded("queue_wait", 2, " s", "queue wait"),
}


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = readonly_fields = (
        "role",
        "status",
        "short_content",
        "model",
        "eval_count",
        "tokens_per_second_rounded",
    )
    tokens_per_second_rounded = ROUNDED["tokens_per_second"]
    can_delete = False
    show_change_link = True

    @admin.display(description="content")
    def short_content(self, message: Message) -> str:
        return message.content[:120]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "model", "source", "updated_at"]
    list_filter = ["source", "model"]
    search_fields = ["title", "owner__email"]
    date_hierarchy = "updated_at"
    readonly_fields = ["id", "created_at", "updated_at"]
    list_select_related = ["owner"]
    inlines = [MessageInline]

    # Deletions go through chat.services, which keeps the day's deleted tokens counted by the
    # daily budget (the admin's own delete would call QuerySet.delete()).
    def delete_model(self, request, obj: Conversation) -> None:
        services.delete_conversations(Conversation.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset) -> None:
        services.delete_conversations(queryset)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "conversation",
        "role",
        "status",
        "model",
        "tokens_per_second_rounded",
        "created_at",
    ]
    list_filter = ["role", "status", "model", "ollama_host"]
    search_fields = ["content", "conversation__title", "conversation__owner__email"]
    date_hierarchy = "created_at"
    list_select_related = ["conversation"]
    tokens_per_second_rounded = ROUNDED["tokens_per_second"]
    prompt_tokens_per_second_rounded = ROUNDED["prompt_tokens_per_second"]
    time_to_first_token_rounded = ROUNDED["time_to_first_token"]
    queue_wait_rounded = ROUNDED["queue_wait"]

    def get_fields(self, request, obj=None):
        return [
            f"{field.name}_rounded" if field.name in ROUNDED else field.name
            for field in Message._meta.fields
        ]

    def get_readonly_fields(self, request, obj=None):
        # Generated text and its measurements are a record, not something to edit.
        return self.get_fields(request, obj)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # Read-only: the page offers Close, not Save buttons that would save nothing.
        return False

    # A message goes with the replies under it; through chat.services, like a conversation's.
    def delete_model(self, request, obj: Message) -> None:
        services.delete_messages(Message.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset) -> None:
        services.delete_messages(queryset)


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    """Share links, read-only (the token itself is never stored: only its hash and prefix);
    deleting one here revokes it."""

    list_display = ["token_prefix", "title", "conversation", "owner", "created_at"]
    search_fields = ["title", "conversation__title", "conversation__owner__email"]
    date_hierarchy = "created_at"
    list_select_related = ["conversation__owner"]
    readonly_fields = ["conversation", "token_prefix", "title", "model", "snapshot", "created_at"]
    exclude = ["token_hash"]

    @admin.display(description="owner", ordering="conversation__owner__email")
    def owner(self, link: ShareLink) -> str:
        return link.conversation.owner.email

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageCarry)
class UsageCarryAdmin(admin.ModelAdmin):
    """Tokens of deleted replies still counted by their day's budget: read-only (an edit would
    change a user's usage behind the rules; their own budget is the user's "Limits"). Deleting
    a row gives those tokens back, on purpose; it also lets a user with rows be deleted."""

    list_display = ["user", "day", "tokens"]
    search_fields = ["user__email"]
    date_hierarchy = "day"
    list_select_related = ["user"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
