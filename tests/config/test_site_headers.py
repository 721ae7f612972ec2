"""Headers every response carries, and the favicon for pages that name none."""

import pytest

pytestmark = pytest.mark.django_db


def test_html_and_json_responses_carry_the_policy(client, auth_client):
    for response in (client.get("/accounts/login/"), auth_client.get("/api/auth/me/")):
        policy = response["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "'unsafe-inline'" not in policy
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"


def test_the_browsable_api_alone_may_style_inline(auth_client):
    page = auth_client.get("/api/auth/me/", HTTP_ACCEPT="text/html")
    assert page["Content-Type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in page["Content-Security-Policy"].split(";"))
    assert "'unsafe-inline'" in policy["style-src"]
    assert policy["script-src"] == "'self'"


def test_favicon_ico_leads_to_the_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 302
    assert response["Location"] == "/static/favicon.svg"
    assert client.get(response["Location"]).status_code == 200
