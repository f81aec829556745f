"""Projects own actions and images: who owns what a caller creates, and what a caller may reach.

A caller is in one project: its Keystone token's, or, for this service's own API users, the one
`manage.py create_api_user --project` put it in. Callers the policy gives `all_projects` (admins)
reach every project's objects by id, and list them with `?all_projects=true`.
"""

from rest_framework.exceptions import PermissionDenied

from .keystone import KeystoneUser
from .policy import allowed, needed_roles
from .validators import query_flag


def project_of(user) -> str | None:
    if isinstance(user, KeystoneUser):
        return user.project_id
    member = getattr(user, "project_member", None)
    return member.project if member is not None else None


def owner_of(user) -> str:
    """The project that will own what this user creates."""
    project = project_of(user)
    if project is None:
        raise PermissionDenied(
            f"The user {user.get_username()!r} is not in a project; an operator can add it with "
            "`manage.py create_api_user --project NAME`."
        )
    return project


def _own(queryset, user):
    project = project_of(user)
    return queryset.none() if project is None else queryset.filter(owner=project)


def visible_to(queryset, user):
    """Restrict a queryset of owned objects to what `user` may reach (missing and foreign look alike)."""
    return queryset if allowed(user, "all_projects") else _own(queryset, user)


def listed_for(queryset, request):
    """What a list shows: the caller's project, or every project with `?all_projects=true`."""
    if query_flag(request, "all_projects"):
        if not allowed(request.user, "all_projects"):
            raise PermissionDenied(f"all_projects needs one of the roles: {needed_roles('all_projects')}.")
        return queryset
    return _own(queryset, request.user)
