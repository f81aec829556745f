"""Hooks that shape the OpenAPI document drf-spectacular generates."""


def document_paths_without_trailing_slash(endpoints):
    """The router answers with and without a trailing slash; the design's paths have none."""
    return [
        (path.rstrip("/") if len(path) > 1 else path, path_regex, method, callback)
        for path, path_regex, method, callback in endpoints
    ]
