"""Headless Chromium (Debian's `chromium`, driven by Playwright) against the live test server.

Every page runs with the network closed: a request to any host but the live server is
aborted and recorded, and a test that made one fails. Each test leaves a screenshot in
test-artifacts/browser/.
"""

from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "Install it with: apt-get install -y chromium && .venv/bin/pip install -e '.[test]' (scripts/test does both)."
)
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def _orm_beside_playwright():
    # Playwright's sync API keeps an asyncio loop in this thread, which makes Django refuse ORM
    # calls from the test body and the fixtures; they are plain synchronous calls, so the check
    # does not apply. Session-wide, as the database fixtures run while the browser is up.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="session")
def chromium(_orm_beside_playwright, django_db_setup, live_server):
    """One browser for the session; a missing or broken Chromium fails the tests (CI installs it)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as error:
        pytest.fail(f"The browser tests need the Python package playwright ({error}). {INSTALL_HINT}", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"The browser tests need Debian's chromium at {CHROMIUM}; it is not installed. {INSTALL_HINT}",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        except Error as error:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {error}. {INSTALL_HINT}", pytrace=False)
        yield browser
        browser.close()


class ClosedNetwork:
    """Lets requests to the live server through and aborts, and records, every other one."""

    def __init__(self, live_server_url: str):
        self.allowed = urlsplit(live_server_url).netloc
        self.refused: list[str] = []

    def __call__(self, route):
        url = route.request.url
        if urlsplit(url).netloc == self.allowed:
            route.continue_()
        else:
            self.refused.append(url)
            route.abort("blockedbyclient")


@pytest.fixture
def browser_page(chromium, live_server, transactional_db, request):
    """A fresh page on the live server; screenshot on the way out, and no request left the server."""
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    network = ClosedNetwork(live_server.url)
    context.route("**/*", network)
    page = context.new_page()
    page.closed_network = network
    failed_responses = []
    page.on(
        "response",
        lambda response: response.status >= 400 and failed_responses.append(f"{response.status} {response.url}"),
    )
    page.failed_responses = failed_responses
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert network.refused == [], f"the page tried to reach other hosts: {network.refused}"


@pytest.fixture
def operator_login(browser_page, settings):
    """Logs an operator (staff, with a password) in to the admin through its login form."""
    # A deliberately slow hash costs ~1 s per login on a busy CI machine; the form is what is tested.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    def log_in(username="olga", password="correct horse battery staple"):
        call_command(
            "create_api_user", username, "--project", "operators", "--staff", "--password", password, stdout=StringIO()
        )
        browser_page.goto("/admin/login/?next=/admin/")
        browser_page.fill("#id_username", username)
        browser_page.fill("#id_password", password)
        browser_page.click("input[type=submit]")
        browser_page.wait_for_url("**/admin/")
        return browser_page

    return log_in


def save_screenshot(page, name: str) -> None:
    """A screenshot of a step inside a test (each test also leaves one of its last page)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api_token(username: str, project: str) -> str:
    out = StringIO()
    call_command("create_api_user", username, "--project", project, stdout=out)
    return out.getvalue().strip()
