"""The operators' console: action list, filters, search, the step timeline, and the admin actions."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from imageactions.images import create_image
from imageactions.models import ActionEvent, ImageAction, ProjectMember

CHANGELIST = "/admin/imageactions/imageaction/"


def make_action(owner="project-a", status="waiting", **fields):
    return ImageAction.objects.create(action_type="test", owner=owner, status=status, **fields)


def listed_ids(response) -> set[str]:
    assert response.status_code == 200, response.content[:500]
    return {str(action.pk) for action in response.context["cl"].result_list}


def test_the_changelist_shows_every_owners_actions(admin_client):
    actions = {str(make_action(owner).pk) for owner in ("project-a", "project-b")}
    assert listed_ids(admin_client.get(CHANGELIST)) == actions


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "failure"}, {"failed"}),
        ({"action_type": "other"}, {"other"}),
        ({"owner": "project-b"}, {"foreign"}),
        ({"status": "waiting", "owner": "project-a"}, {"waiting"}),
    ],
)
def test_the_changelist_filters_by_status_type_and_owner(admin_client, query, expected):
    actions = {
        "waiting": make_action(),
        "failed": make_action(status="failure"),
        "other": ImageAction.objects.create(action_type="other", owner="project-c", status="success"),
        "foreign": make_action("project-b", status="success"),
    }
    assert listed_ids(admin_client.get(CHANGELIST, query)) == {str(actions[name].pk) for name in expected}


def test_the_changelist_filters_by_date(admin_client):
    action = make_action()
    today = timezone.now()
    day = {"created_at__year": today.year, "created_at__month": today.month, "created_at__day": today.day}
    assert listed_ids(admin_client.get(CHANGELIST, day)) == {str(action.pk)}
    assert listed_ids(admin_client.get(CHANGELIST, {"created_at__year": today.year - 1})) == set()


@pytest.mark.parametrize("search", ["id", "owner", "location"])
def test_the_changelist_searches_by_id_owner_and_location(admin_client, search):
    target = make_action("project-zeta", input={"location": "https://images.example.org/focal.qcow2"})
    make_action("project-a", input={"location": "https://images.example.org/jammy.qcow2"})
    term = {"id": str(target.pk), "owner": "zeta", "location": "focal.qcow2"}[search]
    assert listed_ids(admin_client.get(CHANGELIST, {"q": term})) == {str(target.pk)}


def test_the_change_page_shows_message_traceback_and_the_step_timeline(admin_client):
    action = make_action(status="failure", message="The image could not be read: it is truncated.")
    started = timezone.now()
    ActionEvent.objects.create(
        action=action,
        step="prepare",
        status="preparing",
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        outcome="done",
        worker="host:1",
    )
    ActionEvent.objects.create(
        action=action,
        step="work",
        status="working",
        attempt=2,
        started_at=started,
        outcome="failed",
        message="boom for the user",
        traceback="Traceback (most recent call last):\n  RuntimeError: internal detail",
    )
    page = admin_client.get(f"{CHANGELIST}{action.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "step timeline" in html.lower()
    for text in (
        "The image could not be read: it is truncated.",
        "prepare",
        "boom for the user",
        "RuntimeError: internal detail",
        "host:1",
    ):
        assert text in html


def run_admin_action(client, name, actions):
    return client.post(CHANGELIST, {"action": name, "_selected_action": [str(a.pk) for a in actions]}, follow=True)


def test_the_cancel_admin_action_cancels_a_waiting_action(admin_client):
    waiting, ended = make_action(), make_action(status="success")
    page = run_admin_action(admin_client, "cancel_actions", [waiting, ended])
    assert page.status_code == 200
    assert "1 action" in page.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == "cancelled" and waiting.finished_at
    ended.refresh_from_db()
    assert ended.status == "success"


def test_the_retry_admin_action_queues_a_failed_action_again(admin_client):
    failed = make_action(
        status="failure",
        step_state="done",
        step_index=1,
        message="it broke",
        finished_at=timezone.now(),
        expires_at=timezone.now() + timedelta(days=2),
    )
    succeeded = make_action(status="success", step_state="done")
    page = run_admin_action(admin_client, "retry_failed_actions", [failed, succeeded])
    assert page.status_code == 200
    failed.refresh_from_db()
    assert (failed.status, failed.step_state, failed.step_index, failed.message) == ("waiting", "queued", 0, "")
    assert failed.finished_at is None and failed.expires_at is None
    succeeded.refresh_from_db()
    assert succeeded.status == "success"


def test_the_purge_admin_action_deletes_expired_actions(admin_client):
    expired = make_action(status="success", expires_at=timezone.now() - timedelta(minutes=1))
    current = make_action(status="success", expires_at=timezone.now() + timedelta(hours=1))
    page = run_admin_action(admin_client, "purge_expired_actions", [current])
    assert page.status_code == 200
    assert "Purged 1 expired action" in page.content.decode()
    assert not ImageAction.objects.filter(pk=expired.pk).exists()
    assert ImageAction.objects.filter(pk=current.pk).exists()


def test_actions_are_not_added_by_hand(admin_client):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


def make_image():
    return create_image(
        name="focal",
        disk_format="qcow2",
        size=10,
        checksum="0" * 32,
        os_hash_value="0" * 128,
        owner="project-a",
        locations={"local": "k"},
    )


@pytest.mark.parametrize(
    "page",
    [
        "/admin/",
        "/admin/imageactions/",
        CHANGELIST,
        f"{CHANGELIST}?q=nothing",
        f"{CHANGELIST}?e=1",
        "/admin/imageactions/image/",
        "/admin/imageactions/image/?q=focal",
        "/admin/imageactions/image/?status=active",
        "/admin/imageactions/projectmember/",
        "/admin/imageactions/projectmember/add/",
        "/admin/imageactions/projectmember/?q=alice",
    ],
)
def test_every_admin_page_answers_200(admin_client, page):
    make_action()
    make_image()
    ProjectMember.objects.create(user=get_user_model().objects.create_user("alice"), project="project-a")
    assert admin_client.get(page).status_code == 200


def test_image_and_member_change_pages_answer_200(admin_client):
    image = make_image()
    member = ProjectMember.objects.create(user=get_user_model().objects.create_user("alice"), project="p")
    assert admin_client.get(f"/admin/imageactions/image/{image.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/imageactions/projectmember/{member.pk}/change/").status_code == 200
    assert admin_client.get(f"{CHANGELIST}{uuid.uuid4()}/change/", follow=True).status_code == 200


def test_images_are_not_added_by_hand_only_by_actions(admin_client):
    assert admin_client.get("/admin/imageactions/image/add/").status_code == 403


def test_an_operator_adds_a_user_to_a_project_in_the_admin(admin_client):
    user = get_user_model().objects.create_user("ivan")
    response = admin_client.post("/admin/imageactions/projectmember/add/", {"user": user.pk, "project": "project-i"})
    assert response.status_code == 302, response.content[:2000]
    assert ProjectMember.objects.get(user=user).project == "project-i"
