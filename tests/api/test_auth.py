"""Who may call the API: tokens from create_api_user, sessions for the browsable API, projects."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from imageactions.models import ApiToken, ProjectMember

ACTIONS = "/v2/image-actions"


def create_api_user(*args) -> str:
    out = StringIO()
    call_command("create_api_user", *args, stdout=out)
    return out.getvalue().strip()


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", ACTIONS),
        ("post", ACTIONS),
        ("get", f"{ACTIONS}/00000000-0000-0000-0000-000000000000"),
        ("post", f"{ACTIONS}/00000000-0000-0000-0000-000000000000/cancel"),
    ],
)
def test_anonymous_requests_get_a_401_with_www_authenticate(db, method, path):
    response = getattr(APIClient(), method)(
        path, {"action_type": "test", "input": {}} if method == "post" else None, format="json"
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "not_authenticated"
    assert set(response.json()) == {"code", "detail", "errors"}


def test_a_wrong_token_is_a_401(db):
    response = token_client("0" * 40).get(ACTIONS)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_create_api_user_prints_a_token_that_works(db):
    token = create_api_user("dave", "--project", "project-d")
    assert len(token) == 40 and "\n" not in token
    client = token_client(token)
    created = client.post(ACTIONS, {"action_type": "test", "input": {}}, format="json")
    assert created.status_code == 201
    assert client.get(ACTIONS).json()["results"][0]["id"] == created.json()["id"]
    user = get_user_model().objects.get(username="dave")
    assert user.project_member.project == "project-d"
    assert not user.is_staff and not user.has_usable_password()


def test_create_api_user_again_updates_the_user_and_replaces_its_token(db):
    first = create_api_user("dave", "--project", "project-d")
    again = create_api_user("dave", "--project", "project-e")
    assert again != first
    assert get_user_model().objects.filter(username="dave").count() == 1
    assert ProjectMember.objects.get(user__username="dave").project == "project-e"
    assert token_client(first).get(ACTIONS).status_code == 401
    assert token_client(again).get(ACTIONS).status_code == 200


def test_tokens_are_stored_only_as_their_sha256(db):
    import hashlib

    from django.db import connection

    token = create_api_user("dave", "--project", "project-d")
    assert ApiToken.objects.get(user__username="dave").digest == hashlib.sha256(token.encode()).hexdigest()
    with connection.cursor() as cursor:  # nowhere in the database in plain text
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            assert token not in repr(cursor.fetchall()), table


def test_create_api_user_with_staff_makes_an_operator_who_sees_every_project(db, alice):
    alice.post(ACTIONS, {"action_type": "test", "input": {}}, format="json")
    token = create_api_user("root", "--project", "ops", "--staff")
    user = get_user_model().objects.get(username="root")
    assert user.is_staff and user.is_superuser
    listed = token_client(token).get(ACTIONS, {"all_projects": "true"}).json()["results"]
    assert [item["owner"] for item in listed] == ["project-a"]


def test_create_api_user_with_a_password_allows_a_session_login(db, client):
    create_api_user("erin", "--project", "project-e", "--password", "correct horse battery")
    assert client.login(username="erin", password="correct horse battery")


def test_create_api_user_requires_a_project(db):
    with pytest.raises(CommandError, match="--project"):
        create_api_user("frank")


def test_session_login_works_for_the_browsable_api(db, alice):
    user = get_user_model().objects.create_user("grace", password="a long enough password")
    ProjectMember.objects.create(user=user, project="project-a")
    alice.post(ACTIONS, {"action_type": "test", "input": {}}, format="json")
    client = APIClient()
    assert client.login(username="grace", password="a long enough password")
    page = client.get(ACTIONS, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    assert b"grace" in page.content  # the logged-in user is shown
    assert len(client.get(ACTIONS, format="json").json()["results"]) == 1
    created = client.post(ACTIONS, {"action_type": "test", "input": {}}, format="json")
    assert created.status_code == 201


def test_the_login_page_of_the_browsable_api_answers(db):
    assert APIClient().get("/api-auth/login/").status_code == 200


def test_a_user_without_a_project_gets_a_403_that_says_how_to_fix_it(db):
    user = get_user_model().objects.create_user("henry", password="a long enough password")
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(ACTIONS, {"action_type": "test", "input": {}}, format="json")
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "permission_denied"
    assert "'henry'" in body["detail"] and "create_api_user" in body["detail"]
    assert client.get(ACTIONS).json()["results"] == []
