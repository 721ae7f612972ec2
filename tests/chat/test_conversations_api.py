import pytest

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db

LIST = "/api/conversations/"


def detail(pk) -> str:
    return f"/api/conversations/{pk}/"


def test_create_list_newest_first_and_paginated(auth_client, user):
    for n in range(3):
        assert auth_client.post(LIST, {"title": f"c{n}"}, format="json").status_code == 201
    body = auth_client.get(LIST).json()
    assert body["count"] == 3
    assert [c["title"] for c in body["results"]] == ["c2", "c1", "c0"]
    page = auth_client.get(LIST, {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"]


def test_only_own_conversations_are_visible(auth_client, make_user):
    theirs = Conversation.objects.create(owner=make_user("bob@example.com"), title="secret")
    assert auth_client.get(LIST).json()["count"] == 0
    assert auth_client.get(detail(theirs.pk)).status_code == 404
    assert auth_client.patch(detail(theirs.pk), {"title": "x"}, format="json").status_code == 404
    assert auth_client.delete(detail(theirs.pk)).status_code == 404
    assert auth_client.post(f"{detail(theirs.pk)}clear/").status_code == 404
    assert auth_client.get(f"{detail(theirs.pk)}messages/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.title == "secret"


def test_rename_and_change_settings(auth_client, user):
    pk = auth_client.post(LIST, {}, format="json").json()["id"]
    response = auth_client.patch(
        detail(pk),
        {
            "title": "Trip",
            "model": "qwen2.5:0.5b",
            "system_prompt": "Be brief.",
            "options": {"temperature": 0.5},
            "context_exchanges": 3,
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    conversation = Conversation.objects.get(pk=pk)
    assert (conversation.title, conversation.model, conversation.context_exchanges) == (
        "Trip",
        "qwen2.5:0.5b",
        3,
    )
    assert conversation.options == {"temperature": 0.5}


def test_invalid_settings_are_named(auth_client):
    pk = auth_client.post(LIST, {}, format="json").json()["id"]
    response = auth_client.patch(
        detail(pk), {"options": {"top_p": 2}, "context_exchanges": 500}, format="json"
    )
    assert response.status_code == 400
    assert "top_p" in response.json()["options"]
    assert "context_exchanges" in response.json()


def test_search_by_title(auth_client, user):
    Conversation.objects.create(owner=user, title="Holiday plans")
    Conversation.objects.create(owner=user, title="Work")
    titles = [c["title"] for c in auth_client.get(LIST, {"q": "holi"}).json()["results"]]
    assert titles == ["Holiday plans"]


def chain(conversation, *messages: dict) -> list[Message]:
    """Messages one after the other (each the parent of the next), the last one shown."""
    made: list[Message] = []
    for fields in messages:
        parent = made[-1] if made else None
        made.append(Message.objects.create(conversation=conversation, parent=parent, **fields))
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=made[-1])
    return made


def test_messages_clear_and_delete(auth_client, user):
    conversation = Conversation.objects.create(owner=user)
    chain(
        conversation,
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "eval_count": 3},
    )
    messages = auth_client.get(f"{detail(conversation.pk)}messages/").json()["results"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["metrics"] is None
    assert messages[1]["metrics"]["eval_count"] == 3

    assert auth_client.post(f"{detail(conversation.pk)}clear/").json() == {"deleted": 2}
    assert not conversation.messages.exists()
    assert auth_client.delete(detail(conversation.pk)).status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_latest_messages_newest_first(auth_client, user):
    conversation = Conversation.objects.create(owner=user)
    chain(conversation, *({"role": "user", "content": f"m{n}"} for n in range(7)))
    url = f"{detail(conversation.pk)}messages/"
    latest = auth_client.get(url, {"ordering": "-id", "page_size": 3}).json()
    assert [m["content"] for m in latest["results"]] == ["m6", "m5", "m4"]
    assert latest["count"] == 7 and latest["next"]
    oldest = auth_client.get(url, {"page_size": 3}).json()
    assert [m["content"] for m in oldest["results"]] == ["m0", "m1", "m2"]
    # an unknown field is ignored rather than leaking the model's other columns
    ignored = auth_client.get(url, {"ordering": "content", "page_size": 3}).json()
    assert [m["content"] for m in ignored["results"]] == ["m0", "m1", "m2"]


def test_a_reply_still_streaming_refuses_clear(auth_client, user):
    conversation = Conversation.objects.create(owner=user)
    Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    response = auth_client.post(f"{detail(conversation.pk)}clear/")
    assert (response.status_code, response.json()["code"]) == (409, "generation_running")
    assert conversation.messages.count() == 1


def test_database_refuses_invalid_message_states(user):
    from django.db import IntegrityError, transaction

    conversation = Conversation.objects.create(owner=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="user", status="streaming")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="assistant", status="failed")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="robot")
