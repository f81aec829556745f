"""Request parsers that refuse oversized bodies before reading them into memory."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser

from ..validators import whole_number
from .errors import PayloadTooLarge


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


class BoundedJSONParser(JSONParser):
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE; a larger one is a 413, never a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if stream is None:
            raise ParseError("The request body is empty; send a JSON object.")
        request = parser_context["request"]
        declared = request.META.get("CONTENT_LENGTH")
        too_large = f"The request body is larger than the {limit} bytes allowed; send a smaller JSON object."
        if (whole_number(declared) or 0) > limit:
            raise PayloadTooLarge(too_large)
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(too_large)
        encoding = parser_context.get("encoding") or settings.DEFAULT_CHARSET
        try:
            return json.loads(body.decode(encoding), parse_constant=_refuse_constant)
        except (ValueError, LookupError) as exc:
            raise ParseError(f"The request body is not valid JSON: {exc}.") from None
        except RecursionError:
            # e.g. 100 000 nested brackets: json's recursive decoder gives up before we would.
            raise ParseError("The request body is nested too deeply to be parsed.") from None


class JsonPatchParser(BoundedJSONParser):
    """Glance's PATCH bodies (application/openstack-images-v2.1-json-patch): a list of operations."""

    media_type = "application/openstack-images-v2.1-json-patch"


class ImageDataParser(BaseParser):
    """Image bytes (application/octet-stream), left unread: the view streams them itself."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        return None
