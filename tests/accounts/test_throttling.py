import pytest

pytestmark = pytest.mark.django_db

TOKEN = "/api/auth/token/"


@pytest.fixture
def tight_rates(settings):
    settings.LOGIN_RATE_PER_ACCOUNT = "3/min"
    settings.LOGIN_RATE_PER_IP = "5/min"


def attempt(client, email, password="wrong-password", ip="10.0.0.1"):
    return client.post(TOKEN, {"email": email, "password": password}, format="json", REMOTE_ADDR=ip)


def test_per_account_throttle_across_ips(api_client, user, tight_rates):
    for i in range(3):
        assert attempt(api_client, user.email, ip=f"10.0.0.{i + 1}").status_code == 401
    blocked = attempt(api_client, user.email, ip="10.0.0.99")
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert "throttled" in blocked.json()["detail"].lower()


def test_per_account_throttle_ignores_case(api_client, user, tight_rates):
    for email in ["alice@example.com", "ALICE@example.com", "Alice@Example.com"]:
        assert attempt(api_client, email, ip="10.1.0.1").status_code == 401
    assert attempt(api_client, "aLiCe@example.com", ip="10.1.0.2").status_code == 429


def test_even_the_right_password_is_refused_while_throttled(
    api_client, user, password, tight_rates
):
    for _ in range(3):
        attempt(api_client, user.email)
    assert attempt(api_client, user.email, password=password).status_code == 429


def test_per_ip_throttle_across_accounts(api_client, user, tight_rates):
    for i in range(5):
        assert attempt(api_client, f"user{i}@example.com").status_code == 401
    assert attempt(api_client, "someone-else@example.com").status_code == 429
    # another IP is not affected
    assert attempt(api_client, "someone-else@example.com", ip="10.9.9.9").status_code == 401


def test_forwarded_for_header_cannot_dodge_the_ip_throttle(api_client, user, tight_rates):
    for i in range(5):
        response = api_client.post(
            TOKEN,
            {"email": f"u{i}@example.com", "password": "x"},
            format="json",
            REMOTE_ADDR="10.2.0.1",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{i}",
        )
        assert response.status_code == 401
    response = api_client.post(
        TOKEN,
        {"email": "u9@example.com", "password": "x"},
        format="json",
        REMOTE_ADDR="10.2.0.1",
        HTTP_X_FORWARDED_FOR="192.0.2.200",
    )
    assert response.status_code == 429


def test_login_page_is_throttled_too(client, user, tight_rates):
    for _ in range(3):
        response = client.post(
            "/accounts/login/",
            {"username": user.email, "password": "wrong"},
            REMOTE_ADDR="10.3.0.1",
        )
        assert response.status_code == 200
    blocked = client.post(
        "/accounts/login/", {"username": user.email, "password": "wrong"}, REMOTE_ADDR="10.3.0.2"
    )
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert b"Too many login attempts" in blocked.content


def test_token_endpoint_and_login_page_share_the_account_budget(
    client, api_client, user, tight_rates
):
    for _ in range(2):
        attempt(api_client, user.email)
    client.post("/accounts/login/", {"username": user.email, "password": "wrong"})
    assert attempt(api_client, user.email).status_code == 429
