"""The 403, 404 and 500 pages in the site's style, and a friendly page, not a traceback, for a
user who is not staff opening the admin."""

from __future__ import annotations

import logging

import pytest
from django.test import RequestFactory

from config import error_pages

pytestmark = pytest.mark.django_db


def test_a_user_who_is_not_staff_opening_the_admin(client, user, caplog):
    client.force_login(user)
    with caplog.at_level(logging.INFO):
        response = client.get("/admin/", follow=True)
    assert response.redirect_chain == [("/admin/login/?next=/admin/", 302)]
    assert response.status_code == 403
    page = response.content.decode()
    assert "The admin is for staff" in page
    assert user.email in page
    assert '<a class="button" href="/">Back to the chat</a>' in page
    assert 'class="topbar"' in page  # the site's own frame
    # Nothing went wrong: no traceback and nothing at WARNING or above.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []


def test_a_user_who_is_not_staff_opening_an_admin_page(client, user):
    client.force_login(user)
    response = client.get("/admin/chat/conversation/", follow=True)
    assert response.status_code == 403
    assert "The admin is for staff" in response.content.decode()


def test_staff_and_visitors_still_get_the_admin_and_the_login(client, make_user):
    assert client.get("/admin/").url.startswith("/admin/login/")
    anonymous = client.get("/admin/login/?next=/admin/")
    assert anonymous.status_code == 302 and anonymous.url.startswith("/accounts/login/")
    client.force_login(make_user("staff@example.com", is_staff=True, is_superuser=True))
    admin = client.get("/admin/")
    assert admin.status_code == 200
    page = admin.content.decode()
    assert "Django administration" not in page
    assert '<a href="/admin/">Ollama Gateway</a>' in page
    assert "<title>Administration | Ollama Gateway admin</title>" in page


def test_404_page_in_the_site_style(client, settings):
    settings.DEBUG = False
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "There is nothing here" in page
    assert "/no-such-page/" in page
    assert 'class="topbar"' in page and "css/error-pages.css" in page


def test_403_page_in_the_site_style(rf: RequestFactory, user):
    request = rf.get("/somewhere/")
    request.user = user
    response = error_pages.permission_denied(request, PermissionError("no"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "You cannot open this page" in page
    assert "The admin is for staff" not in page


def test_500_page_renders_without_the_database(rf: RequestFactory, django_assert_num_queries):
    request = rf.get("/boom/")
    with django_assert_num_queries(0):
        response = error_pages.server_error(request)
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong on the server" in page
    assert 'class="topbar"' in page and "Back to the chat" in page


def test_the_apis_keep_their_json_errors(rf: RequestFactory):
    response = error_pages.server_error(rf.get("/api/chat/"))
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
