from datetime import timedelta

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

pytestmark = pytest.mark.django_db

TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
VERIFY = "/api/auth/token/verify/"
LOGOUT = "/api/auth/logout/"
ME = "/api/auth/me/"


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_obtain_then_use_the_access_token(api_client, user, password):
    response = api_client.post(TOKEN, {"email": user.email, "password": password}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh"}

    me = bearer(body["access"]).get(ME)
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["is_staff"] is False
    assert "password" not in me.json()


def test_email_is_case_insensitive(api_client, user, password):
    response = api_client.post(
        TOKEN, {"email": "  ALICE@Example.COM ", "password": password}, format="json"
    )
    assert response.status_code == 200


def test_wrong_password_and_unknown_email_give_the_same_error(api_client, user, password):
    wrong = api_client.post(TOKEN, {"email": user.email, "password": "nope-nope"}, format="json")
    unknown = api_client.post(
        TOKEN, {"email": "nobody@example.com", "password": password}, format="json"
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_inactive_user_cannot_obtain_a_token(api_client, make_user, password):
    make_user("bob@example.com", is_active=False)
    response = api_client.post(
        TOKEN, {"email": "bob@example.com", "password": password}, format="json"
    )
    assert response.status_code == 401


def test_missing_fields_are_named(api_client, db):
    response = api_client.post(TOKEN, {}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"email", "password", "detail", "code"}
    assert body["code"] == "invalid_input" and body["detail"] == "email: This field is required."


def test_refresh_rotates_and_the_old_refresh_token_is_refused(api_client, tokens):
    first = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh"] != tokens["refresh"]
    assert bearer(rotated["access"]).get(ME).status_code == 200

    again = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401
    assert again.json()["code"] == "token_not_valid"

    assert (
        api_client.post(REFRESH, {"refresh": rotated["refresh"]}, format="json").status_code == 200
    )


def test_logout_blacklists_the_refresh_token(auth_client, api_client, tokens):
    response = auth_client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 204
    refused = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert refused.status_code == 401


def test_logout_requires_authentication(api_client, tokens):
    response = api_client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 401
    # and the token still works: nothing was blacklisted
    assert (
        api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json").status_code == 200
    )


def test_logout_refuses_someone_elses_refresh_token(auth_client, api_client, make_user, password):
    make_user("mallory@example.com")
    theirs = api_client.post(
        TOKEN, {"email": "mallory@example.com", "password": password}, format="json"
    ).json()
    response = auth_client.post(LOGOUT, {"refresh": theirs["refresh"]}, format="json")
    assert response.status_code == 403
    assert (
        api_client.post(REFRESH, {"refresh": theirs["refresh"]}, format="json").status_code == 200
    )


def test_logout_with_a_garbage_token_is_a_400_naming_the_field(auth_client):
    response = auth_client.post(LOGOUT, {"refresh": "not-a-token"}, format="json")
    assert response.status_code == 400
    assert "refresh" in response.json()


def test_expired_access_token_is_refused(user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))
    response = bearer(str(token)).get(ME)
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_tampered_access_token_is_refused(tokens):
    header, payload, signature = tokens["access"].split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert bearer(f"{header}.{payload}.{flipped}").get(ME).status_code == 401

    token = AccessToken(tokens["access"])
    forged = AccessToken()
    forged.payload.update(token.payload)
    forged["user_id"] = "999999"
    # re-signed with another key: still refused
    from jwt import encode

    other = encode(forged.payload, "another-key-entirely-" * 3, algorithm="HS256")
    assert bearer(other).get(ME).status_code == 401


def test_refresh_token_is_not_accepted_as_an_access_token(tokens):
    assert bearer(tokens["refresh"]).get(ME).status_code == 401


def test_verify(api_client, tokens):
    assert api_client.post(VERIFY, {"token": tokens["access"]}, format="json").status_code == 200
    bad = api_client.post(VERIFY, {"token": tokens["access"] + "x"}, format="json")
    assert bad.status_code == 401


def test_me_without_credentials_is_401(api_client, db):
    assert api_client.get(ME).status_code == 401


def test_deactivated_user_token_stops_working(tokens, user):
    client = bearer(tokens["access"])
    assert client.get(ME).status_code == 200
    user.is_active = False
    user.save()
    assert client.get(ME).status_code == 401
