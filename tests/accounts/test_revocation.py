"""What a password change, a deactivation and a deleted account revoke on REST and /ollama/.

The sockets' side (open sockets closed with 4401) is in tests/chat/test_consumer.py and
tests/monitoring/test_consumer.py.
"""

import pytest
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from accounts.models import User

pytestmark = pytest.mark.django_db

TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
VERIFY = "/api/auth/token/verify/"
ME = "/api/auth/me/"
NEW_PASSWORD = "a brand new passphrase 42"


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def login(email: str, password: str) -> dict:
    response = APIClient().post(TOKEN, {"email": email, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def refresh(token: str):
    return APIClient().post(REFRESH, {"refresh": token}, format="json")


def change_password_on_the_page(user, old: str, new: str = NEW_PASSWORD) -> None:
    client = Client()
    client.force_login(user)
    response = client.post(
        "/accounts/password/",
        {"old_password": old, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302, response.content


def test_a_password_change_revokes_the_access_and_refresh_tokens(user, password):
    tokens = login(user.email, password)
    assert bearer(tokens["access"]).get(ME).status_code == 200

    change_password_on_the_page(user, password)

    me = bearer(tokens["access"]).get(ME)
    assert me.status_code == 401
    assert me.json()["code"] == "password_changed"
    refused = refresh(tokens["refresh"])
    assert refused.status_code == 401
    assert refused.json()["code"] == "token_not_valid"
    # ... again and again.
    assert refresh(tokens["refresh"]).status_code == 401

    old_login = APIClient().post(TOKEN, {"email": user.email, "password": password}, format="json")
    assert old_login.status_code == 401
    fresh = login(user.email, NEW_PASSWORD)
    assert bearer(fresh["access"]).get(ME).status_code == 200
    rotated = refresh(fresh["refresh"])
    assert rotated.status_code == 200
    assert bearer(rotated.json()["access"]).get(ME).status_code == 200


def test_every_outstanding_refresh_token_is_blacklisted(user, password):
    first, second = login(user.email, password), login(user.email, password)
    rotated = refresh(first["refresh"]).json()

    change_password_on_the_page(user, password)

    for token in (first["refresh"], second["refresh"], rotated["refresh"]):
        assert refresh(token).status_code == 401
    # Blacklisted, not only refused: a later login with the new password does not revive them.
    live = BlacklistedToken.objects.filter(token__user=user, token__token=second["refresh"])
    assert live.exists()


def test_a_refresh_token_that_escaped_the_blacklist_is_still_refused(user, password):
    # A refresh rotated while the password was being changed gets a new outstanding token after
    # the blacklisting; the password claim it carries still ends it.
    tokens = login(user.email, password)
    change_password_on_the_page(user, password)
    BlacklistedToken.objects.filter(token__user=user).delete()

    response = refresh(tokens["refresh"])
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_the_ollama_proxy_refuses_the_old_access_token(user, password):
    tokens = login(user.email, password)
    assert bearer(tokens["access"]).get("/ollama/").status_code == 200

    change_password_on_the_page(user, password)

    refused = bearer(tokens["access"]).get("/ollama/")
    assert refused.status_code == 401
    assert "password" in refused.json()["error"]
    fresh = login(user.email, NEW_PASSWORD)
    assert bearer(fresh["access"]).get("/ollama/").status_code == 200


def test_verify_says_a_revoked_access_token_is_not_valid(user, password):
    tokens = login(user.email, password)
    assert APIClient().post(VERIFY, {"token": tokens["access"]}, format="json").status_code == 200

    change_password_on_the_page(user, password)

    for token in (tokens["access"], tokens["refresh"]):
        response = APIClient().post(VERIFY, {"token": token}, format="json")
        assert response.status_code == 401
        assert response.json()["code"] == "token_not_valid"


def test_a_password_set_anywhere_revokes_tokens(user, password):
    # The admin's password form, `changepassword`, bootstrap_admin: all save a new password.
    tokens = login(user.email, password)
    # Saving anything else revokes nothing.
    user.display_name = "Alice"
    user.save()
    User.objects.get(pk=user.pk).save()
    assert bearer(tokens["access"]).get(ME).status_code == 200
    tokens = refresh(tokens["refresh"]).json()

    user.set_password(NEW_PASSWORD)
    user.save()
    assert bearer(tokens["access"]).get(ME).status_code == 401
    assert refresh(tokens["refresh"]).status_code == 401


def test_the_admin_password_form_revokes_tokens(user, password, make_user):
    tokens = login(user.email, password)
    admin = make_user("root@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    response = client.post(
        f"/admin/accounts/user/{user.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302, response.content
    assert bearer(tokens["access"]).get(ME).status_code == 401
    assert refresh(tokens["refresh"]).status_code == 401


def test_deactivation_blacklists_refresh_tokens_for_good(user, password):
    tokens = login(user.email, password)
    user.is_active = False
    user.save()
    assert bearer(tokens["access"]).get(ME).status_code == 401
    assert refresh(tokens["refresh"]).status_code == 401

    user.is_active = True
    user.save()
    # Reactivated: the tokens of before stay revoked; a new login works.
    assert refresh(tokens["refresh"]).status_code == 401
    assert bearer(login(user.email, password)["access"]).get(ME).status_code == 200


def test_deactivation_in_the_admin_revokes_refresh_tokens(user, password, make_user):
    tokens = login(user.email, password)
    admin = make_user("root@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    page = client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert page.status_code == 200
    response = client.post(
        f"/admin/accounts/user/{user.pk}/change/",
        {"email": user.email, "display_name": ""},  # is_active unticked
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert not user.is_active
    assert BlacklistedToken.objects.filter(token__user=user).count() == 1
    assert refresh(tokens["refresh"]).status_code == 401


def test_the_refresh_token_of_a_deleted_account_is_a_401(user, password):
    tokens = login(user.email, password)
    user.delete()
    response = refresh(tokens["refresh"])
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"
    assert set(response.json()) >= {"detail", "code"}
    verify = APIClient().post(VERIFY, {"token": tokens["access"]}, format="json")
    assert verify.status_code == 401
