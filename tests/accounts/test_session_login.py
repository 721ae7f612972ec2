import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def login_form_token(client: Client) -> str:
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert match, "the login form carries a CSRF token"
    return match.group(1).decode()


def test_login_with_csrf_then_logout(user, password):
    client = csrf_client()
    token = login_form_token(client)
    response = client.post(
        "/accounts/login/",
        {"username": "Alice@Example.com", "password": password, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert b"alice@example.com" in home.content

    # the session also authenticates the API (browsable API and web pages)
    assert client.get("/api/auth/me/").json()["email"] == "alice@example.com"

    csrf = client.cookies["csrftoken"].value
    out = client.post("/accounts/logout/", {"csrfmiddlewaretoken": csrf})
    assert out.status_code == 302
    assert client.get("/").status_code == 302


def test_login_without_csrf_token_is_forbidden(user, password):
    client = csrf_client()
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", {"username": user.email, "password": password})
    assert response.status_code == 403


def test_wrong_password_shows_an_error(user):
    client = csrf_client()
    token = login_form_token(client)
    response = client.post(
        "/accounts/login/",
        {"username": user.email, "password": "wrong", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 200
    assert (
        b"correct email" in response.content.lower()
        or b"enter a correct" in response.content.lower()
    )
    assert client.get("/").status_code == 302


def test_login_refuses_an_external_next(user, password):
    client = csrf_client()
    token = login_form_token(client)
    response = client.post(
        "/accounts/login/",
        {
            "username": user.email,
            "password": password,
            "csrfmiddlewaretoken": token,
            "next": "https://evil.example/",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_pages_require_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_session_api_writes_need_csrf(user, password):
    client = csrf_client()
    token = login_form_token(client)
    client.post(
        "/accounts/login/",
        {"username": user.email, "password": password, "csrfmiddlewaretoken": token},
    )
    response = client.post("/api/auth/logout/", {"refresh": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_password_change(user, password, client):
    client.force_login(user)
    response = client.post(
        "/accounts/password/",
        {
            "old_password": password,
            "new_password1": "a brand new passphrase 42",
            "new_password2": "a brand new passphrase 42",
        },
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("a brand new passphrase 42")
    # the session survives the change (Django rotates the session hash)
    assert client.get("/").status_code == 200


def test_admin_login_goes_through_the_throttled_login_page(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_admin_is_reachable_for_staff_only(client, make_user):
    staff = make_user("root@example.com", is_staff=True, is_superuser=True)
    plain = make_user("plain@example.com")
    client.force_login(plain)
    assert client.get("/admin/login/").status_code == 403
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/user/").status_code == 200
