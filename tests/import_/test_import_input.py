"""Validation of the import input: bad requests are 400s naming the field, before any work starts."""

import pytest

from imageactions.models import ImageAction

from .conftest import import_body


def post(client, source, **kwargs):
    return client.post("/v2/image-actions", import_body(source, **kwargs), format="json")


@pytest.mark.parametrize(
    ("source", "field", "message"),
    [
        (
            {"location": "file:///etc/passwd"},
            "input.location",
            "Only http, https, s3 and swift locations are accepted; got 'file'",
        ),
        (
            {"location": "ftp://example.com/x.img"},
            "input.location",
            "Only http, https, s3 and swift locations are accepted; got 'ftp'",
        ),
        (
            {"location": "http://169.254.169.254/latest/meta-data/"},
            "input.location",
            "The url 'http://169.254.169.254/latest/meta-data/' is not allowed: link-local/metadata addresses are refused.",
        ),
        (
            {"location": "http://user:pw@example.com/x.img"},
            "input.location",
            "The url 'http://user:pw@example.com/x.img' is not allowed: URLs with a user name or password are not accepted.",
        ),
        (
            {"location": "s3://bucket-only"},
            "input.location",
            "An s3 location is s3://BUCKET/KEY; got 's3://bucket-only'",
        ),
        (
            {"location": "swift://host/account/container"},
            "input.location",
            "A swift location is swift://HOST[:PORT]/ACCOUNT/CONTAINER/OBJECT; got 'swift://host/account/container'",
        ),
        ({}, "input.location", 'Give exactly one source: a "location" URL, or "source": "upload".'),
        (
            {"location": "http://example.com/x.img", "source": "upload"},
            "input.location",
            'Give exactly one source: a "location" URL, or "source": "upload".',
        ),
        ({"source": "somewhere"}, "input.source", '"somewhere" is not a valid choice.'),
    ],
)
def test_import_with_a_bad_source_is_refused_naming_the_field(alice, source, field, message):
    response = post(alice, source)
    # A location of the schema's shape that this service does not read is a 422 (url_not_allowed).
    refused_location = "location" in source and "source" not in source
    assert response.status_code == (422 if refused_location else 400)
    assert response.json()["errors"] == {field: [message]}
    assert not ImageAction.objects.exists()


def test_import_from_an_unconfigured_swift_host_is_refused(alice):
    response = post(alice, {"location": "swift://swift.example.com:8080/AUTH_a/c/o"})
    assert response.status_code == 422 and response.json()["code"] == "url_not_allowed"
    assert (
        "No Swift credentials are configured for 'swift.example.com:8080'"
        in response.json()["errors"]["input.location"][0]
    )


@pytest.mark.parametrize(
    ("checksum", "field"),
    [
        ({"algo": "sha256", "value": "abc"}, "input.checksum.value"),
        ({"algo": "sha1", "value": "a" * 40}, "input.checksum.algo"),
        ({"algo": "md5", "value": "z" * 32}, "input.checksum.value"),
    ],
)
def test_import_with_a_malformed_checksum_is_refused(alice, checksum, field):
    response = post(alice, {"source": "upload"}, checksum=checksum)
    assert response.status_code == 400
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"name": ""}, "input.image_properties.name"),
        ({"name": "n" * 256}, "input.image_properties.name"),
        ({"tags": ["t"] * 51}, "input.image_properties.tags"),
        ({"tags": ["t" * 256]}, "input.image_properties.tags.0"),
        ({"disk_format": "exe"}, "input.image_properties.disk_format"),
        ({"container_format": "ova"}, "input.image_properties.container_format"),
        ({"visibility": "everyone"}, "input.image_properties.visibility"),
        ({"min_disk": -1}, "input.image_properties.min_disk"),
        ({"min_ram": -1}, "input.image_properties.min_ram"),
        ({"properties": {f"k{i}": "v" for i in range(65)}}, "input.image_properties.properties"),
        ({"properties": {"k": "v" * 4097}}, "input.image_properties.properties"),
        ({"properties": {"k" * 256: "v"}}, "input.image_properties.properties"),
        ({"properties": {"k": {"nested": 1}}}, "input.image_properties.properties.k"),
    ],
)
def test_import_with_bad_image_properties_is_refused_naming_the_field(alice, properties, field):
    body = import_body({"source": "upload"})
    body["input"]["image_properties"].update(properties)
    response = alice.post("/v2/image-actions", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()


def test_import_action_shows_the_image_properties_it_will_create(alice):
    response = post(alice, {"source": "upload"}, name="shown", tags=["x"], properties={"a": "b"})
    assert response.status_code == 201
    body = response.json()
    assert body["image_properties"]["name"] == "shown"
    assert body["image_properties"]["tags"] == ["x"]
    assert body["image_properties"]["properties"] == {"a": "b"}
    assert body["image_properties"]["container_format"] == "bare"
    assert body["status"] == "waiting"
