from __future__ import annotations

import asyncio

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.ollama_double.fixtures import *  # noqa: F403

PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(config, items):
    # scripts/test deselects them on SQLite; a plain `pytest` there reports them as skipped.
    from django.db import connection

    if connection.vendor != "postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _close_the_shared_sync_thread(django_db_setup, django_db_blocker):
    """Async tests' fixtures and ORM calls run on asgiref's one shared sync thread, and nothing
    of the app closes what is opened there (sockets no longer close stale connections on every
    frame, issue 16): closed before the test database is dropped, which PostgreSQL refuses
    while a session is connected."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The real hashers are deliberately slow; the tests exercise our code, not PBKDF2.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_cache():
    # Throttle counters live in the cache: no test may inherit another's attempts.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def make_user(db):
    from accounts.models import User

    def make(email: str = "alice@example.com", password: str = PASSWORD, **fields) -> User:
        return User.objects.create_user(email, password, **fields)

    return make


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def tokens(api_client, user) -> dict:
    response = api_client.post(
        "/api/auth/token/", {"email": user.email, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def auth_client(tokens) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return client


@pytest.fixture
def ollama(ollama_double, settings):
    """The Ollama test double, configured as the only Ollama host."""
    settings.OLLAMA_URLS = [ollama_double.url]
    settings.OLLAMA_DEFAULT_MODEL = "llama3.2:3b"
    return ollama_double


@pytest.fixture(scope="session")
def daphne_server(django_db_setup, ollama_double_server):
    """One real Daphne process for the run, on the test database and the Ollama double."""
    from tests.support.live import DaphneServer

    with DaphneServer(
        OLLAMA_URL=ollama_double_server.url, OLLAMA_DEFAULT_MODEL="llama3.2:3b"
    ) as server:
        yield server


@pytest.fixture
def daphne(transactional_db, daphne_server, ollama_double):
    """The app in a real Daphne process; the test's data is committed so that it sees it."""
    return daphne_server
