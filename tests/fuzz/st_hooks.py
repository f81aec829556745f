"""Schemathesis hooks for `st run` (SCHEMATHESIS_HOOKS=tests.fuzz.st_hooks): what the schema
cannot say in JSON Schema, said here."""

import schemathesis

# Glance's JSON-patch media type is JSON.
schemathesis.serializer.alias("application/openstack-images-v2.1-json-patch", "application/json")
