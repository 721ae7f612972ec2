import pytest

pytestmark = pytest.mark.django_db

REGISTER = "/api/auth/register/"
GOOD = {"email": "new@example.com", "password": "a fine long passphrase"}


def test_registration_is_off_by_default(api_client, client):
    response = api_client.post(REGISTER, GOOD, format="json")
    assert response.status_code == 404
    assert "disabled" in response.json()["detail"]
    assert client.get("/accounts/signup/").status_code == 404


def test_registration_when_enabled(api_client, settings):
    settings.REGISTRATION_ENABLED = True
    response = api_client.post(REGISTER, GOOD, format="json")
    assert response.status_code == 201
    assert response.json()["email"] == "new@example.com"
    token = api_client.post("/api/auth/token/", GOOD, format="json")
    assert token.status_code == 200


def test_registration_validates(api_client, settings, user):
    settings.REGISTRATION_ENABLED = True
    weak = api_client.post(REGISTER, {"email": "x@example.com", "password": "123"}, format="json")
    assert weak.status_code == 400
    assert "password" in weak.json()
    taken = api_client.post(
        REGISTER,
        {"email": "ALICE@example.com", "password": "another fine passphrase"},
        format="json",
    )
    assert taken.status_code == 400
    assert "already exists" in taken.json()["email"][0]
    bad = api_client.post(REGISTER, {"email": "nope", "password": "whatever long"}, format="json")
    assert bad.status_code == 400
    assert "email" in bad.json()


def test_signup_page_when_enabled(client, settings):
    settings.REGISTRATION_ENABLED = True
    response = client.post(
        "/accounts/signup/",
        {
            "email": "web@example.com",
            "password1": "a fine long passphrase",
            "password2": "a fine long passphrase",
        },
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200
