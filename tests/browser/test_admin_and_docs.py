"""Operators and API users in a real browser: the admin console, its dashboard, and the offline Swagger UI."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from imageactions.models import ActionEvent, ImageAction

from .conftest import api_token, save_screenshot

CHANGELIST = "/admin/imageactions/imageaction/"


def make_action(status="waiting", owner="project-a", **fields):
    return ImageAction.objects.create(action_type="test", status=status, owner=owner, **fields)


def finished(status, message="", ago=timedelta(minutes=5)):
    # Kept inside the current hour, which the dashboard's last throughput row counts: a run in
    # the first minutes of an hour would otherwise put these in the hour before.
    now = timezone.now()
    at = max(now - ago, now.replace(minute=0, second=0, microsecond=0))
    return make_action(
        status,
        message=message,
        step_state="done",
        finished_at=at,
        expires_at=at + timedelta(seconds=settings.ACTION_TTL),
    )


def test_an_operator_logs_in_and_the_admin_is_styled(operator_login):
    page = operator_login()
    assert page.locator("#site-name").inner_text() == "Django administration"
    assert page.locator("#imageactions-dashboard-link a").inner_text() == "Dashboard"
    # The admin's CSS comes from the live server itself (WhiteNoise / staticfiles), not from elsewhere.
    background = page.locator("#header").evaluate("element => getComputedStyle(element).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), "the admin stylesheet did not load"
    assert page.failed_responses == []


def test_an_operator_filters_actions_by_status(operator_login):
    waiting = [make_action() for _ in range(2)]
    failed = finished("failure", "Could not retrieve image: 404 for url 'http://example.org/x.img'.")
    finished("success")
    page = operator_login()
    page.goto(CHANGELIST)
    assert page.locator("#result_list tbody tr").count() == 4
    status_filter = page.locator("#changelist-filter details").filter(has_text="By status")
    status_filter.get_by_role("link", name="failure", exact=True).click()
    page.wait_for_url("**status=failure**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert str(failed.pk) in rows.first.inner_text()
    status_filter.get_by_role("link", name="waiting", exact=True).click()
    page.wait_for_url("**status=waiting**")
    assert {row.split("\t")[1] for row in page.locator("#result_list tbody tr").all_inner_texts()} == {
        str(action.pk) for action in waiting
    }


def test_an_operator_opens_an_action_and_reads_its_step_timeline(operator_login):
    action = finished("failure", "The image is not a valid qcow2 file: its header is truncated.")
    started = timezone.now() - timedelta(minutes=6)
    ActionEvent.objects.create(
        action=action,
        step="prepare",
        status="preparing",
        started_at=started,
        finished_at=started + timedelta(seconds=2),
        outcome="done",
        worker="worker-1:4242",
    )
    ActionEvent.objects.create(
        action=action,
        step="work",
        status="working",
        attempt=2,
        started_at=started,
        finished_at=started + timedelta(seconds=9),
        outcome="failed",
        message="header is truncated",
        worker="worker-2:4343",
    )
    page = operator_login()
    page.goto(CHANGELIST)
    page.get_by_role("link", name=str(action.pk)).click()
    page.wait_for_url(f"**/{action.pk}/change/")
    assert "The image is not a valid qcow2 file" in page.locator(".form-row.field-message").inner_text()
    timeline = page.locator(".inline-group").filter(has_text="step timeline")
    rows = timeline.locator("tbody tr.has_original, tbody tr.form-row").all_inner_texts()
    assert len(rows) == 2, rows
    assert "prepare" in rows[0] and "worker-1:4242" in rows[0] and "done" in rows[0]
    assert "work" in rows[1] and "failed" in rows[1] and "header is truncated" in rows[1]


def test_an_operator_cancels_a_pending_action_with_the_admin_action(operator_login):
    pending = make_action()
    other = make_action()
    page = operator_login()
    page.goto(CHANGELIST)
    page.locator(f"input.action-select[value='{pending.pk}']").check()
    page.select_option("select[name=action]", "cancel_actions")
    page.click("button[name=index]")
    page.wait_for_selector("ul.messagelist")
    assert "Cancel requested for 1 action(s)." in page.locator("ul.messagelist").inner_text()
    row = page.locator("#result_list tbody tr").filter(has_text=str(pending.pk))
    assert "cancelled" in row.locator("td.field-status").inner_text()
    other_row = page.locator("#result_list tbody tr").filter(has_text=str(other.pk))
    assert other_row.locator("td.field-status").inner_text() == "waiting"
    pending.refresh_from_db()
    assert pending.status == "cancelled"


def test_an_operator_reads_the_dashboard(operator_login):
    for _ in range(3):
        make_action()
    oldest = make_action()
    ImageAction.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(hours=2))
    finished("success")
    finished("failure", "Could not retrieve image: connection refused by images.example.org:443.")
    page = operator_login()
    page.click("#imageactions-dashboard-link a")
    page.wait_for_url("**/admin/dashboard/")
    counts = page.locator("#counts tr[data-action-type='test']")
    assert counts.locator("td[data-status='waiting']").inner_text() == "4"
    assert counts.locator("td[data-status='success']").inner_text() == "1"
    assert counts.locator("td[data-status='failure']").inner_text() == "1"
    assert "6 in all" in page.locator("#counts h2").inner_text()
    assert str(oldest.pk) in page.locator("#oldest-pending").inner_text()
    assert "2\xa0hours" in page.locator("#oldest-pending .age").inner_text()
    assert "connection refused by images.example.org:443" in page.locator("#failures").inner_text()
    current_hour = page.locator("#throughput tbody tr").last.locator("td").all_inner_texts()
    assert current_hour[1:4] == ["1", "1", "0"]
    save_screenshot(page, "dashboard")
    page.locator("#counts").get_by_role("link", name="4").click()
    page.wait_for_url("**status=waiting**")
    assert page.locator("#result_list tbody tr").count() == 4


def test_swagger_ui_works_offline_and_executes_a_list_request(browser_page):
    page = browser_page
    action = make_action(owner="project-a")
    token = api_token("alice", "project-a")
    page.goto("/v2/docs")
    page.click("button.btn.authorize")
    dialog = page.locator(".dialog-ux .modal-ux")
    token_auth = dialog.locator(".auth-container").filter(has_text="tokenAuth")
    token_auth.locator("input").fill(f"Token {token}")
    token_auth.locator("button.auth.authorize").click()
    token_auth.locator("button.btn-done").click()
    # Found by its operationId: the list of image actions, whatever trailing slash the path shows.
    operation = page.locator(".opblock-get[id$='-image_actions_list']")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    response = operation.locator(".live-responses-table .response").first
    response.locator(".response-col_status").filter(has_text="200").wait_for()
    assert str(action.pk) in response.locator(".response-col_description").inner_text()
    assert page.closed_network.refused == []


def test_the_closed_network_refuses_and_records_a_request_to_another_host(browser_page):
    """The guard the other tests rely on: a request off the live server never leaves the browser."""
    page = browser_page
    page.goto("/admin/login/")
    outcome = page.evaluate(
        """() => fetch('http://images.example.org/focal.qcow2').then(() => 'answered', () => 'refused')"""
    )
    assert outcome == "refused"
    assert page.closed_network.refused == ["http://images.example.org/focal.qcow2"]
    page.closed_network.refused.clear()  # seen; the fixture's own check would fail the test
