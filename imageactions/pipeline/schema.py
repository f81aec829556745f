"""How an action type states in the API schema the rules its serializer's fields cannot express
(e.g. the pattern of a key, or a field only another route may send), so that generated clients and schema-driven
tests know every request the service refuses."""

from collections.abc import Callable

from drf_spectacular.extensions import OpenApiSerializerExtension


def refine_schema(serializer_class: type, refine: Callable[[dict, str], dict]) -> None:
    """Pass the schema drf-spectacular generates for `serializer_class` through
    `refine(schema, direction)` (direction: "request" or "response") before it is published."""

    def map_serializer(self, auto_schema, direction):
        generated = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return refine(generated, direction)

    # Defining the subclass registers it with drf-spectacular.
    type(
        f"{serializer_class.__name__}SchemaRefinement",
        (OpenApiSerializerExtension,),
        {"target_class": serializer_class, "map_serializer": map_serializer},
    )
