from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.contrib.auth.models import Group, Permission

from accounts import services
from accounts.models import ApiKey, GroupPolicy, User
from config.admin_display import NoSaveMixin

admin.site.site_header = "Ollama Gateway"
admin.site.site_title = "Ollama Gateway admin"
admin.site.index_title = "Administration"

#: chat.limits.EXEMPT_PERMISSION, by name: accounts stays below chat (imports nothing of it).
CHAT_WITHOUT_LIMITS = ("chat", "chat_without_limits")


class UserCreateForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


def _without_limits_permission() -> Permission:
    app_label, codename = CHAT_WITHOUT_LIMITS
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


class UserEditForm(UserChangeForm):
    """The user's page, with the one permission staff grant most as a checkbox of its own:
    it sets or clears that permission among the user's own (a group may grant it too)."""

    chat_without_limits = forms.BooleanField(
        label="Chat without limits",
        required=False,
        help_text=(
            "Exempt from the messages per minute, the generations at once and the daily token "
            "budget (the permission “Can chat without the per-user limits”; superusers always "
            "are, and a group can grant it too)."
        ),
    )

    class Meta:
        model = User
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["chat_without_limits"].initial = self.instance.user_permissions.filter(
                pk=_without_limits_permission().pk
            ).exists()

    def _save_m2m(self) -> None:
        # After the form's own many-to-many (user_permissions as submitted), so the checkbox
        # wins over the permissions list for this one permission.
        super()._save_m2m()  # type: ignore[misc]
        if "chat_without_limits" not in self.changed_data:
            return
        permission = _without_limits_permission()
        if self.cleaned_data["chat_without_limits"]:
            self.instance.user_permissions.add(permission)
        else:
            self.instance.user_permissions.remove(permission)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = UserEditForm
    add_form = UserCreateForm
    ordering = ["email"]
    list_display = ["email", "display_name", "is_staff", "is_active", "last_login", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "display_name"]
    readonly_fields = ["last_login", "date_joined"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("display_name",)}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Limits", {"fields": ("chat_without_limits", "priority", "daily_token_budget")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class GroupPolicyInline(admin.StackedInline):
    model = GroupPolicy
    can_delete = False
    verbose_name_plural = "Policy"


admin.site.unregister(Group)


@admin.register(Group)
class GroupWithPolicyAdmin(GroupAdmin):
    inlines = [GroupPolicyInline]


@admin.register(ApiKey)
class ApiKeyAdmin(NoSaveMixin, admin.ModelAdmin):
    """Staff see and revoke keys; nobody makes one here (its secret is shown once, to its
    owner) and the secret's hash is never shown."""

    list_display = [
        "user",
        "name",
        "prefix",
        "scope",
        "created",
        "last_used",
        "expires",
        "revoked",
    ]
    list_filter = ("scope", ("revoked", admin.EmptyFieldListFilter), "created")
    search_fields = ["user__email", "name", "key_id"]
    list_select_related = ["user"]
    # Everything read-only (the secret's hash is not even among them): staff look and revoke.
    fields = ("user", "name", "prefix", "scope", "created", "last_used", "expires", "revoked")
    readonly_fields = fields
    actions = ["revoke"]
    date_hierarchy = "created"

    @admin.display(description="key")
    def prefix(self, key: ApiKey) -> str:
        return f"{key.prefix}_…"

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        count = services.revoke_api_keys(queryset)
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)
