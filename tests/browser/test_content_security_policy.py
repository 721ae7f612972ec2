"""Every page of the site under the app's own Content-Security-Policy, in Chromium.

The policy forbids inline code and other origins; a page that needed either would log a
violation here. The API docs pages get their documented relaxation and nothing more.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import log_in
from tests.support.live import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ARTIFACTS / "screenshots" / "csp"
COLLECT_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""
# Pages whose content must appear, with a selector that proves it rendered.
PAGES = {
    "/": "#composer",
    "/uploads/": "#upload-form",
    "/monitoring/": "main",
    "/accounts/password/": "form",
    "/admin/": "#content",
    "/admin/monitoring/now/": "#now-panel .now-host",
    "/admin/accounts/user/": "#result_list",
    "/admin/accounts/user/{user_id}/change/": "#user_form",
    "/api/auth/me/": ".response-info",
    "/api/docs/": ".swagger-ui .info",
    "/api/redoc/": "redoc h1",
}


def visit(page: Page, url: str, ready: str) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    response = page.goto(url)
    assert response is not None and response.ok, url
    page.wait_for_selector(ready, state="attached")
    page.wait_for_load_state("networkidle")
    return problems + page.evaluate("window.__violations")


@pytest.mark.parametrize("path", list(PAGES))
def test_page_renders_under_the_policy(path, new_context, live_server, make_user):
    staff = make_user("staff@example.com", is_staff=True, is_superuser=True)
    context = new_context()
    context.add_init_script(COLLECT_VIOLATIONS)
    log_in(context, live_server, staff)
    page = context.new_page()
    url = live_server.url + path.format(user_id=staff.pk)

    policy = page.request.get(url).headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    if not path.startswith("/api/"):
        assert "'unsafe-inline'" not in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]

    problems = visit(page, url, PAGES[path])
    if path == "/api/redoc/":
        # Redoc's footer asks for its logo on a CDN: the policy blocks it, as it should.
        problems = [p for p in problems if "https://cdn.redoc.ly/" not in p]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = path.strip("/").replace("/", "_").replace("{user_id}", "id") or "chat"
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
    assert problems == [], problems


def test_login_page_under_the_policy(new_context, live_server):
    context = new_context()
    context.add_init_script(COLLECT_VIOLATIONS)
    page = context.new_page()
    assert visit(page, f"{live_server.url}/accounts/login/", "#id_username") == []
