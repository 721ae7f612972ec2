"""The admin as staff meet it: "Chat without limits" on the user's page, figures rounded, and
read-only records without Save buttons."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from accounts import services
from chat.limits import EXEMPT_PERMISSION
from chat.models import Conversation, Message
from monitoring.models import HostSample

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(make_user):
    return make_user("root@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


def user_form(admin_client, user) -> dict:
    """The user's change form as the browser would submit it."""
    page = admin_client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data: dict[str, str | list[str]] = {}
    for name in form.fields:
        value = form[name].value()
        if name == "password":
            continue
        if isinstance(value, list | tuple):
            data[name] = [str(v) for v in value]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = str(value)
    return data


def fresh(user):
    # has_perm caches the permissions on the instance: a new one asks the database again.
    return type(user).objects.get(pk=user.pk)


def test_staff_grant_and_take_back_chat_without_limits(admin_client, user):
    page = admin_client.get(f"/admin/accounts/user/{user.pk}/change/").content.decode()
    assert "Chat without limits" in page
    # In the Limits fieldset, beside the priority and the daily budget.
    fieldset = page[page.index(">Limits<") :]
    assert fieldset.index('name="chat_without_limits"') < fieldset.index('name="priority"')
    assert not fresh(user).has_perm(EXEMPT_PERMISSION)

    data = user_form(admin_client, user)
    data["chat_without_limits"] = "on"
    saved = admin_client.post(f"/admin/accounts/user/{user.pk}/change/", data)
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    assert fresh(user).has_perm(EXEMPT_PERMISSION)
    checked = admin_client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert checked.context["adminform"].form["chat_without_limits"].value() is True

    data = user_form(admin_client, user)
    data.pop("chat_without_limits")
    assert admin_client.post(f"/admin/accounts/user/{user.pk}/change/", data).status_code == 302
    assert not fresh(user).has_perm(EXEMPT_PERMISSION)


def test_other_permissions_are_kept(admin_client, user):
    other = Permission.objects.get(codename="view_conversation")
    user.user_permissions.add(other)
    data = user_form(admin_client, user)
    data["chat_without_limits"] = "on"
    assert admin_client.post(f"/admin/accounts/user/{user.pk}/change/", data).status_code == 302
    assert set(user.user_permissions.values_list("codename", flat=True)) == {
        "view_conversation",
        "chat_without_limits",
    }


def test_figures_are_rounded(admin_client, root):
    HostSample.objects.create(
        host="gpu-box",
        taken_at=timezone.now() - timedelta(minutes=1),
        ram_used_mb=1234.5678,
        ram_percent=41.23456789,
        cpu_percent=7.891234,
        load_1=0.123456,
        ram_total_mb=32000.123456,
    )
    hosts = admin_client.get("/admin/monitoring/hostsample/").content.decode()
    assert "41.2 %" in hosts and "7.9 %" in hosts and "0.12" in hosts and "1,235 MB" in hosts
    assert "41.23456789" not in hosts
    sample = HostSample.objects.get()
    page = admin_client.get(f"/admin/monitoring/hostsample/{sample.pk}/change/").content.decode()
    assert "32,000 MB" in page and "32000.123456" not in page

    conversation = Conversation.objects.create(owner=root, title="t")
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status="complete",
        content="hi",
        tokens_per_second=42.123456789,
        time_to_first_token=0.3456789,
    )
    messages = admin_client.get("/admin/chat/message/").content.decode()
    assert "42.1 tok/s" in messages and "42.123456789" not in messages
    record = admin_client.get(f"/admin/chat/message/{reply.pk}/change/").content.decode()
    assert "42.1 tok/s" in record and "0.35 s" in record and "0.3456789" not in record
    inline = admin_client.get(f"/admin/chat/conversation/{conversation.pk}/change/")
    assert "42.1 tok/s" in inline.content.decode()


def test_read_only_records_offer_close_not_save(admin_client, root):
    conversation = Conversation.objects.create(owner=root, title="t")
    reply = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status="complete", content="hi"
    )
    key, _ = services.create_api_key(root, name="ci", scope="chat")
    for url in (
        f"/admin/chat/message/{reply.pk}/change/",
        f"/admin/accounts/apikey/{key.pk}/change/",
    ):
        page = admin_client.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert 'name="_save"' not in html and 'name="_continue"' not in html, url
        assert 'class="closelink"' in html, url
    # A record staff may edit keeps its buttons.
    editable = admin_client.get(f"/admin/chat/conversation/{conversation.pk}/change/")
    assert 'name="_save"' in editable.content.decode()
    # The key's revoke action (it needs the change permission) is still there.
    keys = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert 'value="revoke"' in keys
