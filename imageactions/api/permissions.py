"""The one permission check of the API: the policy rule a request needs (imageactions.policy)."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from ..policy import allowed, needed_roles

WRITE_RULES = {"POST": "create", "PUT": "change", "PATCH": "change", "DELETE": "delete"}


def rule_for(request, view) -> str:
    """A view names the rule of its special routes in `policy_rules` ("route" or "route:METHOD");
    otherwise reads are `list`/`read` and writes follow the method."""
    route = getattr(view, "action", None)
    rules = getattr(view, "policy_rules", {})
    rule = rules.get(f"{route}:{request.method}") or rules.get(route)
    if rule:
        return rule
    if request.method in SAFE_METHODS:
        return "list" if route == "list" else "read"
    return WRITE_RULES.get(request.method, "change")


class RolePolicy(BasePermission):
    """An authenticated caller whose roles grant the request's rule."""

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        rule = rule_for(request, view)
        if allowed(user, rule):
            return True
        self.message = f"Your roles do not allow this ({rule!r} needs one of: {needed_roles(rule)})."
        return False
