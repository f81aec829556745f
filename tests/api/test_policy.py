"""The policy: each rule grants its requests by role, by default as documented, and a policy file
replaces a rule (here with this service's own API users: a member, and an operator who is admin)."""

import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from imageactions.models import ImageAction
from imageactions.policy import DEFAULT_RULES, rules
from tests.images.conftest import put_image


@pytest.fixture(autouse=True)
def fresh_rules():
    rules.cache_clear()
    yield
    rules.cache_clear()


@pytest.fixture
def policy_file(settings, tmp_path):
    def write(overrides: dict):
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(overrides))
        settings.POLICY_FILE = str(path)
        rules.cache_clear()

    return write


def image_record(client) -> str:
    return client.post("/v2/images", {"name": "p", "disk_format": "raw", "container_format": "bare"}, format="json")


def waiting_action(owner="project-a") -> ImageAction:
    return ImageAction.objects.create(action_type="import", owner=owner, input={"source": "upload"})


# rule -> (who asks, the request), each needing exactly that rule.
REQUESTS = {
    "list": ("alice", lambda client: client.get("/v2/image-actions")),
    "read": ("alice", lambda client: client.get(f"/v2/images/{put_image('project-a').pk}")),
    "create": ("alice", lambda client: image_record(client)),
    "upload": (
        "alice",
        lambda client: client.put(
            f"/v2/images/{image_record(client).json()['id']}/stage", data=b"x", content_type="application/octet-stream"
        ),
    ),
    "cancel": ("alice", lambda client: client.post(f"/v2/image-actions/{waiting_action().pk}/cancel")),
    "change": (
        "alice",
        lambda client: client.patch(
            f"/v2/images/{put_image('project-a').pk}",
            data=json.dumps([{"op": "replace", "path": "/name", "value": "n"}]),
            content_type="application/openstack-images-v2.1-json-patch",
        ),
    ),
    "delete": ("alice", lambda client: client.delete(f"/v2/images/{put_image('project-a').pk}")),
    "publicize": (
        "operator",
        lambda client: client.patch(
            f"/v2/images/{put_image('operators').pk}",
            data=json.dumps([{"op": "replace", "path": "/visibility", "value": "public"}]),
            content_type="application/openstack-images-v2.1-json-patch",
        ),
    ),
    "all_projects": ("operator", lambda client: client.get("/v2/image-actions", {"all_projects": "true"})),
    "webhook_secret": ("alice", lambda client: client.post("/v2/info/webhook-secret")),
    "operator_detail": ("operator", lambda client: client.get("/v2/info/stores/detail")),
    "metrics": ("operator", lambda client: client.get("/metrics")),
}


def test_every_rule_has_a_request_here():
    assert set(REQUESTS) == set(DEFAULT_RULES)


@pytest.mark.parametrize("rule", sorted(DEFAULT_RULES))
def test_each_rule_grants_by_default_and_refuses_once_the_file_takes_it_away(rule, request, policy_file):
    who, send = REQUESTS[rule]
    client = request.getfixturevalue(who)
    assert send(client).status_code != 403

    policy_file({rule: ["nobody-has-this-role"]})
    refused = send(client)
    assert refused.status_code == 403
    assert rule in json.dumps(refused.json())


def test_members_are_refused_admin_rules_by_default(alice):
    assert alice.get("/v2/image-actions", {"all_projects": "true"}).status_code == 403
    assert alice.get("/v2/info/stores/detail").status_code == 403


def test_a_policy_file_can_grant_a_rule_to_more_roles(alice, policy_file):
    theirs = waiting_action(owner="project-b")
    policy_file({"all_projects": ["Member"]})  # role names are compared without regard to case
    listed = alice.get("/v2/image-actions", {"all_projects": "true"}).json()["results"]
    assert [item["id"] for item in listed] == [str(theirs.pk)]


def test_admins_list_their_own_project_unless_they_ask_for_all(operator, alice):
    mine = ImageAction.objects.create(action_type="import", owner="operators", input={})
    theirs = waiting_action()
    assert alice.get("/v2/image-actions", {"all_projects": "maybe"}).status_code == 400
    admin_in_ops = operator
    assert [item["id"] for item in admin_in_ops.get("/v2/image-actions").json()["results"]] == [str(mine.pk)]
    everything = admin_in_ops.get("/v2/image-actions", {"all_projects": "true"}).json()["results"]
    assert {item["id"] for item in everything} == {str(mine.pk), str(theirs.pk)}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "is not JSON"),
        ('["create"]', "must be a JSON object"),
        ('{"destroy": ["admin"]}', "unknown rule 'destroy'"),
        ('{"create": "admin"}', "must be a list of role names"),
    ],
)
def test_a_bad_policy_file_is_refused_clearly(settings, tmp_path, content, words):
    path = tmp_path / "policy.json"
    path.write_text(content)
    settings.POLICY_FILE = str(path)
    with pytest.raises(ImproperlyConfigured, match=words):
        rules()
