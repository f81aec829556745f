"""Projects own actions and images: who owns what a user creates, and what a user may see (staff: all)."""

from rest_framework.exceptions import PermissionDenied


def owner_of(user) -> str:
    """The project that will own what this user creates."""
    member = getattr(user, "project_member", None)
    if member is None:
        raise PermissionDenied(
            f"The user {user.get_username()!r} is not in a project; an operator can add it with "
            "`manage.py create_api_user --project NAME`."
        )
    return member.project


def visible_to(queryset, user):
    """Restrict a queryset of owned objects to what `user` may see (missing and foreign look alike)."""
    if user.is_staff:
        return queryset
    member = getattr(user, "project_member", None)
    if member is None:
        return queryset.none()
    return queryset.filter(owner=member.project)
