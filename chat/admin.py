from django.contrib import admin

from chat.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = readonly_fields = (
        "role",
        "status",
        "short_content",
        "model",
        "eval_count",
        "tokens_per_second",
    )
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


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "conversation",
        "role",
        "status",
        "model",
        "tokens_per_second",
        "created_at",
    ]
    list_filter = ["role", "status", "model", "ollama_host"]
    search_fields = ["content", "conversation__title", "conversation__owner__email"]
    date_hierarchy = "created_at"
    list_select_related = ["conversation"]

    def get_readonly_fields(self, request, obj=None):
        # Generated text and its measurements are a record, not something to edit.
        return [field.name for field in Message._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
