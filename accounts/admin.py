from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.contrib.auth.models import Group

from accounts import services
from accounts.models import ApiKey, GroupPolicy, User


class UserCreateForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


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
        ("Limits", {"fields": ("priority", "daily_token_budget")}),
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
class ApiKeyAdmin(admin.ModelAdmin):
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
