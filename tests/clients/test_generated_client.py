"""A Python client generated from /v2/schema with openapi-python-client, used on its own against
the API behind gunicorn: the schema is what users' generated clients are made of."""

import importlib
import re
import subprocess
import sys
import time

import attrs
import pytest
from django.test import Client

from imageactions.pipeline import action_types
from tests.import_.conftest import random_image

PACKAGE = "imageactions_client"


@pytest.fixture(scope="session")
def generated_client(tmp_path_factory, django_db_setup, django_db_blocker):
    """The package openapi-python-client generates from /v2/schema, importable as `imageactions_client`."""
    with django_db_blocker.unblock():
        response = Client().get("/v2/schema", {"format": "json"})
    assert response.status_code == 200
    directory = tmp_path_factory.mktemp("generated-client")
    (directory / "schema.json").write_bytes(response.content)
    # No post hooks (a formatter run): the generation stays offline and needs no other tool.
    # Glance's JSON-patch media type is JSON to the generator.
    (directory / "generator.yml").write_text(
        "post_hooks: []\ncontent_type_overrides:\n  application/openstack-images-v2.1-json-patch: application/json\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(directory / "schema.json"),
            "--output-path",
            str(directory / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(directory / "generator.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # The generator drops what it cannot type (e.g. clashing model names) with a warning.
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(directory))
    yield importlib.import_module(PACKAGE)
    sys.path.remove(str(directory))
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def untyped_attributes(model: type) -> list[str]:
    """Attributes annotated with Any, except the catch-all for keys the schema does not name."""
    return [
        f"{model.__name__}.{field.name}: {field.type}"
        for field in attrs.fields(model)
        if field.name != "additional_properties" and re.search(r"\bAny\b", str(field.type))
    ]


def test_generated_client_has_typed_models_for_each_action_types_input_and_the_resources(generated_client):
    models = importlib.import_module(f"{PACKAGE}.models")
    inputs = [at.input_serializer.__name__.removesuffix("Serializer") for at in action_types().values()]
    results = [
        at.result_serializer.__name__.removesuffix("Serializer")
        for at in action_types().values()
        if at.result_serializer
    ]
    expected = [
        "ImageAction",
        "GlanceImage",
        "Progress",
        *results,
        "NewImageProperties",
        "PaginatedImageActionList",
        "GlanceImageList",
        "Error",
        *inputs,
        *(f"{name}Request" for name in inputs),
        *(f"{name.title()}ActionCreateRequest" for name in action_types()),
    ]
    assert [name for name in expected if not hasattr(models, name)] == []
    every_model = [getattr(models, name) for name in models.__all__ if attrs.has(getattr(models, name))]
    assert [a for model in every_model for a in untyped_attributes(model)] == []
    action_fields = {field.name: str(field.type) for field in attrs.fields(models.ImageAction)}
    assert set(re.findall(r"\w+", action_fields["input_"])) == set(inputs)
    assert set(results) <= set(re.findall(r"\w+", action_fields["result"]))
    assert action_fields["image_properties"] == "NewImageProperties"
    import_result = {field.name: str(field.type) for field in attrs.fields(models.ImportResult)}
    export_result = {field.name: str(field.type) for field in attrs.fields(models.ExportResult)}
    assert import_result["image_ref"] == "UUID" and export_result["location"] == "str"


def poll(get_action, action_id, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        action = get_action(action_id)
        if action.status.value in statuses:
            return action
        time.sleep(0.2)
    raise AssertionError(f"action {action_id} still {action.status.value!r} after {timeout}s")


def test_generated_client_imports_polls_lists_cancels_and_reads_the_image(
    generated_client, api_server, workers, image_server, alice_token
):
    from imageactions_client import AuthenticatedClient
    from imageactions_client.api.image_actions import (
        image_actions_cancel_create,
        image_actions_create,
        image_actions_list,
        image_actions_retrieve,
    )
    from imageactions_client.api.images import images_retrieve
    from imageactions_client.models import (
        ErrorCodeEnum,
        ImageAction,
        ImageActionsListActionTypeItem,
        ImageActionsListStatusItem,
        ImagePropertiesRequest,
        ImportActionCreateActionTypeEnum,
        ImportActionCreateRequest,
        ImportInput,
        ImportInputRequest,
        SourceEnum,
    )

    client = AuthenticatedClient(base_url=api_server.base_url, token=alice_token, prefix="Token")

    def create_import(name, **source):
        body = ImportActionCreateRequest(
            action_type=ImportActionCreateActionTypeEnum.IMPORT,
            input_=ImportInputRequest(image_properties=ImagePropertiesRequest(name=name), **source),
        )
        # The key is a typed parameter of the generated call: a retry returns the same action.
        answers = [image_actions_create.sync(client=client, body=body, idempotency_key=f"ci-{name}") for _ in "12"]
        assert all(isinstance(action, ImageAction) for action in answers), answers
        assert answers[0].id == answers[1].id
        return answers[0]

    def get_action(action_id):
        return image_actions_retrieve.sync(str(action_id), client=client)

    data = random_image(3 * 1024 * 1024 + 7, seed=70)
    imported = create_import("generated", location=image_server.add("generated.img", data))
    assert isinstance(imported.input_, ImportInput) and imported.input_.image_properties.name == "generated"
    imported = poll(get_action, imported.id, {"success", "failure", "cancelled"})
    assert imported.status.value == "success", imported.message
    assert imported.progress.bytes_done == len(data)

    missing = create_import("missing", location=image_server.url("/status/404"))
    missing = poll(get_action, missing.id, {"success", "failure", "cancelled"})
    assert missing.status.value == "failure" and missing.error_code == ErrorCodeEnum.SOURCE_NOT_FOUND
    assert missing.error_details["status"] == 404

    waiting = create_import("never-uploaded", source=SourceEnum.UPLOAD)
    # The list's filters are typed: lists of the schema's enums.
    pending_only, imports_only = [ImageActionsListStatusItem.PENDING], [ImageActionsListActionTypeItem.IMPORT]
    pending = image_actions_list.sync(client=client, status=pending_only, action_type=imports_only)
    assert [action.id for action in pending.results] == [waiting.id]
    assert pending.results[0].status.value == "waiting"

    cancelled = image_actions_cancel_create.sync(str(waiting.id), client=client)
    assert cancelled.status.value == "cancelled"
    assert image_actions_list.sync(client=client, status=pending_only, action_type=imports_only).results == []
    everything = image_actions_list.sync(client=client, action_type=imports_only)
    assert {action.id: action.status.value for action in everything.results} == {
        imported.id: "success",
        missing.id: "failure",
        waiting.id: "cancelled",
    }

    image = images_retrieve.sync(str(imported.result.image_ref), client=client)
    assert (image.name, image.size, image.disk_format, image.owner) == ("generated", len(data), "raw", "project-a")
    assert image.status.value == "active"
