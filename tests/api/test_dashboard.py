"""The operators' dashboard: who may see it, and that each of its figures counts the right actions."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from imageactions.images import create_image
from imageactions.models import ImageAction

DASHBOARD = "/admin/dashboard/"


def make_action(action_type="test", status="waiting", *, owner="project-a", age=None, finished_ago=None, message=""):
    """An action as the runner leaves it; `age` and `finished_ago` place it in time."""
    action = ImageAction.objects.create(action_type=action_type, status=status, owner=owner, message=message)
    now = timezone.now()
    changes = {}
    if age is not None:
        changes["created_at"] = now - age
    if finished_ago is not None:
        changes["finished_at"] = now - finished_ago
        changes["expires_at"] = changes["finished_at"] + timedelta(seconds=settings.ACTION_TTL)
    if changes:
        ImageAction.objects.filter(pk=action.pk).update(**changes)
        action.refresh_from_db()
    return action


def dashboard_of(client):
    response = client.get(DASHBOARD)
    assert response.status_code == 200, response.content[:500]
    return response.context["dashboard"], response.content.decode()


def test_the_dashboard_answers_200_for_staff_without_further_permissions(db):
    client = Client()
    client.force_login(get_user_model().objects.create_user("sam", is_staff=True))
    assert client.get(DASHBOARD).status_code == 200


def test_the_dashboard_sends_anonymous_visitors_to_the_admin_login(client):
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/admin/dashboard/")


def test_the_dashboard_sends_users_who_are_not_staff_to_the_admin_login(db):
    client = Client()
    client.force_login(get_user_model().objects.create_user("alice"))
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_admin_index_and_the_app_page_link_to_the_dashboard(admin_client):
    for page in ("/admin/", "/admin/imageactions/"):
        assert f'href="{DASHBOARD}"' in admin_client.get(page).content.decode(), page


def test_the_dashboard_counts_actions_by_type_and_status(admin_client):
    for action_type, status, count in (
        ("import", "waiting", 3),
        ("import", "uploading", 1),
        ("import", "success", 2),
        ("export", "failure", 1),
        ("clone", "success", 4),
    ):
        for _ in range(count):
            make_action(action_type, status)
    dashboard, html = dashboard_of(admin_client)
    matrix = dashboard.matrix
    assert matrix.statuses == ["waiting", "uploading", "success", "failure"]
    assert {action_type: dict(cells) for action_type, cells, _ in matrix.rows} == {
        "clone": {"waiting": 0, "uploading": 0, "success": 4, "failure": 0},
        "export": {"waiting": 0, "uploading": 0, "success": 0, "failure": 1},
        "import": {"waiting": 3, "uploading": 1, "success": 2, "failure": 0},
    }
    assert [total for _, _, total in matrix.rows] == [4, 1, 6]
    assert (matrix.totals, matrix.total) == ([3, 1, 6, 1], 11)
    assert "?action_type=import&amp;status=waiting" in html


def test_the_dashboard_names_the_oldest_pending_action_with_its_age(admin_client):
    make_action(status="success", age=timedelta(days=5), finished_ago=timedelta(days=1))  # ended: not pending
    make_action(status="waiting", age=timedelta(minutes=10))
    oldest = make_action("import", status="uploading", age=timedelta(hours=3, minutes=5))
    dashboard, html = dashboard_of(admin_client)
    assert dashboard.oldest_pending.pk == oldest.pk
    assert timedelta(hours=3) < dashboard.oldest_pending_age < timedelta(hours=3, minutes=10)
    assert f"/admin/imageactions/imageaction/{oldest.pk}/change/" in html
    assert "3\xa0hours, 5\xa0minutes" in html


def test_the_dashboard_says_when_nothing_is_pending(admin_client):
    make_action(status="cancelled", finished_ago=timedelta(minutes=1))
    dashboard, html = dashboard_of(admin_client)
    assert dashboard.oldest_pending is None
    assert "No action is pending." in html


def test_the_dashboard_lists_the_latest_20_failures_of_the_last_24_hours_with_their_messages(admin_client):
    failures = [
        make_action(status="failure", finished_ago=timedelta(minutes=n), message=f"Could not read image {n}.")
        for n in range(1, 26)
    ]
    make_action(status="failure", finished_ago=timedelta(hours=25), message="Too old to show.")
    make_action(status="success", finished_ago=timedelta(minutes=1))
    dashboard, html = dashboard_of(admin_client)
    assert [a.pk for a in dashboard.recent_failures] == [a.pk for a in failures[:20]]
    assert dashboard.failures_in_window == 25
    assert "Could not read image 1." in html and f"/admin/imageactions/imageaction/{failures[0].pk}/change/" in html
    assert "Could not read image 21." not in html and "Too old to show." not in html
    assert "25, the latest 20 shown" in html


def test_the_dashboard_counts_actions_finished_per_hour(admin_client):
    now = timezone.now()
    two_hours_ago = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    into_that_hour = now - two_hours_ago - timedelta(minutes=30)  # half past, two hours back
    for status, count in (("success", 3), ("failure", 2), ("cancelled", 1)):
        for _ in range(count):
            make_action(status=status, finished_ago=into_that_hour)
    make_action(status="success", finished_ago=timedelta(seconds=1))
    make_action(status="success", finished_ago=timedelta(hours=30))  # outside the window
    make_action(status="waiting")  # not finished
    dashboard, html = dashboard_of(admin_client)
    hours = {hour.hour: (hour.success, hour.failure, hour.cancelled) for hour in dashboard.throughput}
    assert len(dashboard.throughput) == 24
    assert hours[two_hours_ago] == (3, 2, 1)
    assert hours[now.replace(minute=0, second=0, microsecond=0)] == (1, 0, 0)
    assert sum(sum(counts) for counts in hours.values()) == 7
    assert dashboard.busiest_hour == 6


def test_the_dashboard_and_the_image_list_show_where_images_are_stored(admin_client):
    image = create_image(
        name="focal",
        disk_format="qcow2",
        size=2048,
        checksum="0" * 32,
        os_hash_value="0" * 128,
        owner="project-a",
        locations={"local": "ab/focal-key"},
    )
    store_path = settings.IMAGE_STORES["local"]["path"]
    dashboard, html = dashboard_of(admin_client)
    assert [(s["store"], s["images"], s["bytes"], s["location"]) for s in dashboard.stores] == [
        ("local", 1, 2048, store_path)
    ]
    image_list = admin_client.get("/admin/imageactions/image/?locations__store=local").content.decode()
    assert str(image.pk) in image_list
    image_page = admin_client.get(f"/admin/imageactions/image/{image.pk}/change/").content.decode()
    assert f"{store_path}/ab/focal-key" in image_page


def test_the_dashboard_makes_the_same_few_queries_however_many_actions_exist(
    admin_client, django_assert_max_num_queries
):
    for n in range(60):
        make_action(
            status=("waiting", "success", "failure")[n % 3],
            finished_ago=timedelta(minutes=n) if n % 3 else None,
            message="broken",
        )
    with django_assert_max_num_queries(12):
        response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
