"""Share links: POST/GET/DELETE /api/conversations/<id>/share/, GET /api/shares/, the page
/s/<token> (a snapshot: what is said later stays private) and SHARE_LINKS."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from django.test import Client

from chat.models import Message, ShareLink

from .transfer_helpers import branched_conversation

pytestmark = pytest.mark.django_db


def share_url(pk) -> str:
    return f"/api/conversations/{pk}/share/"


def page_client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def snapshot_on(page) -> dict:
    match = re.search(
        r'<script id="share-data" type="application/json">(.*?)</script>', page.content.decode()
    )
    assert match, "the snapshot is embedded with json_script"
    return json.loads(match.group(1))


def test_create_open_list_and_revoke(auth_client, user):
    conversation = branched_conversation(user)
    response = auth_client.post(share_url(conversation.pk))
    assert response.status_code == 201, response.content
    link = response.json()
    token = link["token"]
    assert len(token) >= 40  # 32 random bytes
    assert link["url"] == f"http://testserver/s/{token}"
    assert link["messages"] == 4 and link["token_prefix"] == token[:6]
    # Only the hash is kept.
    stored = ShareLink.objects.get()
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(stored.snapshot) and stored.token_prefix != token

    page = page_client(user).get(f"/s/{token}")
    assert page.status_code == 200
    shown = snapshot_on(page)
    assert shown["title"] == "Trip to Lisbon"
    assert [m["content"] for m in shown["messages"]] == [
        "Where should I eat?",
        "Go to **Alfama** for fado and food.",  # the branch shown, not the other version
        "And dessert?",
        "Pastéis de nata, of course.",
    ]
    assert shown["messages"][0]["attachments"] == ["notes.txt"]

    listed = auth_client.get("/api/shares/").json()
    assert [(s["id"], s["conversation"]) for s in listed] == [(link["id"], str(conversation.pk))]
    assert "token" not in listed[0]
    assert len(auth_client.get(share_url(conversation.pk)).json()) == 1

    second = auth_client.post(share_url(conversation.pk)).json()
    assert auth_client.delete(f"{share_url(conversation.pk)}?link={link['id']}").json() == {
        "revoked": 1
    }
    assert page_client(user).get(f"/s/{token}").status_code == 404
    assert page_client(user).get(f"/s/{second['token']}").status_code == 200
    assert auth_client.delete(f"/api/shares/{second['id']}/").status_code == 204
    assert page_client(user).get(f"/s/{second['token']}").status_code == 404
    assert auth_client.delete(f"/api/shares/{second['id']}/").status_code == 404


def test_revoke_all_and_deleting_the_conversation(auth_client, user):
    conversation = branched_conversation(user)
    tokens = [auth_client.post(share_url(conversation.pk)).json()["token"] for _ in range(2)]
    assert auth_client.delete(share_url(conversation.pk)).json() == {"revoked": 2}
    assert all(page_client(user).get(f"/s/{t}").status_code == 404 for t in tokens)
    token = auth_client.post(share_url(conversation.pk)).json()["token"]
    assert auth_client.delete(f"/api/conversations/{conversation.pk}/").status_code == 204
    assert not ShareLink.objects.exists()
    assert page_client(user).get(f"/s/{token}").status_code == 404


def test_later_messages_stay_private(auth_client, user):
    conversation = branched_conversation(user)
    token = auth_client.post(share_url(conversation.pk)).json()["token"]
    leaf = conversation.messages.get(content__startswith="Pastéis")
    secret = Message.objects.create(
        conversation=conversation, parent=leaf, role="user", content="my secret plan"
    )
    conversation.current_leaf = secret
    conversation.title = "Renamed later"
    conversation.save()
    page = page_client(user).get(f"/s/{token}")
    assert "my secret plan" not in page.content.decode()
    assert "Renamed later" not in page.content.decode()
    assert len(snapshot_on(page)["messages"]) == 4


def test_only_the_owner_makes_and_revokes_links(auth_client, user, make_user):
    theirs = branched_conversation(make_user("bob@example.com"))
    assert auth_client.post(share_url(theirs.pk)).status_code == 404
    link = ShareLink.objects.create(
        conversation=theirs, token_hash="0" * 64, token_prefix="abc", snapshot=[]
    )
    assert auth_client.delete(share_url(theirs.pk)).status_code == 404
    assert auth_client.delete(f"/api/shares/{link.pk}/").status_code == 404
    assert auth_client.get("/api/shares/").json() == []
    assert ShareLink.objects.count() == 1


def test_an_empty_conversation_has_nothing_to_share(auth_client):
    pk = auth_client.post("/api/conversations/", {}, format="json").json()["id"]
    response = auth_client.post(share_url(pk))
    assert response.status_code == 400 and response.json()["code"] == "empty_conversation"


def test_headers_of_the_share_page(auth_client, user):
    conversation = branched_conversation(user)
    token = auth_client.post(share_url(conversation.pk)).json()["token"]
    page = page_client(user).get(f"/s/{token}")
    assert page["X-Robots-Tag"].startswith("noindex")
    assert page["Referrer-Policy"] == "no-referrer"
    csp = page["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = page.content.decode()
    assert '<meta name="robots" content="noindex, nofollow">' in html
    assert "/static/chat/share.js" in html and "/static/chat/markdown.js" in html
    # No inline script but the JSON data block.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [
        '<script id="share-data" type="application/json">'
    ]


@pytest.mark.parametrize("mode", ["users", "public", "off"])
def test_share_links_setting(auth_client, user, make_user, settings, mode):
    conversation = branched_conversation(user)
    token = auth_client.post(share_url(conversation.pk)).json()["token"]
    settings.SHARE_LINKS = mode
    anonymous = page_client().get(f"/s/{token}")
    other = page_client(make_user("carol@example.com")).get(f"/s/{token}")
    unknown = page_client(user).get("/s/not-a-real-token")
    assert unknown.status_code == 404
    if mode == "users":
        assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
        assert other.status_code == 200
    elif mode == "public":
        assert anonymous.status_code == 200 and other.status_code == 200
    else:
        assert anonymous.status_code == 404 and other.status_code == 404
        response = auth_client.post(share_url(conversation.pk))
        assert response.status_code == 403 and response.json()["code"] == "sharing_disabled"


def test_a_deactivated_owners_links_stop_working(auth_client, user, settings):
    conversation = branched_conversation(user)
    token = auth_client.post(share_url(conversation.pk)).json()["token"]
    settings.SHARE_LINKS = "public"
    assert page_client().get(f"/s/{token}").status_code == 200
    user.is_active = False
    user.save()
    assert page_client().get(f"/s/{token}").status_code == 404


def test_share_links_setting_is_parsed_strictly(tmp_path):
    """A typo stops the process at start-up, naming the variable (config/env.py)."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = {**os.environ, "SHARE_LINKS": "everyone", "VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SHARE_LINKS='everyone' must be one of off, users, public" in result.stderr
